"""Classification of a case's outcome, with backends that fail in controlled ways (CPU underneath)."""

import pytest
import torch
from torch.utils import _pytree as pytree

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


class ScaledWrongCpu(CpuBackend):
    """Wrong by a quarter of each output: samples with larger values have larger errors."""

    def wrap(self, fn):
        return lambda *args, **kwargs: fn(*args, **kwargs) * 1.25


def test_figures_come_from_the_worst_sample_and_every_sample_is_recorded(catalog):
    record = _run(catalog, "ops/mul/float32/forward", ScaledWrongCpu(), samples=None)
    assert record.status is Status.MISMATCH
    assert record.samples_available == len(record.samples) == record.samples_run > 2
    ratios = [s["ratio"] for s in record.samples]
    worst = max(range(len(ratios)), key=ratios.__getitem__)
    assert ratios[0] < ratios[worst]  # the first failing sample is not the worst
    assert record.numerics.ratio == ratios[worst]
    assert record.numerics.max_abs_err == record.samples[worst]["max_abs_err"]
    assert record.worst_sample["index"] == worst and record.worst_sample["label"].startswith("(Tensor[")


class FailsFirstCpu(CpuBackend):
    """Sample 0 fails on the device; every sample names a fallback op of its own."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def wrap(self, fn):
        def call(*args, **kwargs):
            self.calls.append(f"aten::op{len(self.calls)}")
            if len(self.calls) == 1:
                raise RuntimeError("first sample fails")
            return fn(*args, **kwargs)
        return call

    def counters(self):
        return Counters(fallback_ops=list(self.calls))


def test_a_case_goes_on_past_its_first_failing_sample(catalog):
    record = _run(catalog, "ops/add/float32/forward", FailsFirstCpu(), samples=3)
    assert record.status is Status.RUNTIME_ERROR and record.stage is Stage.TRACE
    assert [s["status"] for s in record.samples] == ["runtime_error", "pass", "pass"]
    assert record.fallback_ops == ["aten::op0", "aten::op1", "aten::op2"]  # every sample's
    assert record.worst_sample["index"] == 0 and record.failure.sample == record.worst_sample["label"]


def test_no_sample_starts_when_the_budget_is_nearly_spent(catalog):
    record = _run(catalog, "ops/add/float32/forward", CpuBackend(), samples=None, budget_s=1e-6)
    assert record.samples_run == 1 < record.samples_available
    assert "budget" in record.extra["samples_stopped"] and "1 of" in record.extra["samples_stopped"]


def test_one_sample_alone_keeps_its_index(catalog):
    every = _run(catalog, "ops/mul/float32/forward", ScaledWrongCpu(), samples=None)
    alone = _run(catalog, "ops/mul/float32/forward", ScaledWrongCpu(), only_sample=3)
    assert [s["index"] for s in alone.samples] == [3]
    assert alone.samples[0] == every.samples[3]
    with pytest.raises(IndexError, match="no sample 999"):
        _run(catalog, "ops/mul/float32/forward", CpuBackend(), only_sample=999)


def test_samples_are_counted_when_every_sample_runs_or_there_are_no_more(catalog):
    assert _run(catalog, "ops/mul/float32/forward", CpuBackend(), samples=2).samples_available is None
    assert _run(catalog, "ops/mul/float32/forward", CpuBackend(), samples=None).samples_available > 2
    few = _run(catalog, "ops/broadcast_tensors/float32/forward", CpuBackend(), samples=2)
    assert few.samples_available == few.samples_run == 1


def test_samples_announce_themselves_before_they_run(catalog):
    heard = []
    _run(catalog, "ops/add/float32/forward", CpuBackend(), samples=2,
         on_sample=lambda index, label, done, available: heard.append((index, label, len(done), available)))
    assert [(i, n) for i, _, n, _ in heard] == [(0, 0), (1, 1)]
    assert heard[0][1].startswith("(Tensor[") and heard[0][3] is None  # 2 of more, not counted


class AddsOneCpu(CpuBackend):
    def wrap(self, fn):
        return lambda *args, **kwargs: pytree.tree_map_only(torch.Tensor, lambda t: t + 1, fn(*args, **kwargs))


@pytest.mark.parametrize("deterministic", ["ops/int/float32/forward", "ops/long/bfloat16/forward",
                                     "ops/nn.functional.scaled_dot_product_attention/float32/forward",
                                     "ops/unique/float32/forward"])
def test_deterministic_samples_of_undefined_ops_are_compared_by_value(catalog, deterministic):
    record = _run(catalog, deterministic, AddsOneCpu(), samples=None)
    assert record.status is Status.MISMATCH, record.numerics
    assert record.numerics.verdict is Verdict.WRONG


def test_samples_with_undefined_values_stay_shape_only(catalog):
    # dropout with p > 0 draws randomly; a conversion of values out of the integer type's range overflows.
    case = catalog.get("ops/nn.functional.dropout/float32/forward")
    labels = [sample.label for sample in catalog.source(case).samples(case, None)]
    record = _run(catalog, case.id, AddsOneCpu(), samples=None)
    verdicts = {label: result["verdict"] for label, result in zip(labels, record.samples)}
    assert verdicts["(Tensor[]:float32, p=0.5, training=True)"] == "shape_only"
    assert verdicts["(Tensor[]:float32, p=0.5, training=False)"] == "wrong"  # not training: the identity
    from torch.testing._internal.opinfo.core import SampleInput

    from opsuite.catalog import opinfo

    byte = opinfo.by_name()["byte"]
    assert opinfo._values_defined(byte, torch.float32, SampleInput(torch.tensor([3.5, 200.0])))
    assert not opinfo._values_defined(byte, torch.float32, SampleInput(torch.tensor([-3.5, 2.0])))
    assert not opinfo._values_defined(byte, torch.float32, SampleInput(torch.tensor([300.0])))


class MetaInputsCpu(CpuBackend):
    """Inputs go to the meta device; records the devices of the tensors each call gets."""

    def __init__(self):
        super().__init__()
        self.devices = []

    def device(self):
        return torch.device("meta")

    def wrap(self, fn):
        def watched(*args, **kwargs):
            self.devices.append([t.device.type for t in pytree.tree_leaves((args, kwargs))
                                 if isinstance(t, torch.Tensor)])
            raise RuntimeError("stop here")
        return watched

    def recover(self):
        return True


def test_cpu_only_tensor_arguments_stay_on_the_cpu(catalog):
    backend = MetaInputsCpu()
    _run(catalog, "ops/tensor_split/float32/forward", backend, samples=2)
    assert backend.devices[0] == ["meta", "cpu"]  # tensor_split's index tensor is OpInfo's CPU tensor
    assert backend.devices[1] == ["meta", "cpu"]


class ProcessOrderCpu(CpuBackend):
    def __init__(self, events):
        super().__init__()
        self.events = events

    def to_host(self, value):
        self.events.append("to_host")
        return super().to_host(value)


class _ProcessedSource:
    kind = "ops"

    def __init__(self, events):
        self.events = events

    def samples(self, case, limit):
        def process(out):
            self.events.append(f"process on {out.device.type}")
            return out.abs()
        return [Sample(fn=torch.neg, args=(torch.linspace(-1, 1, 5),), label="x", output_process=process)]

    def shape_only_reason(self, case):
        return None


def test_output_post_processing_runs_after_the_transfer():
    events = []
    record = run_case(Case("ops", "neg", "float32", "forward"), _ProcessedSource(events), ProcessOrderCpu(events), None)
    assert record.status is Status.PASS
    assert events[-2:] == ["to_host", "process on cpu"]  # not processed before the transfer
    assert events.count("process on cpu") == 3  # CPU, float64 reference, device result on the host


def _read_before_the_view(view):
    # Reads the storage from its start, as as_strided's partial_views samples do.
    return torch.as_strided(view, (3,), (1,), 0)


class _PartialViewSource:
    kind = "ops"

    def samples(self, case, limit):
        base = torch.arange(10, dtype=torch.float32)
        return [Sample(fn=_read_before_the_view, args=(base[4:],), label="view")]

    def shape_only_reason(self, case):
        return None


class CopyingCpu(CpuBackend):
    """A device that copies what it is given (so a partial view's storage is its whole story)."""

    def wrap(self, fn):
        def run(view):
            assert view.storage_offset() == 4 and view.untyped_storage().nbytes() == 40
            return fn(view)
        return run


def test_the_reference_reads_the_same_storage_as_the_device():
    record = run_case(Case("ops", "as_strided", "float32", "forward"), _PartialViewSource(), CopyingCpu(), None)
    assert record.status is Status.PASS, record
    assert record.numerics.verdict in (Verdict.CLOSE, Verdict.EXACT)
