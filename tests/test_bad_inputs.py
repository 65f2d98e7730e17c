"""The corpus of bad inputs and faults (issue 12): each gets one clear line and a non-zero exit, and leaves a
matrix (a temp copy of the repository's) and the results already recorded as they were. What can be
forgiven (a torn last line, gzip, a newer minor version's fields) loads, with a warning that says so.
"""

import errno
import gzip
import hashlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from opsuite import results as results_module
from opsuite.matrix import publish
from opsuite.record import CaseRecord, Stage, Status
from opsuite.results import SCHEMA_MINOR, ResultsError, ResultsWriter, load

ROOT = Path(__file__).resolve().parent.parent
# A real run's file: the smallest the published inductor snapshot keeps (its name changes with each re-run).
SOURCE = min(ROOT.glob("matrix/inductor/*/results/*.jsonl.gz"), key=lambda path: path.stat().st_size)


def _opsuite(*args, cwd, env=None, **kwargs):
    return subprocess.run([sys.executable, "-m", "opsuite.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env={**os.environ, **(env or {})}, **kwargs)


def _tree(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()} | \
           {str(p.relative_to(directory)) + "/": "" for p in directory.rglob("*") if p.is_dir()}


@pytest.fixture(scope="module")
def matrix(tmp_path_factory) -> Path:
    copy = tmp_path_factory.mktemp("bad-inputs") / "matrix"
    shutil.copytree(ROOT / "matrix", copy)
    return copy


def _lines() -> list[str]:
    return gzip.decompress(SOURCE.read_bytes()).decode().splitlines()


def _edit(line: str, **fields) -> str:
    obj = json.loads(line)
    obj.update(fields)
    return json.dumps(obj)


def _numerics_nan(lines):
    number = next(n for n, line in enumerate(lines) if json.loads(line).get("numerics"))
    obj = json.loads(lines[number])
    obj["numerics"]["max_abs_err"] = float("nan")
    return lines[:number] + [json.dumps(obj)] + lines[number + 1:], number + 1  # json.dumps writes NaN


def _mismatched_backend(lines):
    return [_edit(lines[0], backend="cpu")] + lines[1:], 2


# (name, lines of the bad file from the real ones -> (bytes, line number or None), the words of the error)
CORPUS = [
    ("backend-dotdot", lambda l: [_edit(l[0], backend="..")] + l[1:], ":1: bad header: backend: '..' does not match"),
    ("backend-dot", lambda l: [_edit(l[0], backend=".")] + l[1:], ":1: bad header: backend: '.' does not match"),
    ("backend-hidden", lambda l: [_edit(l[0], backend=".hidden")] + l[1:],
     ":1: bad header: backend: '.hidden' does not match"),
    ("backend-javascript", lambda l: [_edit(l[0], backend="javascript:alert(1)//")] + l[1:],
     ":1: bad header: backend: 'javascript:alert(1)//' does not match"),
    ("run-id-path", lambda l: [_edit(l[0], run_id="../../x")] + l[1:], ":1: bad header: run_id: '../../x' does not match"),
    ("case-id-path", lambda l: l[:1] + [_edit(l[1], case_id="ops/../float32/forward")] + l[2:],
     ":2: bad case record: case_id: 'ops/../float32/forward' does not match"),
    ("broken-middle-line", lambda l: l[:1] + [l[1][:-40]] + l[2:], ":2: not valid JSON"),
    ("not-a-json-object", lambda l: l[:1] + ["[1, 2]"] + l[1:], ":2: expected a JSON object"),
    ("nan", lambda l: _numerics_nan(l)[0], ": NaN is not a number a results file may hold"),
    ("infinity", lambda l: l[:1] + [l[1].replace('"wall_s": ', '"wall_s": Infinity, "x": ', 1)] + l[2:],
     ":2: Infinity is not a number a results file may hold"),
    ("newer-major", lambda l: [_edit(l[0], schema_version=2)] + l[1:],
     ": written with results schema version 2 by a newer opsuite; this opsuite reads version 1"),
    ("version-as-text", lambda l: [_edit(l[0], schema_version="1")] + l[1:], ": schema version '1' is not supported"),
    ("duplicate-case", lambda l: l + [l[1]], f": case {json.loads(_lines()[1])['case_id']} is recorded twice "
                                             f"(first at line 2)"),
    ("case-of-another-backend", lambda l: _mismatched_backend(l)[0],
     ":2: a case of backend 'inductor' under a header of backend 'cpu'"),
    ("case-of-another-run", lambda l: l + [_edit(l[1], run_id="other-run", case_id="ops/zzz/float32/forward")],
     ": case belongs to run 'other-run'"),
    ("no-header", lambda l: l[1:], ":1: the first line must be the run header"),
    ("empty", lambda l: [], ": empty results file (no complete header)"),
    ("torn-header-only", lambda l: [l[0][:50]], ": empty results file (no complete header)"),
]


@pytest.mark.parametrize("name, make, message", CORPUS, ids=[c[0] for c in CORPUS])
def test_bad_results_files_get_one_line_and_change_nothing(tmp_path, matrix, name, make, message):
    bad = tmp_path / f"{name}.jsonl"
    lines = make(_lines())
    text = "\n".join(lines) + ("\n" if lines and name != "torn-header-only" else "")
    bad.write_text(text)
    before = _tree(matrix)
    for command in (["summary", str(bad)], ["publish", str(bad), "--matrix", str(matrix), "--replace"]):
        done = _opsuite(*command, cwd=tmp_path)
        assert done.returncode == 2, (command, done.stdout, done.stderr)
        assert done.stderr.strip().splitlines() == [done.stderr.strip()]  # one line
        assert done.stderr.startswith(f"opsuite: {bad}") and message in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
    assert _tree(matrix) == before
    assert bad.read_text() == text


def test_non_utf8_bytes_get_one_line(tmp_path, matrix):
    lines = [line.encode() for line in _lines()]
    lines[3] = lines[3].replace(b'"pass"', b'"pa\xffss"', 1) if b'"pass"' in lines[3] else lines[3][:-1] + b"\xff}"
    bad = tmp_path / "latin.jsonl"
    bad.write_bytes(b"\n".join(lines) + b"\n")
    before = _tree(matrix)
    done = _opsuite("publish", str(bad), "--matrix", str(matrix), cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip() == f"opsuite: {bad}:4: " + done.stderr.strip().split(":4: ", 1)[1]
    assert "not UTF-8 text (byte 0xff at column" in done.stderr
    assert _tree(matrix) == before


def test_damaged_gzip_and_missing_files(tmp_path):
    packed = gzip.compress(("\n".join(_lines()) + "\n").encode())
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(packed[:len(packed) // 2])
    done = _opsuite("summary", str(cut), cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.strip().startswith(f"opsuite: {cut}: a damaged gzip file")
    done = _opsuite("summary", str(tmp_path / "nope.jsonl"), cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip() == f"opsuite: {tmp_path / 'nope.jsonl'}: cannot read results file: No such file or directory"


# ---------------------------------------------------------------- what is forgiven, and said

def test_torn_last_line_is_dropped_with_a_warning(tmp_path):
    lines = _lines()
    torn = tmp_path / "torn.jsonl"
    torn.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:-25])  # a writer killed mid-line
    run = load(torn)
    assert len(run.records) == len(lines) - 2
    assert run.warnings == [f"{torn}:{len(lines)}: torn last line dropped (an interrupted write); "
                            f"{len(lines) - 2} finished cases before it are loaded"]
    done = _opsuite("summary", str(torn), cwd=tmp_path)
    assert done.returncode == 0 and f"opsuite: warning: {run.warnings[0]}" in done.stderr


def test_gzip_and_plain_files_read_alike(tmp_path):
    plain = tmp_path / "r.jsonl"
    plain.write_text("\n".join(_lines()) + "\n")
    assert load(SOURCE).records == load(plain).records
    done = _opsuite("summary", str(SOURCE), cwd=tmp_path)
    assert done.returncode == 0, done.stderr


def test_newer_minor_version_fields_are_ignored_with_a_warning(tmp_path):
    lines = _lines()
    newer = [_edit(lines[0], schema_minor=7, new_header_field={"a": 1})]
    for line in lines[1:]:
        obj = json.loads(line)
        obj["per_sample"] = [{"sample": 0, "max_abs_err": 0.0}]  # a field a newer writer adds
        if obj.get("failure"):
            obj["failure"]["hint"] = "new"
        if obj.get("numerics"):
            obj["numerics"]["ulp_err"] = 1.0
        newer.append(json.dumps(obj))
    path = tmp_path / "newer.jsonl"
    path.write_text("\n".join(newer) + "\n")
    run = load(path)  # no TypeError: Failure.__init__() got an unexpected keyword argument
    assert [r.to_json() for r in run.records] == [r.to_json() for r in load(SOURCE).records]
    assert run.warnings == [f"{path}: written with results schema 1.7, newer than the 1.{SCHEMA_MINOR} this opsuite "
                            f"knows: fields it does not know are ignored"]


# ---------------------------------------------------------------- writers

def _header():
    return {"run_id": "r1", "backend": "cpu", "started_at": "2026-01-01T00:00:00+00:00", "stack": {}, "env": {},
            "host": {}, "opsuite": {"version": "0", "commit": "x"}, "catalog": {"op_db_size": 0}, "options": {}}


def _record(name):
    return CaseRecord(case_id=f"ops/{name}/float32/forward", status=Status.PASS, stage=Stage.DONE, backend="cpu")


def test_a_partial_write_is_cut_off_and_reported(tmp_path, monkeypatch):
    path = tmp_path / "r.jsonl"
    writer = ResultsWriter(path, _header)
    writer.append(_record("add"), "r1")
    writer.append(_record("sub"), "r1")
    kept = path.read_bytes()
    real_write = os.write

    def full_disk(fd, data):  # half the line reaches the file, then the disk is full
        if len(data) > 20:
            return real_write(fd, data[:len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(results_module.os, "write", full_disk)
    with pytest.raises(ResultsError) as info:
        writer.append(_record("mul"), "r1")
    assert str(info.value) == (f"{path}: cannot write results: No space left on device; the cases recorded "
                               f"before are kept")
    assert path.read_bytes() == kept
    monkeypatch.undo()
    assert [r.case_id for r in load(path).records] == ["ops/add/float32/forward", "ops/sub/float32/forward"]


def test_a_file_of_another_run_is_never_appended_to(tmp_path):
    path = tmp_path / "r.jsonl"
    ResultsWriter(path, _header).append(_record("add"), "r1")
    kept = path.read_bytes()
    with pytest.raises(ResultsError, match="holds run 'r1', not this run 'r2'; a results file is never appended"):
        ResultsWriter(path, _header).append(_record("sub"), "r2")
    assert path.read_bytes() == kept


def _limit_file_size(limit):
    def limit_it():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return limit_it


def test_a_full_disk_ends_the_run_with_one_line_and_keeps_every_finished_case(tmp_path):
    # RLIMIT_FSIZE stands in for a full disk: the write that crosses it is partial, the next one fails.
    results = tmp_path / "full.jsonl"
    # The header is some 6 kB (with OpInfo's alias table), a case line under 1 kB: 12 kB holds a few cases.
    done = _opsuite("run", "--backend", "cpu", "--dtypes", "float32", "-k", " or ".join(
        f"ops/{op}/" for op in ("add", "sub", "mul", "div", "exp", "sin", "cos", "tan", "abs", "neg", "sqrt")),
                    "--results", str(results), cwd=tmp_path, preexec_fn=_limit_file_size(12000),
                    # The limit holds for every file the process writes: bytecode it caches on first import
                    # in a fresh environment would be cut at 12 kB and break later imports there.
                    env={"PYTHONDONTWRITEBYTECODE": "1"})
    assert done.returncode == 6, done.stdout + done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"opsuite: the run stopped: {results} could not be written; the cases finished before are kept "
        f"(continue with --resume {results} once there is room)")
    run = load(results)
    assert run.warnings == [] and 0 < len(run.records) < 22  # 11 ops, forward and backward
    assert results.read_bytes().endswith(b"\n")


def test_pytest_refuses_to_append_a_second_run(tmp_path):
    existing = tmp_path / "r.jsonl"
    existing.write_text("\n".join(_lines()) + "\n")
    kept = existing.read_bytes()
    done = subprocess.run([sys.executable, "-m", "pytest", str(ROOT / "cases"), "--rootdir", str(ROOT), "--backend",
                           "cpu", "-k", "ops/add/float32/forward", "--results", str(existing)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 4  # pytest's usage error
    assert (f"ERROR: {existing} already holds a run; a results file is never appended to by a second run: give a "
            f"new file, or continue that run with --resume {existing}") in done.stderr
    assert existing.read_bytes() == kept


# ---------------------------------------------------------------- options

@pytest.mark.parametrize("args, message", [
    (["--dtypes", "float32,bf16"], "unknown dtype 'bf16'; known: float32, bfloat16, float16, int32, int64, bool"),
    (["--dtypes", "float33"], "unknown dtype 'float33'; known: float32, bfloat16"),
    (["--directions", "forward,sideways"], "unknown direction 'sideways'; known: forward, backward, train"),
    (["--kinds", "ops,nope"], "unknown case kind 'nope'; known: ops, blocks, models"),
    (["--case-timeout", "-5"], "--case-timeout must be a positive number of seconds, not -5"),
    (["--case-timeout", "inf"], "--case-timeout must be a positive number of seconds, not inf"),
    (["-n", "-1"], "-n must be a number of workers or 'auto', not '-1'"),
    (["--samples", "-2"], "--samples must be a positive number or 'all', not '-2'"),
    (["--backend", ".."], "unknown backend '..'; known backends: cpu"),
    (["--resume", "nope.jsonl"], "nope.jsonl: cannot read results file: No such file or directory"),
])
def test_bad_options_name_the_value_and_run_nothing(tmp_path, args, message):
    done = _opsuite("run", *(["--backend", "cpu"] if "--backend" not in args else []), *args, cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.strip().splitlines() == [done.stderr.strip()] and message in done.stderr, done.stderr
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("args, message", [
    (["--dtypes", "bf16"], "unknown dtype 'bf16'"),
    (["--case-timeout", "-5"], "--case-timeout must be a positive number"),
    (["--directions", "up"], "unknown direction 'up'"),
])
def test_pytest_checks_options_too(tmp_path, args, message):
    done = subprocess.run([sys.executable, "-m", "pytest", str(ROOT / "cases" / "test_ops.py"), "--rootdir", str(ROOT),
                           "--backend", "cpu", *args], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 4 and f"ERROR: {message}" in done.stderr, done.stdout + done.stderr


# ---------------------------------------------------------------- where the matrix is

def test_publish_from_outside_a_checkout_must_name_its_matrix(tmp_path):
    plain = tmp_path / "r.jsonl"
    plain.write_text("\n".join(_lines()) + "\n")
    before = _tree(ROOT / "matrix")
    done = _opsuite("publish", str(plain), cwd=tmp_path, env={"OPSUITE_MATRIX": ""})
    assert done.returncode == 2
    assert done.stderr.strip() == (f"opsuite: no matrix/ (with an index.json) in {tmp_path} or above it; run from an "
                                   f"opsuite checkout, or name one with --matrix DIR or OPSUITE_MATRIX=DIR")
    assert _tree(ROOT / "matrix") == before
    # OPSUITE_MATRIX names it.
    done = _opsuite("publish", str(plain), cwd=tmp_path, env={"OPSUITE_MATRIX": str(tmp_path / "m1")})
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "m1" / "index.json").is_file()


def test_the_matrix_is_found_from_the_working_directory(tmp_path, monkeypatch):
    from opsuite.matrix import DEFAULT_MATRIX, MatrixError, find_matrix

    monkeypatch.delenv("OPSUITE_MATRIX", raising=False)
    checkout = tmp_path / "checkout"
    (checkout / "matrix").mkdir(parents=True)
    (checkout / "matrix" / "index.json").write_text("{}")
    (checkout / "cases" / "deep").mkdir(parents=True)
    monkeypatch.chdir(checkout / "cases" / "deep")  # any directory of the checkout
    assert find_matrix() == find_matrix(write=True) == checkout / "matrix"
    assert find_matrix(tmp_path / "given") == tmp_path / "given"  # --matrix
    monkeypatch.setenv("OPSUITE_MATRIX", str(tmp_path / "env"))
    assert find_matrix() == tmp_path / "env" and find_matrix(tmp_path / "given") == tmp_path / "given"
    monkeypatch.delenv("OPSUITE_MATRIX")
    monkeypatch.chdir(tmp_path)  # outside any checkout: readers fall back to the package's matrix, writers refuse
    assert find_matrix() == DEFAULT_MATRIX
    with pytest.raises(MatrixError, match=r"no matrix/ \(with an index.json\) in"):
        find_matrix(write=True)


def test_publish_cleans_a_killed_publish_leftovers(tmp_path):
    matrix = tmp_path / "matrix"
    plain = tmp_path / "r.jsonl"
    plain.write_text("\n".join(_lines()) + "\n")
    leftover = matrix / ".publish-killed"
    (leftover / "snapshot").mkdir(parents=True)
    (leftover / "snapshot" / "snapshot.json").write_text("{half")
    kept = matrix / ".publish-undo-failed"
    kept.mkdir()
    (kept / publish.KEEP_MARKER).write_text("")
    publish.publish([plain], matrix)
    assert not leftover.exists()
    assert kept.exists()  # the only copy of what a failed undo could not put back
    assert sorted(p.name for p in matrix.glob(".publish-*")) == [".publish-undo-failed"]


def test_the_package_matrix_is_read_only_from_elsewhere(tmp_path, monkeypatch):
    from opsuite.matrix import DEFAULT_MATRIX, MatrixError, check_writable

    monkeypatch.delenv("OPSUITE_MATRIX", raising=False)
    monkeypatch.chdir(tmp_path)  # e.g. --update-baseline of a baseline found through the readers' fallback
    with pytest.raises(MatrixError, match="read-only from"):
        check_writable(DEFAULT_MATRIX)
    assert check_writable(tmp_path / "matrix") == tmp_path / "matrix"
    monkeypatch.chdir(DEFAULT_MATRIX.parent)  # from its own checkout it is the checkout's matrix
    assert check_writable(DEFAULT_MATRIX) == DEFAULT_MATRIX
