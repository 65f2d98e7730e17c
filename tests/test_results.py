"""The results store: lines appended at once, a versioned schema, and clear errors for bad files."""

import json
import multiprocessing

import pytest

from opsuite.record import CaseRecord, Failure, Numerics, Stage, Status, Verdict
from opsuite.results import SCHEMA_VERSION, ResultsError, ResultsWriter, load


def _header():
    return {"run_id": "r1", "backend": "cpu", "started_at": "2026-01-01T00:00:00+00:00",
            "stack": {"torch": "2.13.0"}, "env": {}, "host": {}, "opsuite": {"version": "0", "commit": "x"},
            "catalog": {"op_db_size": 1}, "options": {}}


def _record(case_id="ops/add/float32/forward", status=Status.PASS):
    return CaseRecord(case_id=case_id, status=status, stage=Stage.DONE, backend="cpu", samples_run=2,
                      numerics=Numerics(verdict=Verdict.CLOSE, max_abs_err=0.0, ratio=1.0),
                      failure=Failure(error_type="E", message="m") if status is not Status.PASS else None)


def test_round_trip(tmp_path):
    path = tmp_path / "r.jsonl"
    writer = ResultsWriter(path, _header)
    writer.append(_record(), "r1")
    writer.append(_record("ops/sub/float32/forward", Status.RUNTIME_ERROR), "r1")
    run = load(path)
    assert run.header["schema_version"] == SCHEMA_VERSION
    assert [r.case_id for r in run.records] == ["ops/add/float32/forward", "ops/sub/float32/forward"]
    assert run.records[0] == _record()
    assert run.records[1].failure.message == "m"
    assert run.lines == {"ops/add/float32/forward": 2, "ops/sub/float32/forward": 3}


def _append_many(path, start):
    writer = ResultsWriter(path, _header)
    for i in range(start, start + 50):
        writer.append(_record(f"ops/op{i}/float32/forward"), "r1")


def test_parallel_writers_share_one_file(tmp_path):
    path = tmp_path / "r.jsonl"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(path, k * 50)) for k in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    run = load(path)
    assert len(run.records) == 150
    assert len({r.case_id for r in run.records}) == 150
    assert sum(1 for line in path.read_text().splitlines() if '"kind": "header"' in line) == 1


@pytest.mark.parametrize("mangle, message", [
    (lambda lines: lines[:1] + ['{"kind": "case", "run_id": "r1", "case_'] + lines[1:], "not valid JSON"),
    (lambda lines: lines[1:], "first line must be the run header"),
    (lambda lines: [lines[0].replace('"schema_version": 1', '"schema_version": 99')] + lines[1:],
     "schema version 99 by a newer opsuite"),
    (lambda lines: lines + [lines[1].replace('"pass"', '"great"')], "bad case record"),
    (lambda lines: lines + [lines[1].replace('"run_id": "r1"', '"run_id": "other"')], "belongs to run"),
    (lambda lines: [], "empty results file"),
])
def test_bad_files_get_one_clear_error(tmp_path, mangle, message):
    path = tmp_path / "r.jsonl"
    ResultsWriter(path, _header).append(_record(), "r1")
    lines = path.read_text().splitlines()
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(mangle(lines)) + "\n")
    with pytest.raises(ResultsError, match=message) as info:
        load(bad)
    assert str(bad) in str(info.value)
    assert path.read_text().splitlines() == lines  # nothing recorded was touched


def test_missing_file(tmp_path):
    with pytest.raises(ResultsError, match="cannot read"):
        load(tmp_path / "nope.jsonl")


def test_records_are_plain_json(tmp_path):
    path = tmp_path / "r.jsonl"
    ResultsWriter(path, _header).append(_record(), "r1")
    case = json.loads(path.read_text().splitlines()[1])
    assert case["status"] == "pass" and case["numerics"]["verdict"] == "close"
