"""Numerics verdicts: is the device's result right, measured against a float64 CPU reference?

A device in bfloat16 is not wrong for differing from CPU in bfloat16: both differ from the exact answer.
So every floating output is compared three ways, against the reference computed in float64 from the
same input values:

- close: every element within the dtype's tolerance (`TOLERANCES`, torch.testing's defaults);
- as_accurate_as_cpu: R = ||device - ref|| / ||cpu - ref|| <= `RATIO_OK` (AWS's equivalence measure:
  below 1.2 fine, 1.2 to 3 suspicious, above 10 wrong), i.e. no less accurate than CPU in that dtype;
- accumulation_order: a bfloat16 or float16 result whose error, both normwise and at its worst element
  (relative to the largest reference magnitude), is within `accumulation_units(n)` units of roundoff of
  the dtype, n being how many values may be accumulated into one of its elements (the largest tensor
  the CPU's computation touches, over the result's size): `ACCUMULATION_ULPS` * sqrt(n), at most
  `ACCUMULATION_MAX_ULPS`. That is what a reduction accumulated in the low dtype in another order gives
  (XLA:CPU does this; R can then exceed 10), and far from a wrong result, which is off by a large
  fraction somewhere;
- indices of a selection op (sort, topk, max with dim...): right when they select the same values as
  CPU's, so that tied values may come in any order (a stable sort's are compared exactly); its input's
  gradient is compared up to the same choice (the gradients at tied input values in any order);
- rounding_noise: an output whose exact value is zero (up to rounding) next to the other outputs of the
  case, e.g. the gradient of a bias that a softmax cancels: its error is judged against the largest
  reference magnitude in the case: within one unit of roundoff of the dtype at that magnitude;
- anything else is wrong. Integer and bool outputs must be equal; random or undefined outputs (OpInfo's
  own marks) are compared by shape and dtype only, unless the sample defines them (see
  `Sample.values_defined`: no dropout, a conversion in range, a sorted unique).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils import _pytree as pytree

from opsuite.catalog import dtype_name
from opsuite.record import Numerics, Verdict

# (rtol, atol) per dtype: torch.testing.assert_close's defaults.
TOLERANCES: dict[torch.dtype, tuple[float, float]] = {
    torch.float64: (1e-7, 1e-7),
    torch.float32: (1.3e-6, 1e-5),
    torch.bfloat16: (1.6e-2, 1e-5),
    torch.float16: (1e-3, 1e-5),
    torch.complex64: (1.3e-6, 1e-5),
    torch.complex128: (1e-7, 1e-7),
}
RATIO_OK = 3.0
ACCUMULATION_ULPS = 8.0
ACCUMULATION_MAX_ULPS = 64.0
LOW_PRECISION = {torch.bfloat16, torch.float16}

# Worst first: the verdict of several outputs is the worst of theirs.
_ORDER = [Verdict.SHAPE_MISMATCH, Verdict.DTYPE_MISMATCH, Verdict.NONFINITE_MISMATCH, Verdict.WRONG,
          Verdict.ROUNDING_NOISE, Verdict.ACCUMULATION_ORDER, Verdict.AS_ACCURATE_AS_CPU, Verdict.CLOSE,
          Verdict.EXACT, Verdict.SHAPE_ONLY]


@dataclass
class Leaf:
    """One compared value: an output (or gradient) from the device, from CPU, and from the reference."""

    name: str
    device: Any
    cpu: Any
    reference: Any  # float64 (or complex128) result, or the CPU result when no float64 one exists
    reduction_length: int = 1  # how many input elements may be accumulated into one of its elements
    selects: tuple[torch.Tensor, int] | None = None  # (input, dim) that its indices select along
    ties: tuple[torch.Tensor, int] | None = None  # (input, dim) whose tied values may swap its elements


def leaves(name: str, device: Any, cpu: Any, reference: Any, extent: int = 1,
           selects: tuple[torch.Tensor, int] | None = None,
           ties: tuple[torch.Tensor, int] | None = None) -> list[Leaf]:
    """Pair up the flattened outputs of three runs of one call.

    `extent` is the largest tensor (in elements) the CPU's computation touched: a leaf of n elements may
    accumulate up to about extent / n values into each. `selects` is the (input, dim) that the
    call's integer outputs index into, for a selection op whose indices may order ties differently;
    `ties` the same for gradients of a selection op, which tied elements of the input may swap.
    """
    dev_flat, dev_spec = pytree.tree_flatten(pytree.tree_map_only(torch.Tensor, _dense, device))
    cpu_flat, cpu_spec = pytree.tree_flatten(pytree.tree_map_only(torch.Tensor, _dense, cpu))
    ref_flat, _ = pytree.tree_flatten(pytree.tree_map_only(torch.Tensor, _dense, reference))
    if len(dev_flat) != len(cpu_flat):  # container types may differ (a tuple for a torch.Size): only count
        return [Leaf(f"{name} (structure)", str(dev_spec), str(cpu_spec), str(cpu_spec))]
    if len(ref_flat) != len(cpu_flat):
        ref_flat = cpu_flat
    suffix = len(cpu_flat) > 1

    def length(value: Any) -> int:
        return max(1, extent // max(1, value.numel())) if isinstance(value, torch.Tensor) else 1

    return [Leaf(f"{name}[{i}]" if suffix else name, d, c, r, length(c), selects, ties)
            for i, (d, c, r) in enumerate(zip(dev_flat, cpu_flat, ref_flat))]


def _dense(t: torch.Tensor) -> torch.Tensor:
    """Sparse results are compared by value, as dense tensors."""
    return t.to_dense() if t.layout != torch.strided else t


def judge(pairs: list[Leaf], shape_only: str | None = None) -> Numerics:
    """The verdict over every leaf, with the figures of the worst one."""
    scale = max((_magnitude(leaf.reference) for leaf in pairs), default=0.0)
    results = [_judge_leaf(leaf, shape_only, scale) for leaf in pairs]
    if not results:
        return Numerics(verdict=Verdict.EXACT, note="no outputs to compare")
    return min(results, key=severity)


def severity(numerics: Numerics) -> tuple[int, float, float]:
    """Sort key, worst first: the verdict, then the ratio to CPU's error (unbounded when CPU is exact
    and the device is not), then the largest error."""
    ratio = numerics.ratio if numerics.ratio is not None else (math.inf if numerics.max_abs_err else 0.0)
    return _ORDER.index(numerics.verdict), -ratio, -(numerics.max_abs_err or 0.0)


def _magnitude(value: Any) -> float:
    """The largest finite magnitude of a floating tensor (0 for anything else)."""
    if not isinstance(value, torch.Tensor) or not (value.dtype.is_floating_point or value.dtype.is_complex):
        return 0.0
    finite = value.detach()[value.detach().isfinite()]
    return float(finite.abs().max()) if finite.numel() else 0.0


def _judge_leaf(leaf: Leaf, shape_only: str | None, scale: float) -> Numerics:
    dev, cpu, ref = leaf.device, leaf.cpu, leaf.reference
    if not isinstance(cpu, torch.Tensor) or not isinstance(dev, torch.Tensor):
        same = _plain_equal(dev, cpu)
        return Numerics(verdict=Verdict.EXACT if same else Verdict.WRONG, worst_output=leaf.name,
                        note=None if same else f"device gave {dev!r:.80}, CPU gave {cpu!r:.80}")
    if dev.shape != cpu.shape:
        return Numerics(verdict=Verdict.SHAPE_MISMATCH, worst_output=leaf.name,
                        note=f"device shape {list(dev.shape)}, CPU shape {list(cpu.shape)}")
    if dev.dtype != cpu.dtype:
        return Numerics(verdict=Verdict.DTYPE_MISMATCH, worst_output=leaf.name,
                        note=f"device dtype {dtype_name(dev.dtype)}, CPU dtype {dtype_name(cpu.dtype)}")
    if shape_only:
        return Numerics(verdict=Verdict.SHAPE_ONLY, worst_output=leaf.name, note=shape_only)
    if not (cpu.dtype.is_floating_point or cpu.dtype.is_complex):
        if leaf.selects is not None and not cpu.dtype == torch.bool:
            return _judge_selection(leaf.name, dev, cpu, *leaf.selects)
        equal = bool(torch.equal(dev, cpu))
        note = None if equal else f"{int((dev != cpu).sum())} of {cpu.numel()} elements differ"
        return Numerics(verdict=Verdict.EXACT if equal else Verdict.WRONG, worst_output=leaf.name,
                        max_abs_err=0.0 if equal else _max_int_diff(dev, cpu), note=note)
    if leaf.ties is not None and leaf.ties[0].shape == cpu.shape and isinstance(ref, torch.Tensor) \
            and ref.shape == cpu.shape:
        dev, cpu, ref = (_tie_order(t, *leaf.ties) for t in (dev, cpu, ref))
    return _judge_floating(leaf.name, dev, cpu, ref, scale, leaf.reduction_length)


def _tie_order(t: torch.Tensor, source: torch.Tensor, dim: int) -> torch.Tensor:
    """`t` with the elements at tied values of `source` (along `dim`) put in the order of their own values.

    A selection op's gradient reaches the elements it selected; among equal values, which one is
    selected is the implementation's choice, so gradients are compared up to that choice.
    """
    if source.dim() == 0:
        return t
    own = t.detach().argsort(dim=dim, stable=True)
    by_source = source.gather(dim, own).argsort(dim=dim, stable=True)
    return t.gather(dim, own.gather(dim, by_source))


def _judge_selection(name: str, dev: torch.Tensor, cpu: torch.Tensor, source: torch.Tensor, dim: int) -> Numerics:
    """Indices into `source` along `dim` are right when they select the same values as CPU's: equal
    values (ties) may come in any order."""
    if torch.equal(dev, cpu):
        return Numerics(verdict=Verdict.EXACT, worst_output=name, max_abs_err=0.0)

    def selected(indices: torch.Tensor) -> torch.Tensor:
        if source.dim() == 0:
            return source.expand(indices.shape)
        index = indices if indices.dim() == source.dim() else indices.unsqueeze(dim)
        return source.gather(dim, index).reshape(indices.shape)

    try:
        by_dev, by_cpu = selected(dev), selected(cpu)
    except (RuntimeError, IndexError):  # an index out of range selects nothing
        by_dev, by_cpu = None, None
    same = by_dev is not None and bool(((by_dev == by_cpu) | (by_dev.isnan() & by_cpu.isnan())).all())
    differ = int((dev != cpu).sum())
    if same:
        return Numerics(verdict=Verdict.EXACT, worst_output=name, max_abs_err=0.0,
                        note=f"{differ} of {cpu.numel()} indices differ, all between tied values")
    return Numerics(verdict=Verdict.WRONG, worst_output=name, max_abs_err=_max_int_diff(dev, cpu),
                    note=f"{differ} of {cpu.numel()} indices differ, selecting other values than CPU's")


def _judge_floating(name: str, dev: torch.Tensor, cpu: torch.Tensor, ref: torch.Tensor, scale: float,
                    reduction_length: int = 1) -> Numerics:
    rtol, atol = TOLERANCES.get(cpu.dtype, TOLERANCES[torch.float32])
    wide = torch.complex128 if cpu.dtype.is_complex else torch.float64
    d, c = dev.detach().to(wide), cpu.detach().to(wide)
    r = ref.detach().to(wide) if isinstance(ref, torch.Tensor) and ref.shape == cpu.shape else c
    reference_dtype = dtype_name(ref.dtype) if isinstance(ref, torch.Tensor) else dtype_name(cpu.dtype)

    finite_d, finite_c, finite_r = d.isfinite(), c.isfinite(), r.isfinite()
    if not (_same_nonfinite(d, c, finite_d, finite_c) or _same_nonfinite(d, r, finite_d, finite_r)):
        count = int((finite_d != finite_c).sum())
        return Numerics(verdict=Verdict.NONFINITE_MISMATCH, worst_output=name, atol=atol, rtol=rtol,
                        reference_dtype=reference_dtype,
                        note=f"{count} elements non-finite on one side only (NaN/inf pattern differs from CPU)")
    mask = finite_d & finite_c & finite_r
    d, c, r = d[mask], c[mask], r[mask]
    err_d, err_c, mag = (d - r).abs(), (c - r).abs(), r.abs()
    numerics = Numerics(
        verdict=Verdict.CLOSE, worst_output=name, atol=atol, rtol=rtol, reference_dtype=reference_dtype,
        max_abs_err=_max(err_d), max_rel_err=_max_rel(err_d, mag, atol),
        cpu_max_abs_err=_max(err_c), cpu_max_rel_err=_max_rel(err_c, mag, atol),
        ratio=_ratio(err_d, err_c),
    )
    if bool((err_d <= atol + rtol * mag).all()):
        return numerics
    if numerics.ratio is not None and numerics.ratio <= RATIO_OK:
        numerics.verdict = Verdict.AS_ACCURATE_AS_CPU
        return numerics
    if cpu.dtype in LOW_PRECISION:
        unit_roundoff = torch.finfo(cpu.dtype).eps / 2
        units = accumulation_units(reduction_length)
        bound = units * unit_roundoff
        normwise = _norm(err_d) / max(_norm(mag), torch.finfo(torch.float64).tiny)
        if normwise <= bound and numerics.max_abs_err <= bound * _max(mag):
            numerics.verdict = Verdict.ACCUMULATION_ORDER
            numerics.note = (f"normwise error {normwise:.3g} is {normwise / unit_roundoff:.1f} units of "
                             f"{dtype_name(cpu.dtype)} roundoff (bound {units:.3g} for a reduction of up to "
                             f"{reduction_length} elements): a reordered low-precision accumulation")
            return numerics
    bound = torch.finfo(cpu.dtype).eps / 2 * scale  # one unit of roundoff at the case's largest value
    if _max(mag) <= bound and numerics.max_abs_err <= bound:
        numerics.verdict = Verdict.ROUNDING_NOISE
        numerics.note = (f"reference is zero up to rounding (max {_max(mag):.3g}) beside the case's largest "
                         f"value {scale:.3g}; error {numerics.max_abs_err:.3g} is below one unit of "
                         f"{dtype_name(cpu.dtype)} roundoff there")
        return numerics
    numerics.verdict = Verdict.WRONG
    return numerics


def accumulation_units(reduction_length: int) -> float:
    """Units of roundoff a reordered low-precision accumulation of `reduction_length` values may be off.

    Rounding errors of a sum of n terms grow like sqrt(n) units of roundoff (the probabilistic bound of
    Higham and Mary, 2019), relative to the sum of the terms' magnitudes, which cancellation can make
    larger than the result's: `ACCUMULATION_ULPS` * sqrt(n), and never more than
    `ACCUMULATION_MAX_ULPS` (a result a quarter off is wrong whatever its reduction length).
    """
    return min(ACCUMULATION_MAX_ULPS, ACCUMULATION_ULPS * math.sqrt(max(1, reduction_length)))


def _same_nonfinite(a: torch.Tensor, b: torch.Tensor, finite_a: torch.Tensor, finite_b: torch.Tensor) -> bool:
    if not torch.equal(finite_a, finite_b):
        return False
    return torch.equal(a[~finite_a].isnan(), b[~finite_b].isnan()) and \
        torch.equal(a[~finite_a].nan_to_num(0.0), b[~finite_b].nan_to_num(0.0))


def _norm(t: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(t)) if t.numel() else 0.0


def _max(t: torch.Tensor) -> float:
    return float(t.max()) if t.numel() else 0.0


def _max_rel(err: torch.Tensor, mag: torch.Tensor, atol: float) -> float:
    """Largest elementwise relative error over elements whose reference magnitude exceeds atol."""
    keep = mag > atol
    return float((err[keep] / mag[keep]).max()) if bool(keep.any()) else 0.0


def _ratio(err_dev: torch.Tensor, err_cpu: torch.Tensor) -> float | None:
    num, den = _norm(err_dev), _norm(err_cpu)
    if den == 0.0:
        return 0.0 if num == 0.0 else None  # None: CPU is exact, a ratio says nothing
    ratio = num / den
    return ratio if math.isfinite(ratio) else None


def _max_int_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.to(torch.float64) - b.to(torch.float64)).abs().max())


def _plain_equal(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    try:
        return bool(a == b)
    except Exception:  # values that cannot be compared for equality count as different
        return False
