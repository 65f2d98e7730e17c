"""Classification of a case's outcome, with backends that fail in controlled ways (CPU underneath)."""

import pytest
import torch

from opsuite.backends.base import Counters, StageError
from opsuite.backends.cpu import CpuBackend
from opsuite.catalog import Case, Sample, build_catalog
from opsuite.execute import run_case
from opsuite.record import Stage, Status, Verdict


@pytest.fixture(scope="module")
def catalog():
    return build_catalog(["ops"])


def _run(catalog, case_id, backend, samples=2, **kwargs):
    case = catalog.get(case_id)
    return run_case(case, catalog.source(case), backend, samples, **kwargs)


class FallbackCpu(CpuBackend):
    def counters(self):
        return Counters(compiles=1, fallback_ops=["aten::median"], host_syncs=["aten::_local_scalar_dense"])


class HostSyncOnlyCpu(CpuBackend):
    def counters(self):
        return Counters(host_syncs=["aten::_local_scalar_dense"])


class CompileFailCpu(CpuBackend):
    def sync(self):
        raise StageError(Stage.COMPILE, RuntimeError("ERROR NCC_EVRF001: operator foo is not supported\nmore"))


class ExecuteFailCpu(CpuBackend):
    def sync(self):
        raise RuntimeError("device fault")


class TraceFailCpu(CpuBackend):
    def wrap(self, fn):
        def failing(*args, **kwargs):
            raise NotImplementedError("Operation aten::add.Tensor is not implemented for Neuron")
        return failing


class WrongCpu(CpuBackend):
    def wrap(self, fn):
        return lambda *args, **kwargs: fn(*args, **kwargs) * 1.5


def test_cpu_passes_with_figures(catalog):
    record = _run(catalog, "ops/nn.functional.gelu/bfloat16/backward", CpuBackend())
    assert record.status is Status.PASS and record.stage is Stage.DONE
    assert record.samples_run == 2
    assert record.numerics.verdict is Verdict.CLOSE
    assert record.numerics.ratio == pytest.approx(1.0)
    assert record.numerics.reference_dtype == "float64"
    assert "aten::gelu_backward" in record.aten_ops
    assert record.wall_s > 0 and record.cpu_s > 0


def test_fallback_named_and_host_syncs_apart(catalog):
    record = _run(catalog, "ops/add/float32/forward", FallbackCpu())
    assert record.status is Status.FALLBACK
    assert record.fallback_ops == ["aten::median"]
    assert record.host_syncs == ["aten::_local_scalar_dense"]
    assert _run(catalog, "ops/add/float32/forward", HostSyncOnlyCpu()).status is Status.PASS


def test_compile_error_with_stage_category_and_code(catalog):
    record = _run(catalog, "ops/add/float32/forward", CompileFailCpu())
    assert record.status is Status.COMPILE_ERROR and record.stage is Stage.COMPILE
    assert record.failure.message == "ERROR NCC_EVRF001: operator foo is not supported"
    assert record.failure.code == "NCC_EVRF001"
    assert record.failure.category == "unsupported_operator"
    assert record.failure.sample  # the sample that failed is named


def test_runtime_error_at_execute(catalog):
    record = _run(catalog, "ops/add/float32/forward", ExecuteFailCpu())
    assert record.status is Status.RUNTIME_ERROR and record.stage is Stage.EXECUTE
    assert record.failure.error_type == "RuntimeError"


def test_error_while_dispatching_is_at_trace(catalog):
    record = _run(catalog, "ops/add/float32/forward", TraceFailCpu(), tracebacks=True)
    assert record.stage is Stage.TRACE
    assert record.failure.error_type == "NotImplementedError"
    assert "Traceback" in record.extra["traceback"]


def test_wrong_numbers_are_a_mismatch(catalog):
    record = _run(catalog, "ops/mul/float32/forward", WrongCpu())
    assert record.status is Status.MISMATCH
    assert record.numerics.verdict is Verdict.WRONG
    assert record.numerics.max_abs_err > 0.1


def test_random_ops_compared_by_shape_only(catalog):
    record = _run(catalog, "ops/randn/float32/forward", WrongCpu())
    assert record.status is Status.PASS
    assert record.numerics.verdict is Verdict.SHAPE_ONLY
    assert "random" in record.numerics.note


def test_reference_without_a_kernel_is_skip(catalog):
    record = _run(catalog, "ops/jiterator_unary/float32/forward", CpuBackend())
    assert record.status is Status.SKIP
    assert record.samples_run == 0
    assert record.failure.message  # why the reference rejected it is kept
    assert record.failure.sample


def test_factory_ops_get_the_device_argument(catalog):
    seen = []

    class MetaDevice(CpuBackend):
        """Inputs go to the meta device, so every `device=` the op sees must be meta, not cpu."""

        def device(self):
            return torch.device("meta")

        def wrap(self, fn):
            def watched(*args, **kwargs):
                seen.append(kwargs.get("device"))
                return fn(*args, **kwargs)
            return watched

    _run(catalog, "ops/zeros/float32/forward", MetaDevice())
    assert seen and all(d == torch.device("meta") for d in seen)


def test_in_place_ops_do_not_change_the_reference_inputs(catalog):
    record = _run(catalog, "ops/normal.in_place/float32/forward", CpuBackend())
    assert record.status is Status.PASS


def _append_to_cache(cache, x):
    cache.index_copy_(0, torch.tensor([1, 2]), x)
    return cache * 2


class CopyBackMutationCpu(CpuBackend):
    """Runs the subject functionally and copies the input mutation back afterwards, as compiled graphs do."""

    def wrap(self, fn):
        def functional(cache, x):
            new = cache.index_copy(0, torch.tensor([1, 2]), x)
            cache.copy_(new)
            return new * 2
        return functional


class _CacheSource:
    kind = "ops"

    def samples(self, case, limit):
        cache = torch.linspace(-1, 1, 12).reshape(4, 3)
        x = torch.linspace(2, 3, 6).reshape(2, 3).requires_grad_()
        return [Sample(fn=_append_to_cache, args=(cache, x), label="cache x")]

    def shape_only_reason(self, case):
        return None


def test_backward_compares_the_gradients_of_inputs_that_required_grad_before_the_call():
    # The cache requires grad only once x is written into it; its "gradient" then depends on how the
    # backend builds the mutation's history, and is no gradient of an input.
    case = Case("ops", "append_to_cache", "float32", "backward")
    record = run_case(case, _CacheSource(), CopyBackMutationCpu(), None)
    assert record.status is Status.PASS, record
    assert record.numerics.worst_output == "sample 0 grad"  # one gradient compared: x's
