"""The matrix on a real XLA run: its snapshot key, and regression mode against a baseline in which a case
that really fails on XLA:CPU is made to have passed (an edited COPY in tmp, never under matrix/)."""

import json

import pytest
from matrix_support import edited_copy, opsuite

from opsuite.matrix import publish

FAILS_ON_XLA = "ops/index_add/float32/forward"  # torch-xla 2.9 on CPU: "Value out of range" while tracing
PASSES_ON_XLA = "ops/add/float32/forward"
SELECTION = f"{FAILS_ON_XLA} or {PASSES_ON_XLA}"


def _passed(case: dict) -> None:
    if case["case_id"] == FAILS_ON_XLA:
        case.update(status="pass", stage="done", failure=None,
                    numerics={"verdict": "close", "max_abs_err": 0.0, "cpu_max_abs_err": 0.0, "ratio": 1.0})


@pytest.mark.xla
def test_a_case_that_stops_passing_on_xla_is_a_regression(tmp_path):
    first = tmp_path / "first.jsonl"
    done = opsuite("run", "--backend", "xla", "-k", SELECTION, "--results", str(first), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    statuses = {json.loads(line)["case_id"]: json.loads(line).get("status") for line in first.read_text().splitlines()[1:]}
    assert statuses == {FAILS_ON_XLA: "runtime_error", PASSES_ON_XLA: "pass"}
    baseline = publish.publish([edited_copy(first, tmp_path / "baseline.jsonl", case=_passed)], tmp_path / "matrix")
    header = json.loads(first.read_text().splitlines()[0])
    assert baseline.id.startswith(f"xla/torch_xla-{header['stack']['torch_xla']}__torch-")
    assert baseline.data["versions"]["pjrt_device"] == "CPU"

    done = opsuite("run", "--backend", "xla", "-k", SELECTION, "--results", str(tmp_path / "nightly.jsonl"),
                   "--baseline", str(baseline.path), cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"REGRESSION: {FAILS_ON_XLA} passed in baseline {baseline.id}, now runtime_error" in done.stdout
    assert "regressed (1):" in done.stdout and PASSES_ON_XLA not in done.stdout.split("regressed (1):")[1]
