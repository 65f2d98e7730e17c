"""`opsuite release-notes A B`: what a release changed, from two fixture snapshots built by the real publish."""

import json

import pytest
from matrix_support import ADD, SOFTMAX_BACKWARD, edited_copy, opsuite, real_cpu_results, three_version_matrix

from opsuite.matrix import publish, release_notes, snapshot

JITERATOR = "ops/jiterator_unary/float32/forward"


@pytest.fixture(scope="module")
def matrix():
    return three_version_matrix()


def _ids(result, section):
    return [e["case_id"] for e in result["sections"][section]]


def test_a_release_that_broke_two_cells(matrix, tmp_path):
    path, ids = matrix
    done = opsuite("release-notes", ids["real"], ids["2.14.0"], "--json", "--matrix", str(path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert _ids(result, "newly_broken") == [ADD, SOFTMAX_BACKWARD]
    assert _ids(result, "newly_working") == _ids(result, "added") == _ids(result, "removed") == []
    real = snapshot.load(path / ids["real"])
    assert result["headline"] == f"cpu 2.14.0 vs {real.data['versions']['torch']}: +0 working, -2 broken, 0 more fallbacks"


def test_a_release_that_fixed_one_changed_an_error_code_and_changed_the_catalog(matrix, tmp_path):
    path, ids = matrix
    done = opsuite("release-notes", ids["2.14.0"], ids["2.15.0"], "--matrix", str(path), "--write", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert text.startswith("# cpu 2.15.0 vs 2.14.0: +1 working, -0 broken, 0 more fallbacks, 0 added, "
                           "1 removed by the catalog\n")
    working = text.split("## Newly working (1)")[1].split("##")[0]
    assert f"`{ADD}` | runtime\\_error: execute: \\[test/T001\\]" in working and "| pass:" in working
    changed = text.split("## Failures that changed (1)")[1].split("##")[0]
    assert SOFTMAX_BACKWARD in changed and "test/T001" in changed and "test/T002" in changed
    removed = text.split("## Cases removed by the catalog (1)")[1]
    assert JITERATOR in removed  # gone from the catalog: listed as such, not as a regression
    # The written notes are linked from the matrix's index, page and README alike.
    [page] = release_notes.files(path)
    assert page["headline"] == text.split("\n", 1)[0].removeprefix("# ").replace("\\", "")
    assert (path / page["html"]).is_file() and (path / page["md"]).is_file()
    assert f'<a href="{page["html"]}">' in (path / "index.html").read_text()
    assert f"]({page['md']}) ([HTML]({page['html']}))" in (path / "README.md").read_text()
    assert "Newly broken" in text and "## Newly broken" not in text
    # 2.14.0 ran no blocks: the blocks cells of 2.15.0 are outside the comparison, not "added".
    assert "2 cells are left out" in text
    [entry] = release_notes.files(path)
    assert entry["headline"].startswith("cpu 2.15.0 vs 2.14.0: +1 working")
    page = (path / entry["html"]).read_text()
    assert "<h2 id=\"newly_working\">Newly working (1)</h2>" in page and ADD in page
    assert (path / entry["md"]).read_text() == text


def test_fallbacks_gained_and_lost_and_numerics_verdicts(tmp_path):
    """A copy of the real run as another release where add fell back to the host and softmax's verdict moved."""
    real = real_cpu_results()

    def edit(case):
        if case["case_id"] == ADD:
            case.update(status="fallback", fallback_ops=["aten::add.Tensor"])
        if case["case_id"] == "ops/softmax/float32/forward":
            case["numerics"]["verdict"] = "as_accurate_as_cpu" if case["numerics"]["verdict"] != "as_accurate_as_cpu" else "close"

    newer = edited_copy(real, tmp_path / "newer.jsonl", torch="99.0.0", case=edit)
    a = publish.publish([real], tmp_path / "matrix")
    b = publish.publish([newer], tmp_path / "matrix")
    result = release_notes.release_notes(a, b)
    assert [(e["case_id"], e["ops"]) for e in result["sections"]["new_fallbacks"]] == [(ADD, ["aten::add.Tensor"])]
    assert _ids(result, "newly_broken") == [ADD]  # pass -> fallback is a regression, as in diff
    assert _ids(result, "numerics_changed") == ["ops/softmax/float32/forward"]
    assert result["headline"].endswith("-1 broken, 1 more fallbacks")
    back = release_notes.release_notes(b, a)
    assert [(e["case_id"], e["ops"]) for e in back["sections"]["fallbacks_removed"]] == [(ADD, ["aten::add.Tensor"])]
    assert "1 fewer fallbacks" in back["headline"]


def test_an_error_text_is_escaped_in_both_pages(tmp_path):
    real = real_cpu_results()

    def edit(case):
        if case["case_id"] == ADD:
            case.update(status="runtime_error", stage="execute", numerics=None,
                        failure={"error_type": "RuntimeError", "message": "<script>alert(1)</script> | *x*",
                                 "sample": None, "category": None, "code": None})

    a = publish.publish([real], tmp_path / "matrix")
    b = publish.publish([edited_copy(real, tmp_path / "b.jsonl", torch="99.0.0", case=edit)], tmp_path / "matrix")
    result = release_notes.release_notes(a, b)
    assert "<script>" not in release_notes.html(result) and "&lt;script&gt;" in release_notes.html(result)
    assert "\\<script\\>" in release_notes.markdown(result) and "\\| \\*x\\*" in release_notes.markdown(result)


def test_without_matrix_the_matrix_is_found_as_every_command_finds_it(matrix, tmp_path):
    """No --matrix: OPSUITE_MATRIX (else the checkout's matrix/), not a traceback."""
    import os
    import subprocess
    import sys

    path, ids = matrix
    done = subprocess.run([sys.executable, "-m", "opsuite.cli", "release-notes", ids["real"], ids["2.14.0"], "--json"],
                          cwd=tmp_path, capture_output=True, text=True, env={**os.environ, "OPSUITE_MATRIX": str(path)})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["headline"].startswith("cpu 2.14.0 vs ")
