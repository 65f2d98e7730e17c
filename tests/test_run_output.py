"""What `opsuite run` prints for a person, and what pytest's options do with the cases, in subprocesses.

The host fallbacks come from the neuron test double (tests/neuron_double), which runs on the CPU and
reports `aten::cos.out` as run on the host; see tests/test_neuron.py.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from opsuite.results import load

DOUBLE = Path(__file__).parent / "neuron_double"
# sin forward passes; cos (forward and backward) and sin backward fall back to the host; tan does not compile.
NEURON_SELECTION = "ops/sin/float32 or ops/cos/float32 or ops/tan/float32/forward"


def opsuite_run(*args, cwd, neuron_double=False):
    env = dict(os.environ)
    if neuron_double:
        env["PATH"] = f"{DOUBLE / 'bin'}{os.pathsep}{env['PATH']}"
        env["PYTHONPATH"] = os.pathsep.join([str(DOUBLE), *filter(None, [env.get("PYTHONPATH")])])
    return subprocess.run([sys.executable, "-m", "opsuite.cli", "run", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.main
def test_each_case_that_did_not_pass_gets_its_status_reason_and_repro(tmp_path):
    results = tmp_path / "n.jsonl"
    done = opsuite_run("--backend", "neuron", "-k", NEURON_SELECTION, "--results", str(results), cwd=tmp_path,
                       neuron_double=True)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "FAILED" not in out and "Failed:" not in out
    # pytest's final line counts the fallbacks as their own outcome.
    [counts] = re.findall(r"^(.*) in [0-9.]+s$", out, re.M)
    assert {"1 passed", "3 fallback", "1 compile_error"} <= set(counts.split(", ")), counts
    assert "failed" not in counts
    repro = "opsuite repro ops/cos/float32/forward --backend neuron --samples 2"
    assert re.search(rf"^fallback ops/cos/float32/forward: 2 samples; host: aten::cos\.out; .*; repro: {repro}$", out, re.M), out
    assert re.search(r"^compile_error ops/tan/float32/forward: trace in sample 0 of \d+: \[unsupported_operator\] NotImplementedError: "
                     r"Operation aten::tan\.out is not implemented for Neuron; repro: opsuite repro "
                     r"ops/tan/float32/forward --backend neuron --samples 1$", out, re.M), out  # through sample 0
    assert "4 cases did not pass:" in out
    assert "ops/sin/float32/forward" not in out.split("Summary by category")[0]  # a pass gets no line
    # The snapshot page's summary by category, then the status table.
    assert re.search(r"^\| ops: torch +\| +1 \| +3 \| +0 \| +1 \| ", out, re.M), out
    assert re.search(r"^\| all +\| +\| +1 \| +3 \| +0 \| +1 \| ", out, re.M), out
    # Progress from the start: the case worker's start is announced before any case runs.
    assert out.index("opsuite: starting the neuron case worker") < out.index("ops cases, ")
    assert "warning" not in (out + done.stderr).lower()
    assert done.stderr == ""


def test_markers_select_kind_dtype_and_direction(tmp_path):
    results = tmp_path / "m.jsonl"
    done = opsuite_run("--backend", "cpu", "-k", "ops/add/", "--results", str(results), "--",
                       "-m", "ops and backward and bfloat16", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert [r.case_id for r in load(results).records] == ["ops/add/bfloat16/backward"]
    assert "warning" not in (done.stdout + done.stderr).lower()


@pytest.mark.main
def test_last_failed_reruns_only_the_cases_that_did_not_pass(tmp_path):
    first, again = tmp_path / "first.jsonl", tmp_path / "again.jsonl"
    done = opsuite_run("--backend", "neuron", "-k", NEURON_SELECTION, "--results", str(first), cwd=tmp_path,
                       neuron_double=True)
    assert done.returncode == 0, done.stdout + done.stderr
    not_passed = sorted(r.case_id for r in load(first).records if r.status.value != "pass")
    assert len(not_passed) == 4
    assert (tmp_path / ".pytest_cache").is_dir()  # pytest's cache lives next to the results file
    done = opsuite_run("--backend", "neuron", "-k", NEURON_SELECTION, "--results", str(again), "--lf",
                       cwd=tmp_path, neuron_double=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(r.case_id for r in load(again).records) == not_passed
