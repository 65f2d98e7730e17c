"""TorchNeuron, torch-neuronx's native backend: the PyTorch device `neuron` (torch >= 2.13, Trn2 and Trn3).

Two backends, two matrix columns: `neuron` runs every op eagerly on the device (each op compiled on its
own; ops without a Neuron kernel fall back to the CPU), `neuron-compile` runs the case through
`torch.compile(backend="neuron", fullgraph=True)` (Dynamo, AOTAutograd, neuronx-cc; no graph breaks).
A compile failure of the forward graph is staged as such; a backward graph compiles on first use, inside
autograd, where only its message (a compiler error code or crash) tells that it did not compile.

Fallbacks are read from torch-neuronx's own op tracking where the installed release has it. Otherwise,
in eager mode, a dispatch mode watches every aten op dispatched on the device and names those that have
no kernel registered for the device's dispatch key: those ran through the CPU fallback.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Iterable

import torch
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

from opsuite.backends import neuron_tools
from opsuite.backends.base import Backend, Counters, package_version
from opsuite.backends.xla import HOST_SYNC_OPS

DEVICE_TYPE = "neuron"
DISPATCH_KEY = "PrivateUse1"  # the out-of-tree device key torch-neuronx registers its kernels for
MIN_TORCH = "2.13"
# An op with a kernel for one of these runs on the device by way of other ops (which are watched in turn).
COMPOSITE_KEYS = ("CompositeExplicitAutograd", "CompositeExplicitAutogradNonFunctional", "CompositeImplicitAutograd")
# torch-neuronx's op tracking (seen in a pre-release copy of its source; probed, never assumed).
TRACKING_API = ("get_fallback_ops", "clear_op_tracking")


class KernelCoverage(TorchDispatchMode):
    """Watches the aten ops dispatched on a device and names those without a kernel for its dispatch key.

    An op with its own kernel ran on the device, and so did a view. A composite op (one with a
    CompositeExplicitAutograd kernel, such as `aten::cos`, built on `aten::cos.out`) is sent on to that
    kernel with the mode still watching, so that the ops it is built of are judged in turn. Any other op
    ran through the device's fallback: on the CPU.
    """

    def __init__(self, device_type: str, dispatch_key: str = DISPATCH_KEY):
        super().__init__()
        self.device_type, self.dispatch_key = device_type, dispatch_key
        self._below_python = torch._C.DispatchKeySet(getattr(torch._C.DispatchKey, dispatch_key))
        self.fallbacks: set[str] = set()

    def clear(self) -> None:
        """Forget the ops seen so far."""
        self.fallbacks.clear()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not self._on_device(args, kwargs):
            return func(*args, **kwargs)
        name = func.name()
        if torch._C._dispatch_has_kernel_for_dispatch_key(name, self.dispatch_key) or func.is_view:
            # A view computes nothing (and `detach` would come back here while the mode watches).
            return func(*args, **kwargs)
        if any(torch._C._dispatch_has_kernel_for_dispatch_key(name, key) for key in COMPOSITE_KEYS):
            with self:  # watch the ops the composite kernel calls
                return func.redispatch(self._below_python, *args, **kwargs)
        out = func(*args, **kwargs)
        self.fallbacks.add(name)  # once it ran: an op that may not fall back raises instead
        return out

    def _on_device(self, args: tuple, kwargs: dict) -> bool:
        """Whether the op dispatches to the device: a device tensor among its inputs, or a factory's device."""
        tensors = [t for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        if tensors:
            return any(t.device.type == self.device_type for t in tensors)
        device = kwargs.get("device")
        return device is not None and torch.device(device).type == self.device_type


class NeuronBackend(Backend):
    """TorchNeuron in eager mode."""

    name = "neuron"
    numerics_env = (
        "NEURON_CC_FLAGS", "NEURON_RT_STOCHASTIC_ROUNDING_EN", "NEURON_LOGICAL_NC_CONFIG",
        "NEURON_RT_VISIBLE_CORES", "NEURON_RT_NUM_CORES", "NEURON_COMPILE_CACHE_URL",
        # Fallback policy and decompositions: which ops run on the device, and how.
        "TORCH_NEURONX_DISABLE_FALLBACK_EXECUTION", "TORCH_NEURONX_FALLBACK_ONLY_FOR_UNIMPLEMENTED_OPS",
        "TORCH_NEURONX_COMPLEX_DECOMPOSE",
    )
    watches_dispatch = True  # eager only: a dispatch mode would stand in Dynamo's way

    def prepare(self) -> None:
        import torch_neuronx  # torch autoloads it already; the import names the package that is missing

        self._neuronx = torch_neuronx
        self._device = torch.device(DEVICE_TYPE)
        self._coverage: KernelCoverage | None = None
        if not all(hasattr(torch_neuronx, name) for name in TRACKING_API) and self.watches_dispatch:
            self._coverage = KernelCoverage(DEVICE_TYPE)
            # On for the worker's whole life: it only records ops that dispatch on the device.
            self._coverage.__enter__()
        if not self.recover():
            raise RuntimeError(f"a trivial computation on the {DEVICE_TYPE!r} device failed")

    def device(self) -> torch.device:
        return self._device

    def stack(self) -> dict[str, Any]:
        compiler = neuron_tools.compiler_version()
        return {
            "torch": torch.__version__,
            "neuron_sdk": neuron_tools.sdk_release(os.environ),
            "torch_neuronx": package_version("torch-neuronx") or getattr(self._neuronx, "__version__", None),
            "neuronx_cc": compiler,
            "neuron_runtime": neuron_tools.runtime_version(),
            "instance_type": neuron_tools.instance_type(),
            "neuron_cores": neuron_tools.core_count(),
            "fallback_tracking": self._tracking_method(),
            "autocast_enabled": torch.is_autocast_enabled(DEVICE_TYPE),
            "autocast_dtype": str(torch.get_autocast_dtype(DEVICE_TYPE)).removeprefix("torch."),
            **neuron_tools.numerics_flags(os.environ, compiler),
        }

    def begin_case(self) -> None:
        if self._coverage is not None:
            self._coverage.clear()
        elif hasattr(self._neuronx, "clear_op_tracking"):
            self._neuronx.clear_op_tracking()

    def sync(self) -> None:
        module = getattr(torch, DEVICE_TYPE, None)  # the device module torch-neuronx registers
        (getattr(module, "synchronize", None) or torch.accelerator.synchronize)()

    def counters(self) -> Counters:
        if self._coverage is not None:
            fallbacks = self._coverage.fallbacks
        elif hasattr(self._neuronx, "get_fallback_ops"):
            fallbacks = _op_names(self._neuronx.get_fallback_ops())
        else:
            fallbacks = set()
        return Counters(fallback_ops=sorted(op for op in fallbacks if op not in HOST_SYNC_OPS),
                        host_syncs=sorted(op for op in fallbacks if op in HOST_SYNC_OPS))

    def _tracking_method(self) -> str:
        if self._coverage is not None:
            return "dispatch_key"
        return "torch_neuronx" if hasattr(self._neuronx, "get_fallback_ops") else "none"


class NeuronCompileBackend(NeuronBackend):
    """TorchNeuron through `torch.compile(backend="neuron", fullgraph=True)`: one graph per case."""

    name = "neuron-compile"
    watches_dispatch = False

    def prepare(self) -> None:
        super().prepare()
        from opsuite.backends import dynamo

        self._dynamo = dynamo
        self._compiler = torch._dynamo.lookup_backend("neuron")
        self._compile_s = 0.0

    def begin_case(self) -> None:
        super().begin_case()
        self._dynamo.reset()
        self._compile_s = 0.0

    def wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        return self._dynamo.staged(torch.compile(fn, backend=self._timed_compile, fullgraph=True))

    def counters(self) -> Counters:
        counters = super().counters()
        counters.compiles = self._dynamo.captured_graphs()
        counters.compile_s = round(self._compile_s, 6)
        counters.extra.update(self._dynamo.graph_facts())
        return counters

    def _timed_compile(self, gm: torch.fx.GraphModule, example_inputs: list[Any]) -> Callable[..., Any]:
        """torch-neuronx's Dynamo backend, timed (the forward graph; a backward one compiles on first use)."""
        started = time.perf_counter()
        try:
            return self._compiler(gm, example_inputs)
        finally:
            self._compile_s += time.perf_counter() - started


def _op_names(ops: Iterable[Any] | dict[Any, Any]) -> set[str]:
    """Op names from torch-neuronx's tracking, whatever the container (a list, a set, a dict of counts)."""
    return {str(op) for op in ops}


def native_available() -> str | None:
    """Why TorchNeuron cannot run in this environment (its torch is older than 2.13), or None."""
    if torch.torch_version.TorchVersion(torch.__version__) < MIN_TORCH:
        return (f"TorchNeuron needs torch >= {MIN_TORCH}; this environment has torch {torch.__version__} "
                f"(its torch-neuronx, if any, is the XLA stack: use the neuron-xla backend)")
    return None

