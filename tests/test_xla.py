"""The XLA backend on real XLA:CPU: compiles, fallbacks by aten name, compile errors, recovery."""

import pytest

pytestmark = pytest.mark.xla

from opsuite import backends  # noqa: E402
from opsuite.catalog import build_catalog  # noqa: E402
from opsuite.execute import run_case  # noqa: E402
from opsuite.record import Stage, Status, Verdict  # noqa: E402


@pytest.fixture(scope="module")
def catalog():
    return build_catalog(["ops"])


@pytest.fixture(scope="module")
def xla():
    return backends.open_backend("xla")


def _run(catalog, xla, case_id):
    case = catalog.get(case_id)
    return run_case(case, catalog.source(case), xla, 2)


def test_stack_is_described(xla):
    stack = xla.stack()
    assert stack["torch_xla"].startswith("2.")
    assert stack["pjrt_device"] == "CPU"
    assert "PJRT_DEVICE" in xla.env()


def test_pass_counts_compiles_and_times(catalog, xla):
    record = _run(catalog, xla, "ops/mul/float32/backward")
    assert record.status is Status.PASS
    assert record.compiles >= 1 and record.compile_s > 0 and record.device_s > 0
    assert record.numerics.verdict in {Verdict.CLOSE, Verdict.AS_ACCURATE_AS_CPU}


def test_fallback_is_named_by_aten_op(catalog, xla):
    record = _run(catalog, xla, "ops/median/float32/forward")
    assert record.status is Status.FALLBACK
    assert "aten::median" in record.fallback_ops
    assert "aten::_local_scalar_dense" not in record.fallback_ops


def test_factory_op_runs_on_the_device(catalog, xla):
    record = _run(catalog, xla, "ops/zeros/float32/forward")
    assert record.status is Status.PASS
    assert record.compiles >= 1  # with device='cpu' left in place it would never touch XLA


def test_lowering_failure_is_a_compile_error_and_the_runtime_recovers(catalog, xla):
    failed = _run(catalog, xla, "ops/linalg.svd/float32/forward")
    assert failed.status is Status.COMPILE_ERROR
    assert failed.stage is Stage.COMPILE
    assert "lowering" in failed.failure.message.lower()
    # Without recovery every later sync fails with `Check failed: tensor_data`.
    assert xla.recover()
    after = _run(catalog, xla, "ops/add/float32/forward")
    assert after.status is Status.PASS


def test_bfloat16_is_judged_against_float64(catalog, xla):
    record = _run(catalog, xla, "ops/nn.functional.softmin/bfloat16/backward")
    assert record.status is Status.PASS
    assert record.numerics.reference_dtype == "float64"
    assert record.numerics.cpu_max_abs_err is not None
