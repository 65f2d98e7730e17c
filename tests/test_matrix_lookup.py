"""`opsuite lookup NAME`: OpInfo names, aten overloads in both spellings, blocks, case ids; fast, no torch."""

import json
import shutil
import subprocess
import sys
import time

import pytest
from matrix_support import ADD, BLOCK, ROOT, opsuite, real_cpu_results, three_version_matrix

from opsuite.matrix import index, publish


@pytest.fixture(scope="module")
def matrix():
    return three_version_matrix()


def _lookup(path, tmp_path, *args):
    done = opsuite("lookup", *args, "--json", "--matrix", str(path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_an_opinfo_name_shows_every_version_per_dtype_and_direction(matrix, tmp_path):
    path, ids = matrix
    answer = _lookup(path, tmp_path, "add")
    [entry] = answer["answer"]
    assert entry["subject"] == "ops/add" and "aten::add.Tensor" in entry["dispatches"]
    cells = entry["cells"]
    assert [c["snapshot"] for c in cells if c["dtype"] == "float32" and c["direction"] == "forward"] == \
        [ids["2.15.0"], ids["2.14.0"], ids["real"]]  # newest stack first
    broken = next(c for c in cells if c["snapshot"] == ids["2.14.0"] and f"ops/add/{c['dtype']}/{c['direction']}" == ADD)
    assert broken["status"] == "runtime_error" and "[test/T001]" in broken["note"]
    assert broken["source"].startswith("results/v214.jsonl.gz:")
    assert {(c["dtype"], c["direction"]) for c in cells} == {("float32", "forward"), ("float32", "backward"),
                                                            ("bfloat16", "forward"), ("bfloat16", "backward")}
    passed = next(c for c in cells if c["snapshot"] == ids["real"] and (c["dtype"], c["direction"]) == ("float32", "forward"))
    assert passed["status"] == "pass" and passed["note"].startswith("2 samples; ")  # what the pass covers
    text = opsuite("lookup", "add", "--matrix", str(path), cwd=tmp_path).stdout
    assert f"[{ids['2.14.0']}]" in text and "runtime_error" in text and "aten ops on CPU: aten::add.Tensor" in text


@pytest.mark.parametrize("spelling", ["aten::_softmax", "aten._softmax.default", "torch.ops.aten._softmax.default",
                                      "aten._softmax"])
def test_aten_spellings_select_the_cases_that_dispatch_them(matrix, tmp_path, spelling):
    path, _ = matrix
    answer = _lookup(path, tmp_path, spelling)
    subjects = [e["subject"] for e in answer["answer"]]
    assert subjects[0] == "ops/softmax" and f"blocks/{BLOCK}" in subjects
    assert all(e["via"] == ["aten::_softmax"] for e in answer["answer"])
    # Only the cells whose CPU run dispatched it: softmax's forward and backward both do.
    assert {c["direction"] for c in answer["answer"][0]["cells"]} == {"forward", "backward"}


def test_an_aten_packet_means_all_its_overloads(matrix, tmp_path):
    path, _ = matrix
    packet = _lookup(path, tmp_path, "aten::add")
    overload = _lookup(path, tmp_path, "aten::add.Tensor")
    assert [e["subject"] for e in packet["answer"]][0] == "ops/add"
    assert "aten::add.Tensor" in packet["answer"][0]["via"]
    assert [e["subject"] for e in overload["answer"]][0] == "ops/add"


def test_a_block_and_a_case_id(matrix, tmp_path):
    path, ids = matrix
    [block] = _lookup(path, tmp_path, BLOCK)["answer"]
    assert block["subject"] == f"blocks/{BLOCK}" and {c["snapshot"] for c in block["cells"]} == {ids["2.15.0"]}
    [case] = _lookup(path, tmp_path, ADD)["answer"]
    assert {(c["dtype"], c["direction"]) for c in case["cells"]} == {("float32", "forward")}
    assert len(case["cells"]) == 3


def test_an_unknown_name_gets_close_matches_and_exit_1(matrix, tmp_path):
    path, _ = matrix
    done = opsuite("lookup", "sofmax", "--matrix", str(path), cwd=tmp_path)
    assert done.returncode == 1 and done.stdout == ""
    assert "'sofmax' is in no published snapshot; did you mean: ops/softmax" in done.stderr
    done = opsuite("lookup", "aten::_sofmax", "--matrix", str(path), cwd=tmp_path)
    assert done.returncode == 1 and "aten::_softmax" in done.stderr


def test_lookup_is_fast_and_imports_no_torch(matrix, tmp_path):
    path, _ = matrix
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "opsuite.cli", "lookup", "aten::_softmax",
                           "--matrix", str(path)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    elapsed = time.perf_counter() - started
    assert done.returncode == 0 and "ops/softmax" in done.stdout
    imported = {line.split("|")[-1].strip().split(".")[0] for line in done.stderr.splitlines()
                if line.startswith("import time:")}
    assert "opsuite" in imported and "tabulate" in imported  # the importtime listing is what we think it is
    assert not imported & {"torch", "torch_xla", "jsonschema", "numpy", "jinja2"}
    assert elapsed < 1.0, f"lookup took {elapsed:.2f} s"


def test_no_matrix_or_a_stale_index_is_one_clear_error(matrix, tmp_path):
    done = opsuite("lookup", "add", "--matrix", str(tmp_path / "none"), cwd=tmp_path)
    assert done.returncode == 2 and "no published matrix" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    stale = tmp_path / "stale"
    stale.mkdir()
    (stale / index.FILE).write_text(json.dumps({"format": index.FORMAT, "schema_version": 0}))
    done = opsuite("lookup", "add", "--matrix", str(stale), cwd=tmp_path)
    assert done.returncode == 2 and "opsuite reindex" in done.stderr


def test_a_cell_says_how_many_samples_it_covers_and_which_was_worst():
    from opsuite.matrix import notes

    cell = {"status": "mismatch", "stage": "done", "samples_run": 4, "samples_available": 4,
            "numerics": {"verdict": "wrong", "worst_output": "sample 1 output", "max_abs_err": 7.48},
            "worst_sample": {"index": 1, "label": "inf: (Tensor[5, 5]:float32, inf)"},
            "source": {"file": "results/x.jsonl.gz", "line": 2, "run_id": "r"}}
    assert notes.short(cell).startswith("all 4 samples; wrong in sample 1 output, max abs err 7.48")
    rows = dict(notes.details(cell))
    assert rows["status"] == "mismatch (stage done), all 4 samples"
    assert rows["worst sample"] == "sample 1: inf: (Tensor[5, 5]:float32, inf)"
    assert notes.short({**cell, "status": "pass", "samples_run": 2, "samples_available": 14}).startswith(
        "2 of 14 samples")
    older = {k: v for k, v in cell.items() if k not in ("samples_available", "worst_sample")}
    assert notes.short(older).startswith("4 samples; wrong in sample 1")  # not counted: what ran
    # A failure says in which sample of how many it came: the case's other samples may work.
    failed = {**cell, "status": "compile_error", "stage": "compile", "samples_available": 10, "numerics": None,
              "failure": {"error_type": "TypeError", "message": "cannot determine truth value", "sample": "s",
                          "category": "dynamic_shape", "code": None}}
    assert notes.short(failed) == "compile in sample 1 of 10: [dynamic_shape] TypeError: cannot determine truth value"
    assert notes.short({k: v for k, v in failed.items() if k != "worst_sample"}).startswith("compile: [dynamic_shape]")


def test_a_repro_command_reruns_the_samples_up_to_the_one_that_failed():
    from opsuite.matrix import notes

    # Through the failing sample, not it alone: Inductor's compile error on adaptive_avg_pool2d's sample 2
    # needs samples 0 and 1 before it (Dynamo then compiles with dynamic shapes); alone it passes.
    failed = {"status": "compile_error", "samples_run": 10, "samples_available": 10,
              "worst_sample": {"index": 2, "label": "(Tensor[2, 8, 8, 8]:float32, (None, 7))"}}
    case = "ops/nn.functional.adaptive_avg_pool2d/float32/forward"
    assert notes.repro_command(case, "inductor", failed) == f"opsuite repro {case} --backend inductor --samples 3"
    assert notes.repro_samples({**failed, "status": "crash", "worst_sample": {"index": 6, "label": ""}}) == 7
    # What works reruns every sample it ran: a host fallback may come from any of them, not the worst.
    assert notes.repro_samples({**failed, "status": "fallback", "worst_sample": {"index": 0, "label": ""}}) == 10
    assert notes.repro_samples({**failed, "status": "pass"}) == 10
    assert notes.repro_samples({"status": "mismatch", "samples_run": 2}) == 2  # a record from before worst_sample
    skipped = {"status": "skip", "samples_run": 0}
    assert notes.repro_command("ops/x y/float32/forward", "cpu", skipped) == "opsuite repro 'ops/x y/float32/forward' --backend cpu"


@pytest.mark.parametrize("spelling", ["nn.functional.softmax", "F.softmax", "torch.nn.functional.softmax",
                                      "torch.softmax", "Tensor.softmax", "x.softmax",
                                      "special.softmax"])  # the last: OpInfo's alias, from the recorded table
def test_names_a_pytorch_user_types(matrix, tmp_path, spelling):
    path, ids = matrix
    answer = _lookup(path, tmp_path, spelling)
    assert answer["answer"][0]["subject"] == "ops/softmax"
    assert {c["snapshot"] for c in answer["answer"][0]["cells"]} == set(ids.values())


def test_an_aten_in_place_name_is_its_op_first(matrix, tmp_path):
    path, _ = matrix
    subjects = [e["subject"] for e in _lookup(path, tmp_path, "aten::add_")["answer"]]
    assert subjects == ["ops/add"]
    [entry] = _lookup(path, tmp_path, "aten::add.out")["answer"]
    assert entry["subject"] == "ops/add" and len(entry["cells"]) == 12  # the subject whole, every snapshot


def test_a_case_id_spelled_as_a_user_does(matrix, tmp_path):
    path, _ = matrix
    [case] = _lookup(path, tmp_path, "ops/F.softmax/float32/backward")["answer"]
    assert case["subject"] == "ops/softmax"
    assert {(c["dtype"], c["direction"]) for c in case["cells"]} == {("float32", "backward")}


def test_an_unknown_word_suggests_real_subjects(matrix, tmp_path):
    path, _ = matrix
    done = opsuite("lookup", "attention", "--matrix", str(path), cwd=tmp_path)
    assert done.returncode == 1
    assert f"did you mean: blocks/{BLOCK}" in done.stderr and "aten::" not in done.stderr


def test_snapshots_without_a_names_table_still_resolve_spellings(tmp_path):
    # A results file from before the catalog recorded op_db's alias table: spelling rules still work.
    lines = real_cpu_results().read_text().splitlines()
    header = json.loads(lines[0])
    assert header["catalog"].pop("op_names")["special.softmax"] == ["softmax"]
    old = tmp_path / "old.jsonl"
    old.write_text("\n".join([json.dumps(header), *lines[1:]]) + "\n")
    publish.publish([old], tmp_path / "matrix")
    assert _lookup(tmp_path / "matrix", tmp_path, "F.softmax")["answer"][0]["subject"] == "ops/softmax"
    assert _lookup(tmp_path / "matrix", tmp_path, "aten::add_")["answer"][0]["subject"] == "ops/add"
    assert opsuite("lookup", "special.softmax", "--matrix", str(tmp_path / "matrix"), cwd=tmp_path).returncode == 1


def test_search_terms_for_page_filters(matrix):
    path, _ = matrix
    terms = index.search_terms(index.load(path))
    assert {"F.softmax", "nn.functional.softmax", "special.softmax", "torch.softmax"} <= set(terms["ops/softmax"])
    assert terms[f"blocks/{BLOCK}"] == []


def test_a_cells_file_not_written_with_the_index_is_one_clear_error(matrix, tmp_path):
    path, _ = matrix
    copy = tmp_path / "copy"
    shutil.copytree(path, copy)
    cells = copy / index.CELLS_FILE
    lines = cells.read_text().splitlines(keepends=True)
    cells.write_text(lines[0].replace('"build":"', '"build":"0') + "".join(lines[1:]))
    done = opsuite("lookup", "add", "--matrix", str(copy), cwd=tmp_path)
    assert done.returncode == 2 and "opsuite reindex" in done.stderr and len(done.stderr.splitlines()) == 1
