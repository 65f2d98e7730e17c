"""`opsuite diff A B`: regressed, improved, changed, added, removed; text, JSON and exit codes."""

import json

import pytest
from matrix_support import (ADD, BLOCK, SOFTMAX_BACKWARD, edited_copy, failing, opsuite, real_cpu_results,
                            three_version_matrix, tree)

from opsuite.matrix import diff


@pytest.fixture(scope="module")
def matrix():
    return three_version_matrix()


def test_a_regression_is_reported_and_fails_the_exit_code(matrix, tmp_path):
    path, ids = matrix
    done = opsuite("diff", ids["real"], ids["2.14.0"], "--matrix", str(path), cwd=tmp_path)
    assert done.returncode == diff.EXIT_REGRESSED == 1, done.stderr
    assert "regressed (2):" in done.stdout
    table = done.stdout.split("regressed (2):")[1]
    assert ADD in table and SOFTMAX_BACKWARD in table and "runtime_error: execute: [test/T001]" in table
    result = json.loads(opsuite("diff", ids["real"], ids["2.14.0"], "--json", "--matrix", str(path), cwd=tmp_path).stdout)
    assert result["counts"] == {"regressed": 2, "improved": 0, "changed": 0, "added": 0, "removed": 0}
    [first, _] = result["changes"]["regressed"]
    assert first["case_id"] == ADD and first["a"]["status"] == "pass" and first["b"]["failure"]["code"] == "T001"


def test_improved_changed_added_removed(matrix, tmp_path):
    path, ids = matrix
    done = opsuite("diff", ids["2.14.0"], ids["2.15.0"], "--json", "--matrix", str(path), cwd=tmp_path)
    assert done.returncode == diff.EXIT_OK == 0, done.stderr
    result = json.loads(done.stdout)
    cases = {name: [c["case_id"] for c in entries] for name, entries in result["changes"].items()}
    assert cases["regressed"] == []
    assert cases["improved"] == [ADD]
    assert cases["changed"] == [SOFTMAX_BACKWARD]  # same status, another error code
    assert cases["removed"] == ["ops/jiterator_unary/float32/forward"]
    assert cases["added"] and all(c.startswith(f"blocks/{BLOCK}/") for c in cases["added"])


def test_snapshots_are_named_by_path_file_or_id_prefix(matrix, tmp_path):
    path, ids = matrix
    directory = path / ids["2.14.0"]
    prefix = ids["2.15.0"][:len("cpu/torch-2.15")]
    done = opsuite("diff", str(directory), str(path / ids["2.15.0"] / "snapshot.json"), cwd=tmp_path)
    by_prefix = opsuite("diff", ids["2.14.0"], prefix, "--matrix", str(path), cwd=tmp_path)
    assert done.returncode == by_prefix.returncode == 0
    assert done.stdout == by_prefix.stdout and "improved (1):" in done.stdout


@pytest.mark.parametrize("ref, message", [("cpu/torch", "names 3 snapshots"), ("cpu/nope", "no snapshot 'cpu/nope'")])
def test_a_bad_snapshot_name_is_one_clear_error(matrix, tmp_path, ref, message):
    path, ids = matrix
    done = opsuite("diff", ref, ids["real"], "--matrix", str(path), cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1 and message in done.stderr


def test_change_rules():
    ok = {"status": "pass"}
    fallback = {"status": "fallback", "failure": None}
    compile_a = {"status": "compile_error", "failure": {"category": "lowering", "code": "NCC_A"}}
    compile_b = {"status": "compile_error", "failure": {"category": "lowering", "code": "NCC_B"}}
    skip = {"status": "skip"}
    assert diff.change(ok, fallback) == "regressed"  # an op moving to the host is a regression
    assert diff.change(fallback, ok) == "improved"
    # Right numbers with a host fallback, then wrong numbers: a regression (xla's stft float32 backward,
    # 2.7.0 -> 2.8.1); the way back is a changed failure, not newly working.
    mismatch = {"status": "mismatch", "failure": None}
    assert diff.change(fallback, mismatch) == "regressed" and diff.change(fallback, compile_a) == "regressed"
    assert diff.change(mismatch, fallback) == "changed"
    assert diff.change(compile_a, compile_b) == "changed"
    assert diff.change(compile_a, dict(compile_a)) is None
    assert diff.change(ok, skip) == "changed" and diff.change(skip, skip) is None
    assert diff.change(None, ok) == "added" and diff.change(ok, None) == "removed"


def test_a_results_file_on_either_side_is_compared_without_publishing(matrix, tmp_path):
    path, ids = matrix
    before = tree(path)
    run = edited_copy(real_cpu_results(), tmp_path / "nightly.jsonl", case=failing(ADD))
    done = opsuite("diff", ids["real"], str(run), "--json", "--matrix", str(path), cwd=tmp_path)
    assert done.returncode == diff.EXIT_REGRESSED, done.stderr
    result = json.loads(done.stdout)
    assert result["b"]["id"] == str(run) and "not published" in result["b"]["label"]
    assert [c["case_id"] for c in result["changes"]["regressed"]] == [ADD]
    assert result["changes"]["regressed"][0]["b"]["source"]["file"] == str(run)
    back = opsuite("diff", str(run), ids["real"], "--matrix", str(path), cwd=tmp_path)
    assert back.returncode == diff.EXIT_OK and "improved (1):" in back.stdout and f"A: {run}" in back.stdout
    assert tree(path) == before  # nothing published


@pytest.mark.parametrize("content, message", [(None, "no results file"), ("{not json\n", "not valid JSON")])
def test_a_bad_results_file_is_one_clear_error(matrix, tmp_path, content, message):
    path, ids = matrix
    run = tmp_path / "run.jsonl"
    if content is not None:
        run.write_text(content)
    done = opsuite("diff", str(run), ids["real"], "--matrix", str(path), cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == "" and message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
