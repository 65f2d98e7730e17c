"""Numerics verdicts: a device as accurate as CPU must pass, a wrong result must not."""

import pytest
import torch

from opsuite import numerics
from opsuite.numerics import Leaf, judge
from opsuite.record import PASSING_VERDICTS, Numerics, Verdict


def _three_ways(fn, x64: torch.Tensor, dtype: torch.dtype):
    """fn on float64 (reference) and on `dtype` (CPU), from the same values."""
    low = x64.to(dtype)
    return fn(low.to(torch.float64)), fn(low)


def test_identical_results_are_close():
    x = torch.randn(100, dtype=torch.float64)
    ref, cpu = _three_ways(torch.sin, x, torch.float32)
    result = judge([Leaf("out", cpu.clone(), cpu, ref)])
    assert result.verdict is Verdict.CLOSE
    assert result.ratio == pytest.approx(1.0)
    assert result.reference_dtype == "float64"


def test_wrong_values_are_wrong():
    x = torch.randn(100, dtype=torch.float64)
    ref, cpu = _three_ways(torch.sin, x, torch.float32)
    device = cpu.clone()
    device[7] += 0.5
    result = judge([Leaf("out", device, cpu, ref)])
    assert result.verdict is Verdict.WRONG
    assert result.max_abs_err == pytest.approx(0.5, rel=1e-3)
    assert result.ratio > 10


def test_bfloat16_as_accurate_as_cpu_passes():
    # A device that rounds differently from CPU but is no less accurate: last-bit differences.
    torch.manual_seed(0)
    x = torch.randn(4096, dtype=torch.float64)
    ref, cpu = _three_ways(lambda t: t * 1.37, x, torch.bfloat16)
    # Round the exact result by truncation toward zero instead of to-nearest: one ulp off at most.
    device = (ref.to(torch.float32).view(torch.int32) & ~0xFFFF).view(torch.float32).to(torch.bfloat16)
    result = judge([Leaf("out", device, cpu, ref)])
    assert result.verdict in PASSING_VERDICTS
    assert result.verdict is not Verdict.WRONG


def _bf16_chunked_sum(x: torch.Tensor) -> torch.Tensor:
    """Row sums accumulated in bfloat16 itself, 64 chunks of 64 (the order XLA:CPU-like devices use)."""
    parts = x.to(torch.bfloat16).view(x.shape[0], 64, 64)
    chunk = torch.zeros(x.shape[0], 64, dtype=torch.bfloat16)
    for j in range(64):
        chunk = chunk + parts[:, :, j]
    total = torch.zeros(x.shape[0], dtype=torch.bfloat16)
    for j in range(64):
        total = total + chunk[:, j]
    return total


@pytest.mark.parametrize("seed", range(4))
def test_bfloat16_accumulation_order_is_told_apart_from_wrong(seed):
    torch.manual_seed(seed)
    x = torch.randn(8, 4096, dtype=torch.float64)
    ref, cpu = x.to(torch.bfloat16).double().sum(-1), x.to(torch.bfloat16).sum(-1)  # CPU accumulates in fp32
    device = _bf16_chunked_sum(x)
    accumulated = judge([Leaf("sum", device, cpu, ref)])
    # Outside bf16's elementwise tolerance and several times CPU's error, yet a right answer.
    assert accumulated.ratio > numerics.RATIO_OK
    assert accumulated.verdict is Verdict.ACCUMULATION_ORDER

    one_element_off = device.clone()
    one_element_off[3] = device[3] * 1.5
    assert judge([Leaf("sum", one_element_off, cpu, ref)]).verdict is Verdict.WRONG
    assert judge([Leaf("sum", cpu * 1.25, cpu, ref)]).verdict is Verdict.WRONG


def test_shape_dtype_and_nonfinite_mismatches():
    a = torch.ones(3)
    assert judge([Leaf("o", torch.ones(4), a, a.double())]).verdict is Verdict.SHAPE_MISMATCH
    assert judge([Leaf("o", torch.ones(3, dtype=torch.float16), a, a.double())]).verdict is Verdict.DTYPE_MISMATCH
    nan = torch.tensor([1.0, float("nan"), 3.0])
    assert judge([Leaf("o", a.clone(), nan, nan.double())]).verdict is Verdict.NONFINITE_MISMATCH
    assert judge([Leaf("o", nan.clone(), nan, nan.double())]).verdict is Verdict.CLOSE


def test_integers_must_be_equal():
    a = torch.arange(10)
    assert judge([Leaf("o", a.clone(), a, a)]).verdict is Verdict.EXACT
    b = a.clone()
    b[3] = 99
    result = judge([Leaf("o", b, a, a)])
    assert result.verdict is Verdict.WRONG
    assert "1 of 10" in result.note


def test_shape_only_ignores_values_but_not_shapes():
    a = torch.rand(5)
    assert judge([Leaf("o", torch.rand(5), a, a.double())], shape_only="random").verdict is Verdict.SHAPE_ONLY
    assert judge([Leaf("o", torch.rand(6), a, a.double())], shape_only="random").verdict is Verdict.SHAPE_MISMATCH


def test_worst_leaf_wins():
    good = torch.ones(3)
    bad = torch.full((3,), 2.0)
    result = judge([Leaf("first", good.clone(), good, good.double()),
                    Leaf("second", bad, good, good.double())])
    assert result.verdict is Verdict.WRONG
    assert result.worst_output == "second"


def test_plain_values_compared_by_equality():
    assert judge([Leaf("o", 3, 3, 3)]).verdict is Verdict.EXACT
    assert judge([Leaf("o", 3, 4, 4)]).verdict is Verdict.WRONG


def test_leaves_pairs_outputs_and_tolerates_container_types():
    pairs = numerics.leaves("out", (torch.ones(1), torch.zeros(1)), torch.return_types.max((torch.ones(1), torch.zeros(1))),
                            None)
    assert [p.name for p in pairs] == ["out[0]", "out[1]"]
    assert judge(pairs).verdict is Verdict.CLOSE


def test_sparse_results_are_compared_as_dense():
    dense = torch.tensor([[0.0, 1.5], [2.0, 0.0]])
    pairs = numerics.leaves("out", dense.to_sparse(), dense.to_sparse(), dense.double().to_sparse())
    assert judge(pairs).verdict is Verdict.CLOSE
    wrong = numerics.leaves("out", (dense * 2).to_sparse(), dense.to_sparse(), dense.double().to_sparse())
    assert judge(wrong).verdict is Verdict.WRONG


def test_zero_gradient_with_rounding_noise_is_judged_at_the_case_scale():
    # The gradient of a bias that a softmax cancels is exactly zero; both sides give rounding noise.
    big = torch.randn(64, dtype=torch.float64) * 2
    ref_zero = torch.zeros(16, dtype=torch.float64)
    cpu_zero = torch.full((16,), 4e-6, dtype=torch.bfloat16)
    dev_zero = torch.full((16,), 1e-4, dtype=torch.bfloat16)
    big_leaf = Leaf("weight grad", big.to(torch.bfloat16), big.to(torch.bfloat16), big)
    result = judge([big_leaf, Leaf("bias grad", dev_zero, cpu_zero, ref_zero)])
    assert result.verdict is Verdict.ROUNDING_NOISE
    assert result.worst_output == "bias grad"
    # Alone, with no larger output to measure against, the same noise is not excused.
    assert judge([Leaf("bias grad", dev_zero, cpu_zero, ref_zero)]).verdict is Verdict.WRONG
    # A value far above rounding noise of the case's scale is still wrong.
    assert judge([big_leaf, Leaf("bias grad", torch.full((16,), 0.5, dtype=torch.bfloat16), cpu_zero,
                                 ref_zero)]).verdict is Verdict.WRONG


def test_selection_indices_may_order_ties_differently_but_must_select_the_same_values():
    values = torch.tensor([[3.0, 1.0, 3.0, 2.0], [5.0, 5.0, 4.0, 0.0]], dtype=torch.bfloat16)
    cpu = values.argsort(dim=1, stable=True)
    ties_swapped = cpu.clone()
    ties_swapped[0, 2:] = cpu[0, 2:].flip(0)  # the two 3.0s in the other order
    ties_swapped[1, 2:] = cpu[1, 2:].flip(0)  # the two 5.0s
    result = judge([Leaf("out", ties_swapped, cpu, cpu, selects=(values, 1))])
    assert result.verdict is Verdict.EXACT and "4 of 8 indices differ" in result.note

    wrong = cpu.clone()
    wrong[0, :2] = cpu[0, :2].flip(0)  # 1.0 and 2.0 swapped: other values selected
    assert judge([Leaf("out", wrong, cpu, cpu, selects=(values, 1))]).verdict is Verdict.WRONG
    # Without the op's knowledge, any difference is wrong (a stable sort's indices are exact).
    assert judge([Leaf("out", ties_swapped, cpu, cpu)]).verdict is Verdict.WRONG


def test_selection_indices_of_a_reduced_dim_and_out_of_range():
    values = torch.tensor([[1.0, 7.0, 7.0], [2.0, 2.0, 0.0]])
    cpu = torch.tensor([1, 0])  # max over dim 1 without keepdim: one index per row
    assert judge([Leaf("i", torch.tensor([2, 1]), cpu, cpu, selects=(values, 1))]).verdict is Verdict.EXACT
    assert judge([Leaf("i", torch.tensor([0, 1]), cpu, cpu, selects=(values, 1))]).verdict is Verdict.WRONG
    assert judge([Leaf("i", torch.tensor([9, 1]), cpu, cpu, selects=(values, 1))]).verdict is Verdict.WRONG


def test_accumulation_bound_grows_with_the_reduction_length_up_to_a_cap():
    # A bfloat16 gradient of a broadcast input: sums of 30 cotangent values, accumulated in bfloat16,
    # ~36 units of roundoff off (XLA's broadcast_tensors backward): too far for a short reduction.
    ref = torch.tensor([0.1097, -2.31, 0.804], dtype=torch.float64)
    cpu = ref.to(torch.bfloat16)
    device = (ref * (1 + 36 * 2.0 ** -8)).to(torch.bfloat16)
    assert numerics.accumulation_units(1) == numerics.ACCUMULATION_ULPS
    assert judge([Leaf("g", device, cpu, ref)]).verdict is Verdict.WRONG
    long = judge([Leaf("g", device, cpu, ref, reduction_length=30)])
    assert long.verdict is Verdict.ACCUMULATION_ORDER and "30 elements" in long.note
    # A quarter off is wrong however long the reduction.
    far = (ref * 1.3).to(torch.bfloat16)
    assert judge([Leaf("g", far, cpu, ref, reduction_length=10 ** 6)]).verdict is Verdict.WRONG
    assert numerics.accumulation_units(10 ** 6) == numerics.ACCUMULATION_MAX_ULPS


def test_reduction_length_is_the_largest_tensor_over_the_leaf_size():
    big, small = torch.zeros(5, 2, 3), torch.zeros(1, 1)
    pairs = numerics.leaves("g", [big, small], [big, small], [big, small], extent=30)
    assert [leaf.reduction_length for leaf in pairs] == [1, 30]


def test_worst_figures_are_the_largest_error_when_cpu_is_exact():
    first = Numerics(verdict=Verdict.WRONG, max_abs_err=0.427, ratio=None)
    worse = Numerics(verdict=Verdict.WRONG, max_abs_err=7.48, ratio=None)
    assert min([first, worse], key=numerics.severity) is worse
    ratio_worse = Numerics(verdict=Verdict.WRONG, max_abs_err=0.1, ratio=50.0)
    assert min([ratio_worse, Numerics(verdict=Verdict.WRONG, max_abs_err=1.0, ratio=2.0)],
               key=numerics.severity) is ratio_worse


def test_a_selection_ops_gradient_may_go_to_either_of_tied_values():
    source = torch.tensor([[3.0, 3.0, 1.0], [2.0, 5.0, 2.0]], dtype=torch.bfloat16)
    cpu = torch.tensor([[0.5, -1.0, 2.0], [0.25, 1.0, 0.0]], dtype=torch.bfloat16)  # sort's cotangents
    swapped = cpu[:, [1, 0, 2]].clone()
    swapped[1] = cpu[1, [2, 1, 0]]  # in each row, the gradients of the tied inputs swapped
    ref = cpu.double()
    assert judge([Leaf("g", swapped, cpu, ref, ties=(source, 1))]).verdict is Verdict.CLOSE
    assert judge([Leaf("g", swapped, cpu, ref)]).verdict is Verdict.WRONG  # without the op's knowledge
    untied = cpu[:, [2, 1, 0]].clone()  # row 0: the 1.0's gradient moved to a 3.0
    assert judge([Leaf("g", untied, cpu, ref, ties=(source, 1))]).verdict is Verdict.WRONG
