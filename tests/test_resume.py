"""`opsuite run --resume`: a run killed at a random moment, continued, equals one uninterrupted run."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from opsuite.results import ResultsError, load, load_for_resume

SELECTION = ["--backend", "cpu", "--dtypes", "float32,bfloat16",
             "-k", "ops/add/ or ops/sub/ or ops/mul/ or ops/softmax/ or ops/jiterator_unary/"]
CASES = 18  # 5 ops x 2 dtypes x 2 directions, less jiterator_unary's backward (no such case)


def _opsuite(*args, cwd):
    return subprocess.run([sys.executable, "-m", "opsuite.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def _statuses(path):
    return {r.case_id: r.status.value for r in load(path).records}


def test_killed_then_resumed_run_equals_an_uninterrupted_one(tmp_path):
    whole = tmp_path / "whole.jsonl"
    done = _opsuite("run", *SELECTION, "--results", str(whole), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert len(_statuses(whole)) == CASES

    killed = tmp_path / "killed.jsonl"
    stop_after = random.randint(1, CASES - 3)  # finished case lines before the kill
    proc = subprocess.Popen([sys.executable, "-m", "opsuite.cli", "run", *SELECTION, "--results", str(killed)],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and (not killed.exists() or killed.read_bytes().count(b"\n") < 1 + stop_after):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the whole process group: pytest and its case worker
    proc.wait()
    before = load(killed)
    assert 0 < len(before.records) < CASES, f"killed after {len(before.records)} cases (aimed at {stop_after})"

    done = _opsuite("run", "--resume", str(killed), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    after = load(killed)
    assert after.header == before.header  # the same run: one header, its run id on every line
    assert after.records[:len(before.records)] == before.records  # what was finished is untouched
    assert _statuses(killed) == _statuses(whole)
    assert f"{CASES} cases recorded" in done.stdout

    again = _opsuite("run", "--resume", str(killed), cwd=tmp_path)  # nothing left to run
    assert again.returncode == 0, again.stderr
    assert _statuses(killed) == _statuses(whole)


def test_resume_refuses_another_selection_and_compressed_files(tmp_path):
    results = tmp_path / "r.jsonl"
    done = _opsuite("run", "--backend", "cpu", "-k", "ops/add/float32/forward", "--results", str(results), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    text = results.read_text()
    other = _opsuite("run", "--resume", str(results), "--dtypes", "bfloat16", cwd=tmp_path)
    assert other.returncode == 2
    assert other.stderr.strip().splitlines() == [
        f"opsuite: --resume {results}: the run was started with dtypes 'float32,bfloat16', not 'bfloat16'; "
        f"a resumed run keeps its own selection"]
    assert results.read_text() == text
    packed = tmp_path / "r.jsonl.gz"
    subprocess.run(["gzip", "-k", str(results)], check=True)
    with pytest.raises(ResultsError, match="compressed results file cannot be resumed"):
        load_for_resume(packed)


def test_resume_cuts_a_torn_last_line_off(tmp_path):
    results = tmp_path / "r.jsonl"
    header = {"kind": "header", "schema_version": 1, "run_id": "r1", "backend": "cpu", "started_at": "x",
              "stack": {}, "env": {}, "host": {}, "opsuite": {"version": "0", "commit": "x"},
              "catalog": {"op_db_size": 0}, "options": {}}
    case = {"kind": "case", "run_id": "r1", "case_id": "ops/add/float32/forward", "status": "pass",
            "stage": "done", "backend": "cpu"}
    whole = json.dumps(header) + "\n" + json.dumps(case) + "\n"
    results.write_text(whole + '{"kind": "case", "run_id": "r1", "case_id": "ops/sub/fl')
    run = load_for_resume(results)
    assert [r.case_id for r in run.records] == ["ops/add/float32/forward"]
    assert run.warnings == [f"{results}:3: torn last line dropped (an interrupted write); 1 finished cases "
                            f"before it are loaded"]
    assert results.read_text() == whole  # new lines will follow whole ones
