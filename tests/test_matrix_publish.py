"""`opsuite publish`: snapshots from real cpu results, traceability, the index, refusals, atomicity."""

import gzip
import hashlib
import json
import os
from pathlib import Path

import pytest
from matrix_support import edited_copy, failing, opsuite, real_cpu_results, tree

from opsuite.matrix import MatrixError, index, op_cells, publish, render_html, snapshot


@pytest.fixture
def results():
    return real_cpu_results()


def _one_line_error(done, exit_code=2):
    assert done.returncode == exit_code, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


def _row(markdown, start):
    """The cells of the Markdown table row that starts with `start`."""
    line = next(line for line in markdown.splitlines() if line.startswith(start))
    return [cell.strip() for cell in line.strip("|").split(" | ")]


def test_publish_makes_a_traceable_snapshot(tmp_path, results):
    matrix = tmp_path / "matrix"
    done = opsuite("publish", str(results), "--matrix", str(matrix), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    [snap] = snapshot.load_all(matrix)
    torch_version = json.loads(results.read_text().splitlines()[0])["stack"]["torch"]
    assert snap.path == matrix / "cpu" / snap.data["key"] and snap.data["key"].startswith(f"torch-{torch_version}__")
    assert snap.id in done.stdout
    # The results file is kept with the snapshot, compressed, byte for byte.
    [run] = snap.data["runs"]
    kept = gzip.decompress((snap.path / run["file"]).read_bytes())
    assert kept == results.read_bytes() and run["sha256"] == hashlib.sha256(kept).hexdigest()
    # Every cell leads back to its own line of that file.
    lines = kept.decode().splitlines()
    assert len(snap.cells) == len(lines) - 1 > 4
    for case_id, cell in snap.cells.items():
        line = json.loads(lines[cell["source"]["line"] - 1])
        assert line["case_id"] == case_id and line["status"] == cell["status"]
        assert cell["source"] == {"file": run["file"], "line": cell["source"]["line"], "run_id": line["run_id"]}
    statuses = {c["status"] for c in snap.cells.values()}
    assert {"pass", "skip"} <= statuses
    applicable = sum(c["status"] != "skip" for c in snap.cells.values())
    passed = sum(c["status"] == "pass" for c in snap.cells.values())
    assert snap.data["summary"]["pass_pct"] == round(100 * passed / applicable, 2)


def test_snapshot_pages_and_index(tmp_path, results):
    matrix = tmp_path / "matrix"
    snap = publish.publish([results], matrix)
    page = (snap.path / "README.md").read_text()
    assert "## Summary by category and status" in page and "| ops: torch " in page
    header = next(line for line in page.splitlines() if line.startswith("| subject"))
    assert "float32 forward" in header and "bfloat16 backward" in header
    add_row = next(line for line in page.splitlines() if line.startswith("| ops/add "))
    line = snap.cells["ops/add/float32/forward"]["source"]["line"]
    assert "**pass** 2 samples; ratio" in add_row and f"⟨1:{line}⟩" in add_row
    skip_row = next(line for line in page.splitlines() if line.startswith("| ops/jiterator\\_unary"))
    assert "**skip**" in skip_row
    op_db_size = json.loads(results.read_text().splitlines()[0])["catalog"]["op_db_size"]
    run_row = _row(page, "|   1 |")
    assert run_row[5] == f"ops; op\\_db {op_db_size} entries"  # the catalog the run's cases came from
    assert f"<td>ops; op_db {op_db_size} entries</td>" in (snap.path / "index.html").read_text()
    index_md = (matrix / "README.md").read_text()
    assert f"({snap.backend}/{snap.data['key']}/README.md)" in index_md
    row = _row(index_md, f"| [{snap.data['label']}]")
    assert row[2:6] == [str(len(snap.cells)), "2", f"{snap.data['summary']['pass_pct']:.1f}",
                        str(snap.data["summary"]["counts"]["pass"])]  # 2: the samples per case the run was given
    lookup_index = index.load(matrix)
    assert lookup_index["snapshots"][0]["id"] == snap.id
    assert lookup_index["subjects"]["ops/add"]["0"]["float32/forward"][0] == "pass"
    assert "ops/add" in lookup_index["aten"]["aten::add.Tensor"]
    assert "float32/forward" in lookup_index["subjects"].line("ops/add")[2]["aten::add.Tensor"]
    assert (snap.path / "index.html").is_file() and (matrix / "index.html").is_file()


def test_the_index_says_how_many_samples_per_case_each_snapshot_ran(tmp_path, results):
    # A snapshot joined from a 2-sample run and an every-sample run of the same stack says both.
    add = edited_copy(results, tmp_path / "add.jsonl", keep=lambda c: c["case_id"].startswith("ops/add/"))
    rest = edited_copy(results, tmp_path / "rest.jsonl", keep=lambda c: not c["case_id"].startswith("ops/add/"))
    objs = [json.loads(raw) for raw in rest.read_text().splitlines()]
    for obj in objs:
        obj["run_id"] = "every-sample"
    objs[0]["options"]["samples"] = "all"
    rest.write_text("".join(json.dumps(obj) + "\n" for obj in objs))
    matrix = tmp_path / "matrix"
    snap = publish.publish([add, rest], matrix)
    assert snap.samples == "2, all"
    assert _row((matrix / "README.md").read_text(), f"| [{snap.data['label']}]")[3] == "2, all"
    assert '<td class="num">2, all</td>' in (matrix / "index.html").read_text()


def test_results_of_two_stacks_or_backends_are_refused(tmp_path, results):
    matrix = tmp_path / "matrix"
    publish.publish([results], matrix)
    before = tree(matrix)
    other = edited_copy(results, tmp_path / "other-torch.jsonl", torch="9.9.9")
    message = _one_line_error(opsuite("publish", str(results), str(other), "--matrix", str(matrix), cwd=tmp_path))
    assert "different stacks" in message and "stack.torch" in message and "'9.9.9'" in message

    lines = [json.loads(raw) for raw in results.read_text().splitlines()]
    for obj in lines:  # a whole run of another backend (header and case lines)
        obj["backend"] = "xla"
    xla = tmp_path / "xla.jsonl"
    xla.write_text("".join(json.dumps(obj) + "\n" for obj in lines))
    message = _one_line_error(opsuite("publish", str(results), str(xla), "--matrix", str(matrix), cwd=tmp_path))
    assert "different backends" in message and "cpu" in message and "xla" in message
    assert tree(matrix) == before


def test_bad_results_files_are_refused_and_destroy_nothing(tmp_path, results):
    matrix = tmp_path / "matrix"
    publish.publish([results], matrix)
    before = tree(matrix)
    text = results.read_text()
    corrupt = tmp_path / "corrupt.jsonl"
    head, second, rest = text.split("\n", 2)
    corrupt.write_text(f"{head}\n{second[:-30]}\n{rest}")  # a broken line that is not the last (torn) one
    message = _one_line_error(opsuite("publish", str(corrupt), "--matrix", str(matrix), "--replace", cwd=tmp_path))
    assert f"{corrupt}:" in message and "not valid JSON" in message
    future = tmp_path / "future.jsonl"
    future.write_text(text.replace('"schema_version": 1', '"schema_version": 7', 1))
    assert "schema version 7 by a newer opsuite" in _one_line_error(
        opsuite("publish", str(future), "--matrix", str(matrix), cwd=tmp_path))
    missing = _one_line_error(opsuite("publish", str(tmp_path / "nope.jsonl"), "--matrix", str(matrix), cwd=tmp_path))
    assert "cannot read results file" in missing
    twice = _one_line_error(opsuite("publish", str(results), str(results), "--matrix", str(matrix), cwd=tmp_path))
    assert "recorded twice" in twice
    assert tree(matrix) == before


def test_republishing_needs_replace_and_may_not_lose_cases(tmp_path, results):
    matrix = tmp_path / "matrix"
    publish.publish([results], matrix)
    before = tree(matrix)
    message = _one_line_error(opsuite("publish", str(results), "--matrix", str(matrix), cwd=tmp_path))
    assert "already published" in message and "--replace" in message
    lines = results.read_text().splitlines()
    partial = tmp_path / "partial.jsonl"
    partial.write_text("\n".join(lines[:-1]) + "\n")
    message = _one_line_error(opsuite("publish", str(partial), "--matrix", str(matrix), "--replace", cwd=tmp_path))
    assert "would drop 1 of its cases" in message
    assert tree(matrix) == before
    changed = edited_copy(results, tmp_path / "rerun.jsonl", case=failing("ops/add/float32/forward"))
    done = opsuite("publish", str(changed), "--matrix", str(matrix), "--replace", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    [snap] = snapshot.load_all(matrix)
    assert snap.cells["ops/add/float32/forward"]["status"] == "runtime_error"
    assert [r["source_name"] for r in snap.data["runs"]] == ["rerun.jsonl"]


@pytest.mark.parametrize("where", ["rendering", "moving into place"])
def test_a_failed_publish_leaves_the_matrix_as_it_was(tmp_path, results, monkeypatch, where):
    matrix = tmp_path / "matrix"
    publish.publish([results], matrix)
    before = tree(matrix)
    newer = edited_copy(results, tmp_path / "newer.jsonl", torch="99.0.0")
    if where == "rendering":
        def broken(*args, **kwargs):
            raise RuntimeError("injected failure")
        monkeypatch.setattr(render_html, "index_files", broken)
    else:
        real_rename = os.rename
        failed = []

        def rename(src, dst):  # fail the last move, once: the new snapshot and README are in place by then
            if Path(dst) == matrix / "index.html" and Path(src).name == "new-index.html" and not failed:
                failed.append(dst)
                raise OSError("injected failure")
            real_rename(src, dst)
        monkeypatch.setattr(publish.os, "rename", rename)
    with pytest.raises((RuntimeError, OSError), match="injected failure"):
        publish.publish([newer], matrix)
    assert tree(matrix) == before
    assert not [p for p in matrix.iterdir() if p.name.startswith(".")]  # no staging left behind
    assert len(snapshot.load_all(matrix)) == 1
    assert where == "rendering" or failed  # the failure struck where it was meant to


def test_corrupt_or_foreign_snapshots_are_one_clear_error(tmp_path, results):
    matrix = tmp_path / "matrix"
    snap = publish.publish([results], matrix)
    file = snap.path / "snapshot.json"
    data = json.loads(file.read_text())
    data["schema_version"] = 2
    file.write_text(json.dumps(data))
    with pytest.raises(MatrixError, match="snapshot schema version 2 is not supported"):
        snapshot.load(snap.path)
    data["schema_version"] = 1
    del data["cells"]["ops/add/float32/forward"]["status"]
    file.write_text(json.dumps(data))
    with pytest.raises(MatrixError, match="bad snapshot: cells/ops/add/float32/forward: 'status' is a required"):
        snapshot.load(snap.path)
    file.write_text("{")
    before = tree(matrix)
    message = _one_line_error(opsuite("publish", str(results), "--matrix", str(matrix), cwd=tmp_path))
    assert str(file) in message and "corrupt" in message
    assert tree(matrix) == before


def test_an_undo_that_fails_too_keeps_the_old_files_and_says_where(tmp_path, results, monkeypatch):
    matrix = tmp_path / "matrix"
    publish.publish([results], matrix)
    before = tree(matrix)
    newer = edited_copy(results, tmp_path / "newer.jsonl", torch="99.0.0")
    real_rename = os.rename

    def rename(src, dst):  # matrix/index.html can be neither replaced nor put back
        if Path(dst) == matrix / "index.html":
            raise OSError("injected failure")
        real_rename(src, dst)
    monkeypatch.setattr(publish.os, "rename", rename)
    with pytest.raises(publish.UndoError, match="could not be fully undone") as failure:
        publish.publish([newer], matrix)
    [staging] = [p for p in matrix.iterdir() if p.name.startswith(publish.STAGING_PREFIX)]
    assert str(staging) in str(failure.value)
    [kept] = [p for p in staging.iterdir() if p.name.startswith("replaced-")]
    assert hashlib.sha256(kept.read_bytes()).hexdigest() == before["index.html"]
    after = tree(matrix)
    assert {k: v for k, v in after.items() if not k.startswith(".")} == \
        {k: v for k, v in before.items() if k != "index.html"}  # all else is back as it was


def test_files_written_in_pieces_are_the_texts_made_whole(tmp_path, results):
    """Large files are streamed a piece at a time: the pieces must make exactly the text of the whole object
    (aten.json, the index page's search data, with escapes that straddle nothing), and publish keeps no record."""
    message = 'quote " backslash \\ </script> \u00e9 \U0001f600 made to fail'
    edited = edited_copy(results, tmp_path / "edited.jsonl", case=failing("ops/add/float32/forward", message=message))
    runs, cells = snapshot.read_cells([edited], ["results/edited.jsonl.gz"])
    assert runs[0].records == [] and len(runs[0].lines) == len(cells)  # records became cells as they were read
    snap = publish.publish([edited], tmp_path / "matrix")
    assert cells == snap.cells
    aten = "".join(op_cells.text(snap.data))
    assert aten == json.dumps(op_cells.build(snap.data), separators=(",", ":")) + "\n"
    lookup_index = index.build([snap])
    pieces = render_html.index_files([snap], lookup_index)[render_html.SEARCH_DATA]
    data = render_html.search_data([snap], lookup_index)
    whole = json.dumps({**data, "subjects": list(data["subjects"])}, separators=(",", ":"))
    assert message.replace("\\", "\\\\").replace('"', '\\"')[:20] in whole  # the note is in the data
    assert "".join(pieces) == f"window.OPSUITE_SEARCH = JSON.parse({json.dumps(whole)});\n"
    assert (tmp_path / "matrix" / render_html.SEARCH_DATA).read_text() == "".join(
        render_html.index_files([snap], lookup_index)[render_html.SEARCH_DATA])
