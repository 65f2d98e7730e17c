"""The one adapter over PyTorch's OpInfo database (`torch.testing._internal`, an internal API).

Everything opsuite needs from OpInfo goes through this module, so a change in PyTorch's internals is
mended here alone: the list of entries, the dtypes each supports on CPU, its samples, and its own
marks for ops whose output cannot be compared value by value (random, uninitialised memory).
"""

from __future__ import annotations

import functools
import itertools
import logging
import sys
import unittest
from typing import Any, Iterable

import torch
from torch.utils import _pytree as pytree

from opsuite import names
from opsuite.catalog import DTYPES, Case, Sample, dtype_name

# Sample generation draws from torch's global generator: a fixed seed makes the samples of a case the
# same in every process (the pytest process, the worker process, a repro run).
SAMPLE_SEED = 0
# common_utils.extract_test_fn as PyTorch wrote it (see op_db()); kept so a test can show samples are equal.
ORIGINAL_EXTRACT_TEST_FN = None


@functools.cache
def op_db() -> list[Any]:
    """PyTorch's OpInfo entries, imported once.

    `common_utils` parses `sys.argv` when imported; pytest's or opsuite's arguments must not reach it.
    """
    # common_utils imports torch.utils.cpp_extension, whose probe for CUDA warns on a host with a CUDA
    # toolkit but no GPU; opsuite builds no extension, so that warning is noise on every run.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    saved = sys.argv
    sys.argv = saved[:1]
    try:
        from torch.testing._internal import common_utils
        from torch.testing._internal.common_methods_invocations import op_db as db
    finally:
        sys.argv = saved
    # OpInfo's sample iterators look for the running unittest test function with inspect.stack(), to
    # seed samples by its name and keep the last sample on it for debugging. opsuite runs no unittest,
    # so the search always fails (and the default seed is used), but it costs ~10 ms per case in a
    # spawned worker, whose bottom frame has no source file. Skipping it changes no sample.
    global ORIGINAL_EXTRACT_TEST_FN
    if hasattr(common_utils, "extract_test_fn") and ORIGINAL_EXTRACT_TEST_FN is None:
        ORIGINAL_EXTRACT_TEST_FN = common_utils.extract_test_fn
        common_utils.extract_test_fn = lambda: None
    return list(db)


def full_name(op: Any) -> str:
    """`name` or `name.variant` as PyTorch's own test ids spell it."""
    return f"{op.name}.{op.variant_test_name}" if op.variant_test_name else op.name


@functools.cache
def by_name() -> dict[str, Any]:
    """OpInfo entries by full name."""
    return {full_name(op): op for op in op_db()}


def _skip_reason(decorator: Any) -> str | None:
    """The reason of a `unittest.skip(reason)` decorator, or None if it is some other decorator."""
    if getattr(decorator, "__qualname__", "") != unittest.skip(" ").__qualname__:
        return None
    for cell in decorator.__closure__ or ():
        if isinstance(cell.cell_contents, str):
            return cell.cell_contents
    return "skipped"


_UNDEFINED_VALUE_WORDS = ("deterministic", "undefined", "random", "uninitiali")


def _compare_cpu_skip(op: Any, dtype: torch.dtype) -> str | None:
    """The reason PyTorch's own `test_compare_cpu` skips this op and dtype, if it does.

    That test compares a device with CPU value by value; the ops it skips are those whose values are
    random, undefined or order-dependent, so opsuite compares them by shape and dtype only.
    """
    for info in op.decorators or ():
        if getattr(info, "test_name", None) != "test_compare_cpu" or info.device_type not in (None, "cpu"):
            continue
        if info.dtypes is not None and dtype not in info.dtypes:
            continue
        if not info.active_if:
            continue
        for decorator in info.decorators:
            reason = _skip_reason(decorator)
            # Only skips for undefined values; others (a bare "Skipped!") are about flaky devices.
            if reason and any(word in reason.lower() for word in _UNDEFINED_VALUE_WORDS):
                return reason
    return None


def _calls_wrapper_set_seed(op: Any) -> bool:
    """OpInfo wraps random ops in `wrapper_set_seed` so that CPU runs repeat; a device's RNG differs."""
    code = getattr(op.op, "__code__", None)
    return code is not None and "wrapper_set_seed" in code.co_names


class OpInfoSource:
    """Cases from every OpInfo entry: op x dtype (those it supports on CPU) x forward/backward."""

    kind = "ops"

    def cases(self) -> Iterable[Case]:
        for op in op_db():
            forward = op.supported_dtypes("cpu")
            backward = op.supported_backward_dtypes("cpu") if op.supports_autograd else set()
            for name, dtype in DTYPES.items():
                if dtype in forward:
                    yield Case(self.kind, full_name(op), name, "forward")
                if dtype in backward and dtype.is_floating_point:
                    yield Case(self.kind, full_name(op), name, "backward")

    def samples(self, case: Case, limit: int | None) -> list[Sample]:
        op = by_name()[case.name]
        requires_grad = case.direction == "backward"
        torch.manual_seed(SAMPLE_SEED)
        generated = list(itertools.islice(op.sample_inputs("cpu", case.torch_dtype, requires_grad=requires_grad),
                                          limit))
        host = _host_inputs(op, case.torch_dtype, requires_grad, generated)
        undefined = self.shape_only_reason(case)
        return [
            Sample(fn=op, args=(s.input, *s.args), kwargs=dict(s.kwargs), label=_describe(s),
                   output_process=s.output_process_fn_grad,
                   values_defined=bool(undefined) and _values_defined(op, case.torch_dtype, s),
                   index_dim=_index_dim(case.name, s), host_inputs=host[i])
            for i, s in enumerate(generated)
        ]

    def shape_only_reason(self, case: Case) -> str | None:
        op = by_name()[case.name]
        if getattr(op, "has_nondeterministic_output", False):
            return "OpInfo: has_nondeterministic_output"
        if _calls_wrapper_set_seed(op):
            return "OpInfo: random op (wrapped in wrapper_set_seed)"
        reason = _compare_cpu_skip(op, case.torch_dtype)
        return f"OpInfo skips test_compare_cpu: {reason}" if reason else None

    def facts(self) -> dict[str, Any]:
        return {"op_db_size": len(op_db()), "op_names": names.alias_table(op_db())}


# Ops whose integer outputs are indices into their input along a dim: (position of `dim` among the
# call's arguments, the input first; its default, None when the op returns no indices without it).
_SELECTION_DIM: dict[str, tuple[int | None, int | None]] = {
    "sort": (1, -1), "argsort": (1, -1), "msort": (None, 0), "topk": (2, -1), "kthvalue": (2, -1),
    "mode": (1, -1), "max.reduction_with_dim": (1, None), "min.reduction_with_dim": (1, None),
    "median": (1, None), "nanmedian": (1, None), "cummax": (1, None), "cummin": (1, None),
}


def _index_dim(name: str, sample: Any) -> int | None:
    """The dim along which a selection op's index output selects, or None (no indices, or exact ones).

    A stable sort defines the order of tied values, so its indices are compared as they are.
    """
    if name not in _SELECTION_DIM or sample.kwargs.get("stable"):
        return None
    position, default = _SELECTION_DIM[name]
    call = (sample.input, *sample.args)
    if "dim" in sample.kwargs:
        dim = sample.kwargs["dim"]
    elif position is not None and len(call) > position:
        dim = call[position]
    else:
        dim = default
    return dim if isinstance(dim, int) else None


def _values_defined(op: Any, dtype: torch.dtype, sample: Any) -> bool:
    """Whether this sample's outputs are defined by value although OpInfo calls the op's undefined.

    - a random op called with a dropout probability of 0, or not in training: nothing random is drawn
      into its result (scaled_dot_product_attention without dropout);
    - an integer conversion of values that the integer type holds: the overflow that makes a
      conversion undefined does not happen;
    - `unique` with `sorted=True`: only the order of an unsorted result is undefined.
    """
    kwargs = sample.kwargs
    if _calls_wrapper_set_seed(op) or getattr(op, "has_nondeterministic_output", False):
        return kwargs.get("dropout_p", kwargs.get("p")) == 0 or kwargs.get("training") is False
    reason = (_compare_cpu_skip(op, dtype) or "").lower()
    if "sorted=false" in reason:
        return kwargs.get("sorted", True) is not False
    if "overflow" in reason:
        return _in_range_of_result(op, sample)
    return False


def _in_range_of_result(op: Any, sample: Any) -> bool:
    """Every value of the sample's input fits the integer dtype that the op converts it to."""
    try:
        with torch.no_grad():
            out = op(sample.input.detach(), *sample.args, **sample.kwargs)
    except Exception:  # the CPU rejects the sample: nothing to compare anyway
        return False
    if not isinstance(out, torch.Tensor) or out.dtype.is_floating_point or out.dtype.is_complex:
        return isinstance(out, torch.Tensor)
    values = sample.input.detach().to(torch.float64)
    info = torch.iinfo(out.dtype) if out.dtype != torch.bool else None
    if info is None or not bool(values.isfinite().all()):
        return info is None and bool(values.isfinite().all())
    return bool(((values.trunc() >= info.min) & (values.trunc() <= info.max)).all())


def _host_inputs(op: Any, dtype: torch.dtype, requires_grad: bool, generated: list[Any]) -> list[frozenset[int]]:
    """For each generated sample, the positions of the tensors OpInfo keeps on the CPU.

    OpInfo makes a sample for a device with its tensors on that device, except those the op needs on
    the CPU (tensor_split's indices). Generating the samples for the `meta` device shows which these
    are without computing anything; when that fails (a sample generator that reads values) or gives
    other samples, none.
    """
    def tensors(sample: Any) -> list[Any]:
        return [leaf if isinstance(leaf, torch.Tensor) else None
                for leaf in pytree.tree_leaves(((sample.input, *sample.args), dict(sample.kwargs)))]

    none = [frozenset()] * len(generated)
    try:
        metas = list(itertools.islice(op.sample_inputs("meta", dtype, requires_grad=requires_grad), len(generated)))
    except Exception:  # generators that compute on values cannot run on meta tensors
        return none
    found = []
    for meta, sample in zip(metas, generated):
        on_meta, on_cpu = tensors(meta), tensors(sample)
        if len(on_meta) != len(on_cpu) or any((a is None) != (b is None) for a, b in zip(on_meta, on_cpu)):
            return none
        found.append(frozenset(j for j, t in enumerate(on_meta) if t is not None and t.device.type == "cpu"))
    return found + none[len(found):]


def _describe(sample: Any) -> str:
    """A short, readable description of a sample: shapes and dtypes of tensors, other values as is."""

    def show(value: Any) -> str:
        if isinstance(value, torch.Tensor):
            return f"Tensor{list(value.shape)}:{dtype_name(value.dtype)}"
        if isinstance(value, (list, tuple)):
            inner = ", ".join(show(v) for v in value)
            return f"[{inner}]" if isinstance(value, list) else f"({inner})"
        text = repr(value)
        return text if len(text) <= 60 else text[:57] + "..."

    parts = [show(sample.input), *(show(a) for a in sample.args)]
    parts += [f"{k}={show(v)}" for k, v in sample.kwargs.items()]
    return f"{sample.name + ': ' if sample.name else ''}({', '.join(parts)})"
