"""Backends by name, imported only when asked for, and the default choice for this machine."""

from __future__ import annotations

import importlib
import importlib.util

from opsuite.backends.base import Backend

# name -> ("module:Class", the import that must succeed, the environment that has it)
REGISTRY: dict[str, tuple[str, str | None, str]] = {
    "cpu": ("opsuite.backends.cpu:CpuBackend", None, "main or xla"),
    "xla": ("opsuite.backends.xla:XlaBackend", "torch_xla", "xla"),
    "neuron-xla": ("opsuite.backends.neuron_xla:NeuronXlaBackend", "torch_neuronx", "a Neuron DLAMI's XLA venv"),
    "inductor": ("opsuite.backends.inductor:InductorBackend", None, "main"),
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


def create(name: str) -> Backend:
    """A new backend object (its stack is not imported until `prepare`)."""
    check_available(name)
    target = REGISTRY[name][0]
    module_name, class_name = target.split(":")
    return getattr(importlib.import_module(module_name), class_name)()


def default() -> str:
    """A Neuron device if there is one, else XLA (XLA:CPU on any other machine)."""
    from opsuite.backends.neuron_tools import has_neuron_device

    if has_neuron_device():
        return "neuron-xla"
    return "xla"
