"""Caveats (`opsuite/matrix/caveats.py`): a maintainer's words about a snapshot's cells, shown on its page and
by `opsuite lookup`, checked against the snapshot's cells, and gone when the stack is re-run."""

import json
import re
import shutil

import pytest
from matrix_support import edited_copy, opsuite, real_cpu_results

from opsuite.matrix import MatrixError, caveats, publish, snapshot

TIES = "ops/add/bfloat16/*"


def _write(directory, items):
    (directory / caveats.FILE).write_text(json.dumps({"format": "opsuite-caveats", "schema_version": 1,
                                                     "caveats": items}))


@pytest.fixture
def published(tmp_path):
    matrix = tmp_path / "matrix"
    matrix.mkdir()
    snap = publish.publish([real_cpu_results()], matrix)
    return matrix, snap


def test_a_caveat_marks_its_cells_on_the_page_and_in_lookup(published, tmp_path):
    matrix, snap = published
    _write(snap.path, [{"cases": [TIES], "reason": "judged before the selection rule"}])
    done = opsuite("reindex", "--matrix", str(matrix), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    page = (snap.path / "README.md").read_text()
    assert "## Caveats" in page and "1. judged before the selection rule (2 cells: `ops/add/bfloat16/backward`, " \
                                   "`ops/add/bfloat16/forward`)" in page
    row = next(line for line in page.splitlines() if line.startswith("| ops/add "))
    assert row.count("(caveat 1)") == 2  # the two bfloat16 cells, not the float32 ones
    html = (snap.path / "index.html").read_text()
    assert '<ol id="caveats">\n<li>judged before the selection rule (2 cells: ' in html
    assert html.count("<li>caveat 1: judged before the selection rule</li>") == 2

    answer = json.loads(opsuite("lookup", "add", "--json", "--matrix", str(matrix), cwd=tmp_path).stdout)
    cells = answer["answer"][0]["cells"]
    assert {(c["dtype"], c["direction"]): c.get("caveats") for c in cells} == {
        ("float32", "forward"): None, ("float32", "backward"): None,
        ("bfloat16", "forward"): ["judged before the selection rule"],
        ("bfloat16", "backward"): ["judged before the selection rule"]}
    text = opsuite("lookup", "add", "--matrix", str(matrix), cwd=tmp_path).stdout
    assert "caveat 1: judged before the selection rule" in text and text.count("(caveat 1)") == 2


def test_the_cells_themselves_are_unchanged(published, tmp_path):
    matrix, snap = published
    before = (snap.path / snapshot.FILE).read_bytes()
    _write(snap.path, [{"cases": ["ops/*"], "reason": "every op"}])
    assert opsuite("reindex", "--matrix", str(matrix), cwd=tmp_path).returncode == 0
    assert (snap.path / snapshot.FILE).read_bytes() == before


@pytest.mark.parametrize("items, message", [
    ([{"cases": ["ops/nonexistent/*"], "reason": "typo"}], "the pattern 'ops/nonexistent/*' matches no cell"),
    ([{"cases": ["../x"], "reason": "path"}], "bad caveats at caveats/0/cases/0"),
    ([{"cases": [TIES]}], "'reason' is a required property"),
    ([], "bad caveats at caveats"),
])
def test_a_bad_caveats_file_is_refused_with_one_line_and_nothing_changes(published, tmp_path, items, message):
    matrix, snap = published
    _write(snap.path, items)
    page = (snap.path / "README.md").read_text()
    index = (matrix / "index.json").read_text()
    with pytest.raises(MatrixError, match=re.escape(message)):
        snapshot.load(snap.path)
    done = opsuite("reindex", "--matrix", str(matrix), cwd=tmp_path)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr
    assert (snap.path / "README.md").read_text() == page and (matrix / "index.json").read_text() == index


def test_a_corrupt_caveats_file_is_one_line(published, tmp_path):
    matrix, snap = published
    (snap.path / caveats.FILE).write_text("{not json")
    done = opsuite("lookup", "add", "--matrix", str(matrix), cwd=tmp_path)
    assert done.returncode == 0  # lookup reads the index, which is unchanged
    done = opsuite("reindex", "--matrix", str(matrix), cwd=tmp_path)
    assert done.returncode == 2 and "caveats.json: not valid JSON" in done.stderr


def test_a_re_run_published_in_its_place_drops_the_caveats(published, tmp_path):
    matrix, snap = published
    _write(snap.path, [{"cases": [TIES], "reason": "judged before the selection rule"}])
    rerun = edited_copy(real_cpu_results(), tmp_path / "rerun.jsonl")
    shutil.copy(rerun, tmp_path / "rerun-copy.jsonl")
    again = publish.publish([tmp_path / "rerun-copy.jsonl"], matrix, replace=True)
    assert again.path == snap.path and not (snap.path / caveats.FILE).exists() and again.caveats == []
    assert "## Caveats" not in (snap.path / "README.md").read_text()
