"""Trace a model on fake tensors: every operator overload it dispatches, where from, in which dtype.

A `TorchDispatchMode` above `FakeTensorMode` sees each op after autograd and decompositions of
composite ops, the same overloads a case's CPU run records in `aten_ops` (so the two can be joined).
For each (overload, dtype, direction) it keeps the number of calls, the input dtypes, the `nn.Module`
paths it ran in (repeated layers folded: `model.layers.*.mlp`) and the source lines that called it.

Directions are the phases of a step: `forward`; `backward` (ops autograd runs, attributed to the module
and line of the forward op whose gradient they compute, by the autograd node's sequence number); `train`
(the optimizer step). Fake tensors carry no data, so ops whose output shape or value depends on data
(`nonzero`, `.item()`) cannot be computed: they are flagged, and the trace goes on with an assumed
result (the largest shape, a value of 1 or False) so that the rest of the model is still seen.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
from torch._subclasses.fake_tensor import (DataDependentOutputException, DynamicOutputShapeException,
                                           UnsupportedOperatorException)
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

from opsuite.audit import AuditError

# Namespaces whose "ops" are bookkeeping, not kernels (prim::device, profiler ranges).
NOT_KERNELS = frozenset({"prim", "profiler"})
# Namespaces of PyTorch's own kernels; any other namespace is a custom kernel that must be ported.
TORCH_NAMESPACES = frozenset({"aten", "prims", "_c10d_functional", "c10d", "_quantized", "quantized"})
# Ops that copy a value to the host: a graph break or a device-to-host sync on a lazy or compiled backend.
HOST_SYNC_OPS = frozenset({"aten::_local_scalar_dense", "aten::is_nonzero", "aten::equal", "aten::item"})
# Frames in these directories (torch, the standard library, opsuite) are internals, not the line that called the op.
_INTERNAL_DIRS = tuple(os.path.dirname(m.__file__) + os.sep for m in (torch, contextlib, pytree)
                       if getattr(m, "__file__", None)) + (os.path.dirname(os.path.dirname(__file__)) + os.sep,)
_INTERNAL_PARTS = (f"{os.sep}transformers{os.sep}utils{os.sep}", f"{os.sep}transformers{os.sep}modeling_utils.py",
                   f"{os.sep}transformers{os.sep}integrations{os.sep}accelerate.py")
_LAYER_INDEX = re.compile(r"\.\d+(?=\.|$)")


class Untraceable(AuditError):
    """An op that fake tensors cannot run (a custom op with no fake implementation): the trace stops."""


@dataclass
class OpUse:
    """One traced (overload, dtype, direction) and everything seen of it."""

    op: str                 # "aten::addmm", "aten::add.Tensor", "mylib::fused_gelu"
    dtype: str              # the floating dtype of its inputs, else the model's dtype
    direction: str          # forward, backward, train
    calls: int = 0
    input_dtypes: Counter = field(default_factory=Counter)   # "bfloat16,bfloat16,int64" -> calls
    modules: Counter = field(default_factory=Counter)        # folded module path -> calls
    sources: Counter = field(default_factory=Counter)        # "file:line" -> calls
    custom: bool = False          # outside PyTorch's namespaces: a kernel to port
    host_sync: bool = False       # copies a value to the host
    data_dependent: bool = False  # output shape depends on the data; the trace assumed the largest


@dataclass
class Trace:
    """What a model dispatched: the op uses, in order of first call, and facts about the model."""

    uses: list[OpUse]
    model: str                    # e.g. "LlamaForCausalLM (6.74 B parameters)"
    dtype: str
    train: bool
    assumptions: list[str] = field(default_factory=list)  # values the trace had to assume, and where

    @property
    def calls(self) -> int:
        return sum(u.calls for u in self.uses)


def internal(filename: str) -> bool:
    """Whether a source file is library machinery (torch, the standard library, opsuite) or generated code."""
    return filename.startswith(_INTERNAL_DIRS) or filename.startswith("<") or any(p in filename for p in _INTERNAL_PARTS)


def fold(path: str) -> str:
    """`model.layers.3.mlp` -> `model.layers.*.mlp`: repeated layers are one row."""
    return _LAYER_INDEX.sub(".*", path)


def display_path(filename: str) -> str:
    """A source file as a reader finds it: relative to site-packages, or to the working directory."""
    for marker in (f"site-packages{os.sep}", f"dist-packages{os.sep}"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    try:
        relative = os.path.relpath(filename)
    except ValueError:
        return filename
    return filename if relative.startswith("..") else relative


class _Where:
    """Where an op is called from: the innermost module running, and the first frame outside internals."""

    def __init__(self, names: dict[int, str]):
        self.names = names
        self.stack: list[str] = []
        self._internal: dict[Any, bool] = {}
        self.override: tuple[str, str] | None = None  # set while an fx interpreter runs a node

    def module(self) -> str:
        return self.stack[-1] if self.stack else ""

    def source(self) -> str:
        frame = sys._getframe(2)
        while frame is not None:
            code = frame.f_code
            skip = self._internal.get(code)
            if skip is None:
                skip = self._internal[code] = internal(code.co_filename)
            if not skip:
                return f"{display_path(code.co_filename)}:{frame.f_lineno}"
            frame = frame.f_back
        return "?"

    @contextlib.contextmanager
    def hooks(self) -> Iterator[None]:
        """Follow module calls while tracing (global hooks: the user's modules need no change)."""
        from torch.nn.modules import module as nn_module

        def enter(mod, args):
            name = self.names.get(id(mod))
            if name is not None:
                self.stack.append(fold(name))

        def leave(mod, args, out):
            if id(mod) in self.names and self.stack:
                self.stack.pop()

        pre = nn_module.register_module_forward_pre_hook(enter)
        post = nn_module.register_module_forward_hook(leave, always_call=True)
        try:
            yield
        finally:
            pre.remove()
            post.remove()


class Recorder(TorchDispatchMode):
    """Records every op dispatched below autograd, with where it came from (see the module docstring)."""

    def __init__(self, names: dict[int, str], model_dtype: str):
        super().__init__()
        self.where = _Where(names)
        self.model_dtype = model_dtype
        self.direction = "forward"
        self.uses: dict[tuple[str, str, str], OpUse] = {}
        self.assumptions: dict[str, None] = {}  # ordered set: one note per op and line
        # autograd node sequence number -> (module, source) of the forward op that created it
        self._forward_of: dict[int, tuple[str, str]] = {}

    def _place(self) -> tuple[str, str]:
        if self.where.override:
            return self.where.override
        if self.direction == "backward":
            node = torch._C._current_autograd_node()
            if node is not None:
                found = self._forward_of.get(node._sequence_nr())
                if found:
                    return found
            return "(autograd)", "?"
        return self.where.module(), self.where.source()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func.namespace in NOT_KERNELS:
            return func(*args, **kwargs)
        name = func.name()  # aten::add.Tensor, aten::_softmax (the default overload): as records spell it
        module, source = self._place()
        if self.direction == "forward" and torch.is_grad_enabled():
            # The node autograd made for this op (if it needs one) has the newest sequence number.
            self._forward_of.setdefault(torch._C._autograd._get_sequence_nr() - 1, (module, source))
        use = self._use(name, func.namespace, args, kwargs)
        use.calls += 1
        use.modules[module] += 1
        use.sources[source] += 1
        try:
            return func(*args, **kwargs)
        except DynamicOutputShapeException:
            use.data_dependent = True
            return self._assume_shape(func, name, args, kwargs, module, source)
        except DataDependentOutputException:
            use.host_sync = True
            return self._assume_value(func, name, args, module, source)
        except UnsupportedOperatorException as exc:
            raise Untraceable(f"cannot trace {name}: fake tensors have no implementation of it"
                              f"{' (a custom op: give it one with torch.library.register_fake)' if use.custom else ''};"
                              f" called in {module or '(top level)'} at {source}") from exc
        except Exception as exc:  # the op's own checks refuse these inputs (a dtype its kernel lacks)
            from opsuite.execute import first_line

            raise Untraceable(f"cannot trace {name}: {type(exc).__name__}: {first_line(exc)}; called in "
                              f"{module or '(top level)'} at {source}") from exc

    def _use(self, name: str, namespace: str, args: tuple, kwargs: dict) -> OpUse:
        tensors = [t for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        floating = next((t.dtype for t in tensors if t.dtype.is_floating_point), None)
        dtype = str(floating).removeprefix("torch.") if floating else self.model_dtype
        key = (name, dtype, self.direction)
        use = self.uses.get(key)
        if use is None:
            use = self.uses[key] = OpUse(name, dtype, self.direction, custom=namespace not in TORCH_NAMESPACES,
                                         host_sync=name in HOST_SYNC_OPS)
        use.input_dtypes[",".join(str(t.dtype).removeprefix("torch.") for t in tensors)] += 1
        return use

    def _assume_shape(self, func, name: str, args: tuple, kwargs: dict, module: str, source: str) -> Any:
        """The largest output a data-dependent op can have (every element selected, every value unique)."""
        x = args[0]
        if name == "aten::nonzero":
            out = torch.empty((x.numel(), x.dim()), dtype=torch.long, device=x.device)
        elif name == "aten::masked_select":
            size = torch.broadcast_shapes(x.shape, args[1].shape).numel()
            out = torch.empty((size,), dtype=x.dtype, device=x.device)
        elif name in ("aten::_unique2", "aten::unique_consecutive", "aten::unique_dim"):
            flat = torch.empty((x.numel(),), dtype=x.dtype, device=x.device)
            out = (flat, torch.empty(x.shape, dtype=torch.long, device=x.device),
                   torch.empty((x.numel(),), dtype=torch.long, device=x.device))
        else:
            raise Untraceable(f"cannot trace {name}: its output shape depends on the data, and the audit knows "
                              f"no bound for it; called in {module or '(top level)'} at {source}")
        self.assumptions[f"{name} in {module or '(top level)'} at {source}: assumed every element selected"] = None
        return out

    def _assume_value(self, func, name: str, args: tuple, module: str, source: str) -> Any:
        """A host value fake tensors do not have: 1 (1.0) for numbers, False for a truth value."""
        dtype = args[0].dtype if args and isinstance(args[0], torch.Tensor) else None
        value: Any = False if dtype == torch.bool else (1.0 if dtype is not None and dtype.is_floating_point else 1)
        self.assumptions[f"{name} in {module or '(top level)'} at {source}: value unknown on fake tensors, "
                         f"assumed {value!r}"] = None
        return value

    @contextlib.contextmanager
    def phase(self, direction: str) -> Iterator[None]:
        """Record the ops run inside as being of `direction` (forward, backward, train)."""
        before, self.direction = self.direction, direction
        try:
            yield
        finally:
            self.direction = before


@dataclass
class Step:
    """What one traced step runs: the module (its parameters, its module paths) and the forward call."""

    module: torch.nn.Module
    forward: Callable[["_Where"], Any]   # given where ops are, for a runner that knows better (fx nodes)


def trace_step(step: Step, fake_mode: Any, model: str, dtype: str, train: bool) -> Trace:
    """Trace one inference step, or one training step (forward, backward, one AdamW step), on fake tensors."""
    names = {id(m): n for n, m in step.module.named_modules(remove_duplicate=False)}
    recorder = Recorder(names, dtype)
    fake_log = logging.getLogger("torch._subclasses.fake_tensor")
    level = fake_log.level
    fake_log.setLevel(logging.CRITICAL)  # an op that fails is reported in one line, not with torch's traceback
    try:
        with warnings.catch_warnings(), fake_mode, recorder.where.hooks(), recorder:
            # Code that checks alignment reads a data pointer; a fake tensor's is meaningless, and so is the warning.
            warnings.filterwarnings("ignore", message="Accessing the data pointer of FakeTensor")
            _run(step, recorder, train)
    finally:
        fake_log.setLevel(level)
    return Trace(uses=list(recorder.uses.values()), model=model, dtype=dtype, train=train,
                 assumptions=list(recorder.assumptions))


def _run(step: Step, recorder: Recorder, train: bool) -> None:
    """The step itself, each phase under its direction."""
    if not train:
        with torch.no_grad():
            step.forward(recorder.where)
    else:
        params = [p for p in step.module.parameters() if p.requires_grad]
        if not params:
            raise AuditError("--train: the model has no parameter that requires grad")
        with torch.enable_grad():
            out = step.forward(recorder.where)
            loss = _loss(out)
        with recorder.phase("backward"):
            loss.backward()
        with recorder.phase("train"):
            recorder.where.override = ("(optimizer)", "torch.optim.AdamW.step")
            torch.optim.AdamW(params, lr=1e-4).step()


def _loss(out: Any) -> torch.Tensor:
    """The model's own loss when it returns one, else the sum of its first floating output."""
    loss = getattr(out, "loss", None)
    if isinstance(loss, torch.Tensor):
        return loss
    for leaf in pytree.tree_leaves(out if not hasattr(out, "to_tuple") else out.to_tuple()):
        if isinstance(leaf, torch.Tensor) and leaf.is_floating_point() and leaf.requires_grad:
            return leaf.float().sum()
    raise AuditError("--train: the model's output has no floating tensor that requires grad to take a loss of")
