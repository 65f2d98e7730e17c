"""`opsuite nightly` end to end: two releases of the neuron test double, the second one losing a kernel.

Both nights are real runs (`opsuite run` of a few cases on the double, in subprocesses, published into a
tmp matrix); the second night's release lost `sin`'s device kernel, so `sin` falls back to the host: the
nightly must catch it as a regression, exit 1, and say so in its report and release notes. The same flow on
two real torch-xla releases needs a second 7 GB environment, so it is a manual check (docs/nightly.md).
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from opsuite.matrix import release_notes, snapshot

pytestmark = pytest.mark.main

ROOT = Path(__file__).resolve().parent.parent
DOUBLE = Path(__file__).parent / "neuron_double"
SELECTION = "ops/sin/float32 or ops/neg/float32/forward or ops/cos/float32/forward"
SIN = "ops/sin/float32/forward"


def nightly(work: Path, matrix: Path, release: str, **env: str) -> subprocess.CompletedProcess:
    environ = {**{k: v for k, v in os.environ.items() if k != "OPSUITE_DOUBLE_NO_KERNEL"}, "PYTHONPATH": os.pathsep.join([str(DOUBLE), str(ROOT)]),
               "PATH": f"{DOUBLE / 'bin'}{os.pathsep}{os.environ['PATH']}",
               "OPSUITE_NEURON_SDK_RELEASE": release, "GITHUB_STEP_SUMMARY": str(work / "summary.md"), **env}
    return subprocess.run([sys.executable, "-m", "opsuite.cli", "nightly", "--backend", "neuron", "-k", SELECTION,
                           "--matrix", str(matrix), "--work", str(work)],
                          cwd=work.parent, env=environ, capture_output=True, text=True, timeout=900)


def test_nights_of_one_release_then_a_release_that_loses_a_kernel(tmp_path):
    matrix = tmp_path / "matrix"
    first, again, second = tmp_path / "night-1", tmp_path / "night-2", tmp_path / "night-3"
    done = nightly(first, matrix, "2.33.0")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "no earlier snapshot of this backend" in (first / "nightly-report.md").read_text()
    [old] = snapshot.load_all(matrix)
    assert old.data["versions"]["neuron_sdk"] == "2.33.0" and old.cells[SIN]["status"] == "pass"

    # The same release again: compared with its own last night, and replaced (not a second snapshot).
    done = nightly(again, matrix, "2.33.0")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = (again / "nightly-report.md").read_text()
    assert f"compared with `{old.id}`" in report and "+0 working, -0 broken" in report
    assert "Verdict: **passed**" in report and [s.id for s in snapshot.load_all(matrix)] == [old.id]

    # A new release that lost sin's device kernel: compared with the previous release, and caught.
    done = nightly(second, matrix, "2.34.0", OPSUITE_DOUBLE_NO_KERNEL="sin")
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    report = (second / "nightly-report.md").read_text()
    assert f"compared with `{old.id}`" in report
    assert "**neuron 2.34.0 vs 2.33.0: +0 working, -1 broken, 1 more fallbacks**" in report
    assert "Verdict: **FAILED**" in report
    regressions = report.split("## Regressions (1)")[1]
    assert SIN in regressions and re.search(r"fallback: [^|]*host: aten::sin", regressions)  # the cell note names the op
    assert (second / "summary.md").read_text() == report  # the job's summary gets the same report
    newer = [s for s in snapshot.load_all(matrix) if s.id != old.id]
    assert [s.data["versions"]["neuron_sdk"] for s in newer] == ["2.34.0"]
    notes = {n["headline"]: n for n in release_notes.files(matrix)}
    page = (matrix / notes["neuron 2.34.0 vs 2.33.0: +0 working, -1 broken, 1 more fallbacks"]["md"]).read_text()
    # sin's backward fell back already (aten::cos.out); now aten::sin too: a new fallback, not a new break.
    gained = page.split("## New host fallbacks (2)")[1]
    assert f"| `{SIN}` | aten::sin.out |" in gained and "| `ops/sin/float32/backward` | aten::sin.out |" in gained
