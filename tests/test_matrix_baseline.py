"""Nightly regression mode: `opsuite run --baseline` and `pytest cases --baseline`, on real cpu runs.

A real regression on the cpu backend: the baseline's real run passed a case; the new run gives it a
0.001 s budget, so it really times out. Expected failures and improvements: a COPY of the real results
in which a case failed serves as the baseline (a fixture in tmp, never under matrix/).
"""

import re
import subprocess
import sys

import pytest
from matrix_support import ADD, ROOT, SOFTMAX_BACKWARD, edited_copy, failing, opsuite, real_cpu_results

from opsuite import profiles
from opsuite.matrix import baseline, publish, snapshot
from opsuite.results import load

PAIR = f"{ADD} or {SOFTMAX_BACKWARD}"
TOO_SHORT = "0.001"  # seconds: no case finishes in time


@pytest.fixture
def real_baseline(tmp_path):
    return publish.publish([real_cpu_results()], tmp_path / "matrix")


@pytest.fixture
def add_failed_baseline(tmp_path):
    """The real run, but ADD failed in it: as on an older torch, so it is another snapshot than today's."""
    copy = edited_copy(real_cpu_results(), tmp_path / "older.jsonl", torch="2.12.0", case=failing(ADD))
    return publish.publish([copy], tmp_path / "matrix")


def _counts(text):
    """The change counts of a regression-mode report."""
    return {name: int(n) for name, n in re.findall(r"^(regressed|improved|changed|added|removed) +(\d+)$", text, re.M)}


def _pytest(*args, cwd):
    return subprocess.run([sys.executable, "-m", "pytest", str(ROOT / "cases"), "--rootdir", str(ROOT),
                           "--backend", "cpu", "-p", "no:cacheprovider", "-rfxX", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=600)


def test_cli_fails_on_a_regression_and_shows_both_records(tmp_path, real_baseline):
    results = tmp_path / "nightly.jsonl"
    done = opsuite("run", "--backend", "cpu", "-k", SOFTMAX_BACKWARD, "--case-timeout", TOO_SHORT,
                   "--results", str(results), "--baseline", str(real_baseline.path), "--allow-missing", cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    [record] = load(results).records
    assert record.status.value == "timeout"
    out = done.stdout
    assert _counts(out) == {"regressed": 1, "improved": 0, "changed": 0, "added": 0, "removed": 0}
    assert f"REGRESSION: {SOFTMAX_BACKWARD} passed in baseline {real_baseline.id}, now timeout" in out
    baseline_line = next(line for line in out.splitlines() if "baseline record:" in line)
    new_line = next(line for line in out.splitlines() if "new record:" in line)
    assert '"status": "pass"' in baseline_line and '"status": "timeout"' in new_line
    assert f'"line": {real_baseline.cells[SOFTMAX_BACKWARD]["source"]["line"]}' in baseline_line


def test_cli_reports_an_improvement_passes_and_updates_the_baseline(tmp_path, add_failed_baseline):
    matrix = add_failed_baseline.path.parent.parent
    done = opsuite("run", "--backend", "cpu", "-k", PAIR, "--results", str(tmp_path / "nightly.jsonl"),
                   "--baseline", str(add_failed_baseline.path), "--allow-missing", "--update-baseline", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert _counts(done.stdout) == {"regressed": 0, "improved": 1, "changed": 0, "added": 0, "removed": 0}
    row = next(line for line in done.stdout.split("improved (1):")[1].splitlines() if line.startswith(ADD))
    assert "runtime_error: execute: [test/T001]" in row and "pass" in row
    # --update-baseline: the run is published next to the baseline, as the snapshot of today's stack.
    [new] = [s for s in snapshot.load_all(matrix) if s.id != add_failed_baseline.id]
    assert f"published the new baseline {new.id}" in done.stdout
    assert sorted(new.cells) == sorted([ADD, SOFTMAX_BACKWARD]) and new.cells[ADD]["status"] == "pass"
    assert new.id in (matrix / "README.md").read_text()


def test_baseline_cases_that_did_not_run_are_missing_and_fail_unless_allowed(tmp_path, real_baseline):
    # The run selects one of the baseline's cases: the others are missing, a failure (a killed or
    # narrowed nightly run must not pass unseen) unless they were deselected on purpose.
    done = opsuite("run", "--backend", "cpu", "-k", ADD, "--results", str(tmp_path / "a.jsonl"),
                   "--baseline", str(real_baseline.path), cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    absent = sorted(set(real_baseline.cells) - {ADD})
    assert len(absent) >= 4 and re.search(rf"^missing +{len(absent)}$", done.stdout, re.M)
    listed = done.stdout.split(f"missing ({len(absent)}): baseline cases this run did not run; this fails the run")[1]
    assert all(f"  {case_id}\n" in listed for case_id in absent)
    allowed = opsuite("run", "--backend", "cpu", "-k", ADD, "--results", str(tmp_path / "b.jsonl"),
                      "--baseline", str(real_baseline.path), "--allow-missing", cwd=tmp_path)
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert f"missing ({len(absent)}): baseline cases this run did not run; deselected on purpose" in allowed.stdout
    # The same under plain pytest: the session fails on missing cases only without --allow-missing.
    plain = _pytest("-k", ADD, "--baseline", str(real_baseline.path), "--results", str(tmp_path / "c.jsonl"),
                    cwd=tmp_path)
    assert plain.returncode == 1 and re.search(r"= 1 passed, \d+ deselected in", plain.stdout), plain.stdout


def test_a_baseline_run_takes_the_baselines_options(tmp_path, real_baseline):
    # The baseline (its run recorded no profile: it chose its options) holds ops only, in float32 and
    # bfloat16, forward and backward, 2 samples: the run takes exactly that, not the quick profile's
    # kinds and directions, unless an option says otherwise.
    results = tmp_path / "a.jsonl"
    done = opsuite("run", "--backend", "cpu", "-k", ADD, "--results", str(results), "--allow-missing",
                   "--baseline", str(real_baseline.path), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    header = load(results).header
    assert header["options"]["dtypes"] == ["float32", "bfloat16"] and header["options"]["samples"] == "2"
    assert header["options"]["directions"] == ["forward", "backward"] and header["catalog"]["kinds"] == ["ops"]
    explicit = tmp_path / "b.jsonl"
    done = opsuite("run", "--backend", "cpu", "-k", ADD, "--results", str(explicit), "--allow-missing",
                   "--baseline", str(real_baseline.path), "--dtypes", "float32", "--samples", "1", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert load(explicit).header["options"]["dtypes"] == ["float32"]
    assert load(explicit).header["options"]["samples"] == "1"


def test_pytest_baseline_xfails_known_failures_and_fails_regressions(tmp_path, add_failed_baseline):
    # Now both cases pass: ADD failed in the baseline, so it is an XPASS (an improvement); the run passes.
    done = _pytest("-k", PAIR, "--baseline", str(add_failed_baseline.path), "--allow-missing",
                   "--results", str(tmp_path / "a.jsonl"), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"= 1 passed, \d+ deselected, 1 xpassed in", done.stdout)
    assert "opsuite regression mode" in done.stdout
    assert _counts(done.stdout)["improved"] == 1
    # Now both time out: ADD is an expected failure (xfail), the softmax backward a regression.
    done = _pytest("-k", PAIR, "--baseline", str(add_failed_baseline.path), "--allow-missing",
                   "--case-timeout", TOO_SHORT, "--results", str(tmp_path / "b.jsonl"), cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert re.search(r"= 1 failed, \d+ deselected, 1 xfailed in", done.stdout)
    xfail = next(line for line in done.stdout.splitlines() if line.startswith("XFAIL"))
    assert xfail.endswith(f"test_case[{ADD}] - baseline {add_failed_baseline.id}: runtime_error: execute: "
                          "[test/T001] RuntimeError: made to fail for a test")
    assert f"REGRESSION: {SOFTMAX_BACKWARD} passed in baseline" in done.stdout
    assert _counts(done.stdout) == {"regressed": 1, "improved": 0, "changed": 1, "added": 0, "removed": 0}


@pytest.mark.parametrize("args, message", [
    (["--update-baseline"], "--update-baseline needs --baseline SNAPSHOT"),
    (["--baseline", "cpu/no-such-snapshot"], "no snapshot 'cpu/no-such-snapshot'"),
    (["--allow-missing"], "--allow-missing needs --baseline SNAPSHOT"),
])
def test_bad_baseline_options_are_refused_before_the_run(tmp_path, args, message):
    done = opsuite("run", "--backend", "cpu", "-k", ADD, "--results", str(tmp_path / "r.jsonl"), *args, cwd=tmp_path)
    assert done.returncode == 2 and message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "r.jsonl").exists()


def test_a_baselines_recorded_profile_is_its_options(real_baseline):
    data = dict(real_baseline.data)
    data["runs"] = [dict(run, options=dict(run["options"], profile="matrix")) for run in data["runs"]]
    assert baseline.profile(snapshot.Snapshot(real_baseline.path, data)) == profiles.PROFILES["matrix"]
    # Runs that recorded no profile (or disagree): what its cells hold, with the most samples any run took.
    data["runs"] = [dict(run, options=dict(run["options"], profile=None, samples="3")) for run in data["runs"]]
    derived = baseline.profile(snapshot.Snapshot(real_baseline.path, data))
    assert derived == profiles.Profile(None, ("ops",), ("float32", "bfloat16"), ("forward", "backward"), "3")
