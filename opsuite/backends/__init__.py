"""Backends by name, imported only when asked for, and the default choice for this machine."""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the registry imports no torch: the pytest process and the CLI only name backends
    from opsuite.backends.base import Backend

# name -> ("module:Class", the import that must succeed, the environment that has it)
REGISTRY: dict[str, tuple[str, str | None, str]] = {
    "cpu": ("opsuite.backends.cpu:CpuBackend", None, "main or xla"),
    "xla": ("opsuite.backends.xla:XlaBackend", "torch_xla", "xla"),
    "neuron-xla": ("opsuite.backends.neuron_xla:NeuronXlaBackend", "torch_neuronx", "a Neuron DLAMI's XLA venv"),
    "neuron": ("opsuite.backends.neuron:NeuronBackend", "torch_neuronx", "a Trn2/Trn3 TorchNeuron venv"),
    "neuron-compile": ("opsuite.backends.neuron:NeuronCompileBackend", "torch_neuronx",
                       "a Trn2/Trn3 TorchNeuron venv"),
    "inductor": ("opsuite.backends.inductor:InductorBackend", None, "main"),
    "cuda": ("opsuite.backends.cuda:CudaBackend", None, "a GPU machine's"),
}

# The backends that run on NeuronCores: one core per parallel worker.
NEURON_BACKENDS = frozenset({"neuron", "neuron-compile", "neuron-xla"})

# name -> "module:function" returning why the backend cannot run here (None when it can): for what an
# import alone cannot tell, such as a GPU or the torch version. Checked after the import.
CHECKS: dict[str, str] = {
    "neuron": "opsuite.backends.neuron:native_available",
    "neuron-compile": "opsuite.backends.neuron:native_available",
    "cuda": "opsuite.backends.cuda:unavailable",
}


class BackendError(Exception):
    """An unknown backend, or one whose packages are not installed here."""


def known() -> list[str]:
    """Every backend name, in registry order."""
    return list(REGISTRY)


def check_available(name: str) -> None:
    """Raise BackendError unless `name` is known and its stack can be imported in this environment."""
    if name not in REGISTRY:
        raise BackendError(f"unknown backend {name!r}; known backends: {', '.join(REGISTRY)}")
    _, needs, where = REGISTRY[name]
    if needs and importlib.util.find_spec(needs) is None:
        raise BackendError(f"backend {name!r} needs the Python package {needs!r}, which is not installed "
                           f"in this environment; use the {where} environment (see README.md)")
    if name in CHECKS:
        reason = _load(CHECKS[name])()
        if reason:
            raise BackendError(f"backend {name!r} cannot run here: {reason}")


def open_backend(name: str) -> Backend:
    """The backend `name`, ready for cases: its environment set first, then its stack imported and the
    device opened (raises if there is none)."""
    check_available(name)
    backend = _load(REGISTRY[name][0])()
    backend.configure_env()
    backend.prepare()
    return backend


def default() -> str:
    """On a Neuron machine TorchNeuron (`neuron`) where it can run, else torch-neuronx's XLA stack;
    elsewhere XLA (XLA:CPU)."""
    from opsuite.backends.neuron_tools import has_neuron_device

    if not has_neuron_device():
        return "xla"
    try:
        check_available("neuron")
    except BackendError:
        return "neuron-xla"
    return "neuron"


def _load(target: str):
    module_name, attribute = target.split(":")
    return getattr(importlib.import_module(module_name), attribute)
