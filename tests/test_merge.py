"""`--shard K/N` runs joined by `opsuite merge`: equal to one run, and every bad input refused in one line."""

import gzip
import json

import pytest

from matrix_support import SELECTION, opsuite, real_cpu_results
from opsuite.matrix import MATRIX_ENV
from opsuite.results import load
from shard_support import write_part, write_results

CASES = {f"ops/{name}/float32/forward": float(number) for number, name in enumerate("abs add sub mul exp".split(), 1)}
SELECTION_IDS = sorted(CASES)
PART_1 = {c: t for c, t in CASES.items() if c.split("/")[1] in ("exp", "add", "abs")}  # 5 + 2 + 1
PART_2 = {c: t for c, t in CASES.items() if c not in PART_1}                           # 4 + 3


@pytest.fixture
def parts(tmp_path):
    return [write_part(tmp_path / "p1.jsonl", "1/2", PART_1, SELECTION_IDS),
            write_part(tmp_path / "p2.jsonl", "2/2", PART_2, SELECTION_IDS)]


def _refused(done, out, *phrases):
    """Exit 2, one line on stderr naming the problem, and no file written."""
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("opsuite: "), done.stderr
    for phrase in phrases:
        assert phrase in lines[0], lines[0]
    assert not out.exists()
    assert not list(out.parent.glob(f".{out.name}.*")), "a staged file was left behind"


def test_merged_parts_are_one_run(tmp_path, parts):
    out = tmp_path / "merged.jsonl"
    done = opsuite("merge", str(out), str(parts[1]), str(parts[0]), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    run = load(out)
    assert sorted(r.case_id for r in run.records) == SELECTION_IDS
    assert run.header["options"]["shard"] is None and "selection" not in run.header["catalog"]
    assert run.header["catalog"]["cases"] == len(CASES)
    assert [p["shard"] for p in run.header["merged_from"]] == ["1/2", "2/2"]
    assert {p["run_id"] for p in run.header["merged_from"]} == {"part-1-of-2", "part-2-of-2"}


def test_merge_refuses_a_corrupt_part(tmp_path, parts):
    with open(parts[1], "a") as handle:
        handle.write('{"kind": "case", "broken\n{"kind": "case"}\n')
    out = tmp_path / "merged.jsonl"
    _refused(opsuite("merge", str(out), *map(str, parts), cwd=tmp_path), out, "p2.jsonl:", "not valid JSON")


def test_merge_refuses_different_stacks(tmp_path, parts):
    other = write_part(tmp_path / "p2-other.jsonl", "2/2", PART_2, SELECTION_IDS, torch="2.14.0")
    out = tmp_path / "merged.jsonl"
    _refused(opsuite("merge", str(out), str(parts[0]), str(other), cwd=tmp_path), out,
             "different stacks", "stack.torch '2.13.0' vs '2.14.0'")


def test_merge_refuses_different_backends(tmp_path, parts):
    other = write_part(tmp_path / "p2-xla.jsonl", "2/2", PART_2, SELECTION_IDS, backend="xla")
    out = tmp_path / "merged.jsonl"
    _refused(opsuite("merge", str(out), str(parts[0]), str(other), cwd=tmp_path), out, "different backends")


def test_merge_refuses_another_selection(tmp_path, parts):
    other = write_results(tmp_path / "p2-bf16.jsonl", PART_2, run_id="p2b",
                          options={"shard": "2/2", "dtypes": ["bfloat16"]}, catalog={"selection": SELECTION_IDS})
    out = tmp_path / "merged.jsonl"
    _refused(opsuite("merge", str(out), str(parts[0]), str(other), cwd=tmp_path), out,
             "different selections", "option dtypes")


def test_merge_refuses_overlapping_parts(tmp_path, parts):
    out = tmp_path / "merged.jsonl"
    overlapping = write_part(tmp_path / "p2-overlap.jsonl", "2/2", {**PART_2, "ops/exp/float32/forward": 5.0},
                             SELECTION_IDS)
    _refused(opsuite("merge", str(out), str(parts[0]), str(overlapping), cwd=tmp_path), out,
             "ops/exp/float32/forward", "overlapping shards")
    twice = write_part(tmp_path / "p1-again.jsonl", "1/2", {"ops/mul/float32/forward": 4.0}, SELECTION_IDS)
    _refused(opsuite("merge", str(out), str(parts[0]), str(twice), cwd=tmp_path), out,
             "both shard 1/2", "overlapping shards")
    other_split = write_part(tmp_path / "p1-of-3.jsonl", "1/3", PART_2, SELECTION_IDS)
    _refused(opsuite("merge", str(out), str(parts[0]), str(other_split), cwd=tmp_path), out, "different splits")


def test_merge_lists_missing_cases_and_refuses_unless_allowed(tmp_path, parts):
    out = tmp_path / "merged.jsonl"
    _refused(opsuite("merge", str(out), str(parts[0]), cwd=tmp_path), out,
             "miss 2 of its cases", "ops/mul/float32/forward", "ops/sub/float32/forward", "--allow-missing")
    done = opsuite("merge", str(out), str(parts[0]), "--allow-missing", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "ops/mul/float32/forward, ops/sub/float32/forward" in done.stderr
    assert sorted(r.case_id for r in load(out).records) == sorted(PART_1)


def test_merge_refuses_a_run_that_is_not_a_shard_and_an_existing_out(tmp_path, parts):
    out = tmp_path / "merged.jsonl"
    plain = write_results(tmp_path / "plain.jsonl", CASES)
    _refused(opsuite("merge", str(out), str(plain), cwd=tmp_path), out, "not a shard")
    out.write_text("kept\n")
    done = opsuite("merge", str(out), *map(str, parts), cwd=tmp_path)
    assert done.returncode == 2 and "already exists" in done.stderr
    assert out.read_text() == "kept\n"


def test_shards_of_a_real_run_merge_into_the_plain_run(tmp_path, monkeypatch):
    """A small real cpu run, once whole and once as two shards: the merge holds the same cases with the same
    statuses, publishes like a single run and reads with `opsuite summary`."""
    monkeypatch.setenv(MATRIX_ENV, str(tmp_path / "no-matrix"))  # no snapshot: every case counts the same
    plain = load(real_cpu_results())
    parts = []
    for k in (1, 2):
        part = tmp_path / f"part{k}.jsonl"
        done = opsuite("run", "--backend", "cpu", "--kinds", "ops", "-k", SELECTION, "--shard", f"{k}/2",
                       "--results", str(part), cwd=tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr
        parts.append(load(part))
    assert [p.header["options"]["shard"] for p in parts] == ["1/2", "2/2"]
    ids = [{r.case_id for r in p.records} for p in parts]
    assert ids[0] and ids[1] and not ids[0] & ids[1]
    assert parts[0].header["catalog"]["selection"] == sorted(r.case_id for r in plain.records)
    out = tmp_path / "merged.jsonl"
    done = opsuite("merge", str(out), str(parts[0].path), str(parts[1].path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    merged = load(out)
    assert {r.case_id: r.status for r in merged.records} == {r.case_id: r.status for r in plain.records}
    summary = opsuite("summary", str(out), cwd=tmp_path)
    assert summary.returncode == 0 and f"{len(plain.records)} cases" in summary.stdout
    matrix = tmp_path / "matrix"
    published = opsuite("publish", str(out), "--matrix", str(matrix), cwd=tmp_path)
    assert published.returncode == 0, published.stderr
    snap = json.loads(next(matrix.glob("cpu/*/snapshot.json")).read_text())
    assert snap["summary"]["cases"] == len(plain.records) and len(snap["runs"]) == 1
    kept = next(matrix.glob("cpu/*/results/*.jsonl.gz"))
    assert gzip.decompress(kept.read_bytes()) == out.read_bytes()


def test_a_killed_part_is_merged_only_with_allow_missing(tmp_path, parts):
    """A part whose last line was torn (its host died mid-write): the case is missing, and said so."""
    text = parts[1].read_text()
    parts[1].write_text(text[:-25])  # the last case line cut short, without its newline
    out = tmp_path / "merged.jsonl"
    _refused(opsuite("merge", str(out), *map(str, parts), cwd=tmp_path), out, "miss 1 of its cases")
    done = opsuite("merge", str(out), *map(str, parts), "--allow-missing", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "torn last line dropped" in done.stderr and len(load(out).records) == len(CASES) - 1
