"""`opsuite run` and `pytest cases` end to end on the cpu backend, in subprocesses as a user runs them."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from opsuite.results import load

ROOT = Path(__file__).resolve().parent.parent
SELECTION = "ops/add/float32 or ops/mul/float32"


def _opsuite(*args, cwd, **kwargs):
    return subprocess.run([sys.executable, "-m", "opsuite.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, **kwargs)


def test_run_records_every_case_and_prints_the_summary(tmp_path):
    results = tmp_path / "r.jsonl"
    done = _opsuite("run", "--backend", "cpu", "-k", SELECTION, "--results", str(results), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "| direction" in done.stdout and "| all" in done.stdout
    assert str(results) in done.stdout
    run = load(results)
    assert sorted(r.case_id for r in run.records) == [
        "ops/add/float32/backward", "ops/add/float32/forward", "ops/mul/float32/backward", "ops/mul/float32/forward"]
    assert all(r.status.value == "pass" for r in run.records)
    header = run.header
    assert header["backend"] == "cpu"
    assert header["catalog"]["op_db_size"] > 600
    assert header["stack"]["torch"]
    assert header["opsuite"]["commit"]
    assert header["options"]["samples"] == "2"


def test_the_pytest_process_imports_no_torch(tmp_path):
    # The worker builds the catalog and owns the stack; torch in the pytest process would cost seconds of
    # start-up and a core (it once came in by unpickling the worker's TorchVersion strings).
    results = tmp_path / "r.jsonl"
    probe = ("import sys; from opsuite.cli import main; code = main(sys.argv[1:]); "
             "print('torch imported:', 'torch' in sys.modules); sys.exit(code)")
    done = subprocess.run([sys.executable, "-c", probe, "run", "--backend", "cpu", "-k", "ops/add/float32/forward",
                           "--results", str(results)], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "torch imported: False" in done.stdout
    assert load(results).header["stack"]["torch"]


def test_collect_only_lists_cases_without_a_worker(tmp_path):
    done = subprocess.run([sys.executable, "-m", "pytest", str(ROOT / "cases" / "test_ops.py"), "--rootdir", str(ROOT),
                           "--backend", "cpu", "--dtypes", "float32", "--collect-only", "-q", "-k", "ops/add/"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "test_ops.py::test_case[ops/add/float32/forward]" in done.stdout
    assert "test_ops.py::test_case[ops/add/float32/backward]" in done.stdout
    assert not (tmp_path / "results").exists()


def test_summary_validates_results_files(tmp_path):
    good = tmp_path / "g.jsonl"
    assert _opsuite("run", "--backend", "cpu", "-k", "ops/add/float32/forward", "--results", str(good),
                    cwd=tmp_path).returncode == 0
    done = _opsuite("summary", str(good), cwd=tmp_path)
    assert done.returncode == 0 and "| all" in done.stdout
    header, case = good.read_text().splitlines()
    corrupt = tmp_path / "c.jsonl"
    corrupt.write_text(f"{header}\n{case[:-20]}\n{case}\n")  # a broken line that is not the last one
    bad = _opsuite("summary", str(corrupt), cwd=tmp_path)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [bad.stderr.strip()]  # one line
    assert f"{corrupt}:2: not valid JSON" in bad.stderr
    torn = tmp_path / "t.jsonl"  # the same cut at the end of the file is a killed writer's torn line
    torn.write_text(f"{header}\n{case[:-20]}")
    forgiven = _opsuite("summary", str(torn), cwd=tmp_path)
    assert forgiven.returncode == 0 and f"{torn}:2: torn last line dropped" in forgiven.stderr


def test_pytest_xdist_workers_share_one_results_file(tmp_path):
    results = tmp_path / "x.jsonl"
    done = subprocess.run([sys.executable, "-m", "pytest", str(ROOT / "cases"), "--rootdir", str(ROOT),
                           "--backend", "cpu", "-k", SELECTION, "-n", "2", "--results", str(results), "-q"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "opsuite summary" in done.stdout
    run = load(results)
    assert len(run.records) == 4
    assert results.read_text().count('"kind": "header"') == 1


def test_failure_prints_a_repro_command(tmp_path):
    done = subprocess.run([sys.executable, "-m", "pytest", str(ROOT / "cases"), "--rootdir", str(ROOT),
                           "--backend", "cpu", "-k", "ops/jiterator_unary/float32", "-rs",
                           "--results", str(tmp_path / "s.jsonl")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert "not applicable" in done.stdout  # skipped: the CPU reference has no kernel


def test_unknown_backend_is_one_clear_error(tmp_path):
    done = _opsuite("run", "--backend", "tpu9", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "opsuite: unknown backend 'tpu9'; known backends: " + ", ".join(_known())]


def _known():
    from opsuite import backends

    return backends.known()


def test_existing_results_are_never_overwritten(tmp_path):
    results = tmp_path / "r.jsonl"
    results.write_text("precious\n")
    done = _opsuite("run", "--backend", "cpu", "--results", str(results), cwd=tmp_path)
    assert done.returncode == 2 and "already exists" in done.stderr
    assert results.read_text() == "precious\n"


def test_killed_run_keeps_what_it_finished(tmp_path):
    results = tmp_path / "k.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "opsuite.cli", "run", "--backend", "cpu", "--dtypes", "float32",
                             "--directions", "forward", "--results", str(results)],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and (not results.exists() or results.read_text().count("\n") < 6):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    run = load(results)
    assert len(run.records) >= 5


def test_repro_prints_the_record(tmp_path):
    done = _opsuite("repro", "ops/add/float32/forward", "--backend", "cpu", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "pass"
    bad = _opsuite("repro", "ops/nosuchop/float32/forward", "--backend", "cpu", cwd=tmp_path)
    assert bad.returncode == 2 and "unknown case" in bad.stderr


@pytest.mark.parametrize("args, message", [
    (["run", "--samples", "0", "--backend", "cpu"], "--samples"),
    (["run", "--kinds", "nope", "--backend", "cpu"], "unknown case kind 'nope'; known: ops, blocks, models"),
])
def test_bad_options(tmp_path, args, message):
    done = _opsuite(*args, cwd=tmp_path)
    assert done.returncode != 0
    assert message in done.stderr


def test_op_selects_cases_by_the_names_people_type(tmp_path):
    # --op resolves as lookup does (F.softmax is OpInfo's softmax, aten::index_put_ its index_put), beside -k;
    # --profile matrix runs every sample and is recorded as such.
    results = tmp_path / "r.jsonl"
    done = _opsuite("run", "--backend", "cpu", "--profile", "matrix", "--op", "F.softmax,aten::index_put_",
                    "--op", "torch.nn.functional.relu", "-k", "float32/forward", "--results", str(results),
                    cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    run = load(results)
    assert sorted(r.case_id for r in run.records) == [
        "ops/index_put/float32/forward", "ops/nn.functional.relu/float32/forward", "ops/softmax/float32/forward"]
    options = run.header["options"]
    assert options["profile"] == "matrix" and options["samples"] == "all"
    assert options["ops"] == ["F.softmax", "aten::index_put_", "torch.nn.functional.relu"]
    assert run.header["catalog"]["op_names"]["nn.functional.softmax"] == ["softmax"]


def test_an_op_that_names_nothing_is_refused_with_real_suggestions(tmp_path):
    done = _opsuite("run", "--backend", "cpu", "--kinds", "blocks", "--op", "attention",
                    "--results", str(tmp_path / "r.jsonl"), cwd=tmp_path)
    assert done.returncode == 4, done.stdout + done.stderr  # pytest's usage error
    assert "--op 'attention' names no case of this run; did you mean: blocks/attention." in done.stdout + done.stderr
    assert not (tmp_path / "r.jsonl").exists()


def test_the_default_run_is_the_quick_profile(tmp_path):
    results = tmp_path / "r.jsonl"
    done = _opsuite("run", "--backend", "cpu", "--op", "add", "-k", "forward", "--results", str(results), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    run = load(results)
    options = run.header["options"]
    assert options["profile"] == "quick" and options["samples"] == "2"
    assert options["dtypes"] == ["float32", "bfloat16"] and options["directions"] == ["forward", "backward", "train"]
    assert sorted(r.case_id for r in run.records) == ["ops/add/bfloat16/forward", "ops/add/float32/forward"]


def test_repro_takes_a_case_id_spelled_as_people_type_it(tmp_path):
    done = _opsuite("repro", "ops/nn.functional.softmax/float32/forward", "--backend", "cpu", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["case_id"] == "ops/softmax/float32/forward"
    assert "ops/nn.functional.softmax/float32/forward is ops/softmax/float32/forward" in done.stderr
    several = _opsuite("repro", "ops/torch.max/float32/forward", "--backend", "cpu", cwd=tmp_path)
    assert several.returncode == 2 and "means 3 cases" in several.stderr and "ops/max.binary/float32/forward" in several.stderr
