"""opsuite's test double of TorchNeuron (torch-neuronx's native backend). For tests only.

A real out-of-tree PyTorch device named `neuron`: PyTorch's PrivateUse1 dispatch key, renamed, with
kernels registered through `torch.library` and a boxed CPU fallback, as torch-neuronx does. A `neuron`
tensor is an empty PrivateUse1 tensor whose storage holds a CPU tensor (so that PyTorch's own aliases,
`detach` and `alias`, share it); every kernel computes on the CPU. Its tensors always report contiguous
strides: enough for the cases the tests run, not a general device.

It is installed like the real package: a directory on `sys.path` holding this package and its
dist-info, whose `torch.backends` entry point lets `import torch` autoload it (and register the device)
and whose version the adapter reads; the directory's `bin/` has `neuron-ls` and `neuronx-cc`.

What it is built to exercise:
- ops with a device kernel (`DEVICE_OPS`) run "on the device"; every other op falls back to the CPU
  through the boxed fallback and is named by `get_fallback_ops()`;
- `aten::tan` has no kernel and may not fall back: TorchNeuron's "not implemented" error;
- `aten::atan` has a kernel that fails as the runtime does when device memory runs out;
- `torch.compile(backend="neuron")` (AOTAutograd, then the graph runs on this device) refuses a graph
  holding `aten.atan2` with a compiler error code;
- torch-neuronx's op tracking (`get_fallback_ops`, `clear_op_tracking`), absent when
  OPSUITE_DOUBLE_NO_OP_TRACKING=1, as in a release without it;
- a release that lost kernels: OPSUITE_DOUBLE_NO_KERNEL=sin,neg leaves those ops to the CPU fallback;
- a runtime that kills its process: OPSUITE_DOUBLE_CRASH=aten::cos.out dies of SIGSEGV in that fallback;
- a compiler that takes its time, as neuronx-cc does: OPSUITE_DOUBLE_COMPILE_S=2 per graph.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import torch
from torch.utils import _pytree as pytree
from torch.utils.backend_registration import _setup_privateuseone_for_python_backend

__version__ = "2.13.3.0"
DEVICE = "neuron"
DEVICE_OPS = ("empty.memory_format", "empty_strided", "view", "as_strided", "_reshape_alias", "fill_.Scalar",
              "zero_", "add.Tensor", "mul.Tensor", "sin", "neg")
NOT_IMPLEMENTED = ("aten::tan.out",)
OUT_OF_MEMORY = 'nrt_tensor_allocate status=4 message="Allocation Failure"'
REFUSED_BY_COMPILER = "atan2"

_META = torch._C.DispatchKeySet(torch._C.DispatchKey.Meta)
_fallbacks: list[str] = []
_libraries: list[torch.library.Library] = []  # kept alive: a Library unregisters when collected


class _Module:
    """`torch.neuron`: what PyTorch asks of a device module."""

    def is_available(self) -> bool:
        return True

    def is_initialized(self) -> bool:
        return True

    def device_count(self) -> int:
        return 1

    def current_device(self) -> int:
        return 0

    def synchronize(self, device: Any = None) -> None:
        """Every kernel ran synchronously on the CPU."""

    def get_amp_supported_dtype(self) -> list[torch.dtype]:
        return [torch.bfloat16, torch.float16]

    def _is_in_bad_fork(self) -> bool:
        return False

    def manual_seed_all(self, seed: int) -> None:
        """The device draws no random numbers of its own: `torch.manual_seed` seeds the CPU's."""


def _wrap(raw: torch.Tensor) -> torch.Tensor:
    tensor = torch._C._acc.create_empty_tensor(list(raw.shape), raw.dtype)
    tensor.untyped_storage().raw = raw
    return tensor


def _raw(tensor: torch.Tensor) -> torch.Tensor:
    raw = tensor.untyped_storage().raw
    if raw.shape != tensor.shape:
        raise NotImplementedError(f"neuron test double: a view it cannot follow ({list(tensor.shape)} of "
                                  f"{list(raw.shape)})")
    return raw


def _unwrap(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.device.type == DEVICE:
        return _raw(value)
    if isinstance(value, torch.device) and value.type == DEVICE:
        return torch.device("cpu")
    return value


def _on_cpu(op: Any, args: tuple, kwargs: dict) -> Any:
    """Run `op` on the CPU tensors inside the device tensors; outputs that are inputs stay those inputs."""
    tensors = [t for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
    if any(t.is_meta for t in tensors):
        # The meta tensor inside a FakeTensor of this device (torch.compile's tracing): shapes only.
        return op.redispatch(_META, *args, **kwargs)
    inputs = {id(_raw(t)): t for t in tensors if t.device.type == DEVICE}
    cpu_args, cpu_kwargs = pytree.tree_map(_unwrap, (args, kwargs))
    out = op(*cpu_args, **cpu_kwargs)
    return pytree.tree_map_only(torch.Tensor, lambda t: inputs[id(t)] if id(t) in inputs else _wrap(t), out)


def _kernel(op: Any):
    def kernel(*args: Any, **kwargs: Any) -> Any:
        return _on_cpu(op, args, kwargs)

    return kernel


def _copy_from(src: torch.Tensor, dst: torch.Tensor, non_blocking: bool = False) -> torch.Tensor:
    target = _raw(dst) if dst.device.type == DEVICE else dst
    target.copy_(_unwrap(src))
    return dst


def _refuse_atan(x: torch.Tensor) -> torch.Tensor:
    raise RuntimeError(OUT_OF_MEMORY)


def _cpu_fallback(op: Any, *args: Any, **kwargs: Any) -> Any:
    """The boxed fallback: ops without a device kernel run on the CPU, and are named."""
    name = op.name()
    if name in NOT_IMPLEMENTED:
        raise NotImplementedError(f"Operation {name} is not implemented for Neuron")
    if name in os.environ.get("OPSUITE_DOUBLE_CRASH", "").split(","):
        os.kill(os.getpid(), signal.SIGSEGV)
    _fallbacks.append(name)
    return _on_cpu(op, args, kwargs)


if os.environ.get("OPSUITE_DOUBLE_NO_OP_TRACKING") != "1":
    def get_fallback_ops() -> list[str]:
        """The ops that fell back to the CPU since `clear_op_tracking`."""
        return list(dict.fromkeys(_fallbacks))

    def clear_op_tracking() -> None:
        """Forget the ops seen so far."""
        _fallbacks.clear()


def compile_backend(gm: torch.fx.GraphModule, example_inputs: list[Any]) -> Any:
    """`torch.compile(backend="neuron")`: AOTAutograd, then each aten graph is "compiled" (checked) and
    run on this device."""
    from torch._dynamo.backends.common import aot_autograd

    return aot_autograd(fw_compiler=_compile_aten_graph, bw_compiler=_compile_aten_graph)(gm, example_inputs)


def _compile_aten_graph(gm: torch.fx.GraphModule, example_inputs: list[Any]) -> Any:
    time.sleep(float(os.environ.get("OPSUITE_DOUBLE_COMPILE_S", 0)))
    for node in gm.graph.nodes:
        if isinstance(node.target, torch._ops.OpOverload) and node.target.name() == f"aten::{REFUSED_BY_COMPILER}":
            raise RuntimeError(f"[NCC_EVRF001] Operator {REFUSED_BY_COMPILER} is not supported "
                               "(neuronx-cc test double)")
    from torch._functorch.aot_autograd import make_boxed_func

    return make_boxed_func(gm.forward)


def _register() -> None:
    """Make `neuron` a PyTorch device: rename PrivateUse1, then register its kernels and fallback."""
    _setup_privateuseone_for_python_backend(DEVICE, backend_module=_Module())
    aten = torch.library.Library("aten", "IMPL")
    lost = set(os.environ.get("OPSUITE_DOUBLE_NO_KERNEL", "").split(","))
    for name in (op for op in DEVICE_OPS if op not in lost):
        base, _, overload = name.partition(".")
        aten.impl(name, _kernel(getattr(getattr(torch.ops.aten, base), overload or "default")), "PrivateUse1")
    aten.impl("_copy_from", _copy_from, "PrivateUse1")
    aten.impl("atan", _refuse_atan, "PrivateUse1")
    fallback = torch.library.Library("_", "IMPL")
    fallback.fallback(_cpu_fallback, "PrivateUse1")
    _libraries.extend([aten, fallback])


def _autoload() -> None:
    """The `torch.backends` entry point: torch calls it while it is imported."""


# Registering happens on import, as for the real package: through the autoload entry point
# (torch imports this module to find `_autoload`), or by an explicit `import torch_neuronx`.
_register()
