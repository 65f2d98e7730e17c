"""`opsuite history NAME`: per cell, since which version it works and where it stopped, in version order."""

import json

from matrix_support import ADD, SOFTMAX_BACKWARD, edited_copy, opsuite, real_cpu_results, three_version_matrix

from opsuite.matrix import history, publish, snapshot


def test_history_orders_by_stack_version_and_finds_breaks(tmp_path):
    path, ids = three_version_matrix()  # published 2.15.0 first, then the real run, then 2.14.0
    done = opsuite("history", "add", "--json", "--matrix", str(path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    [entry] = json.loads(done.stdout)
    assert [s["id"] for s in entry["snapshots"]] == [ids["real"], ids["2.14.0"], ids["2.15.0"]]
    cells = {c["cell"]: c for c in entry["cells"]}
    assert cells[ADD]["statuses"] == ["pass", "runtime_error", "pass"]
    assert cells[ADD]["works_since"] == ids["2.15.0"] and cells[ADD]["stopped_in"] == [ids["2.14.0"]]
    assert (cells[ADD]["works_since_version"], cells[ADD]["stopped_in_versions"]) == ("2.15.0", ["2.14.0"])
    always = cells["ops/add/bfloat16/forward"]
    assert always["statuses"] == ["pass"] * 3 and always["works_since"] == ids["real"] and always["stopped_in"] == []
    text = opsuite("history", "softmax", "--matrix", str(path), cwd=tmp_path).stdout
    row = next(line for line in text.splitlines() if line.startswith(SOFTMAX_BACKWARD))
    assert row.split()[1:] == ["pass", "runtime_error", "runtime_error", "not", "working", "now", "[2]", "2.14.0"]
    add_text = opsuite("history", "add", "--matrix", str(path), cwd=tmp_path).stdout
    add_row = next(line for line in add_text.splitlines() if line.startswith(ADD))
    assert add_row.split()[-4:] == ["[3]", "2.15.0", "[2]", "2.14.0"]


def test_since_which_version_per_cell_for_lookup_and_pages():
    path, ids = three_version_matrix()
    from opsuite.matrix import index

    facts = history.since("ops/add", index.load(path))
    assert facts["cpu"]["float32/forward"] == {"works_since": "2.15.0", "stopped_in": ["2.14.0"]}
    real = json.loads((path / "index.json").read_text())["snapshots"]
    first = next(s for s in real if s["id"] == ids["real"])["versions"]["torch"]
    assert facts["cpu"]["bfloat16/forward"] == {"works_since": first, "stopped_in": []}


def test_history_of_an_unknown_backend_or_name(tmp_path):
    path, _ = three_version_matrix()
    done = opsuite("history", "add", "--backend", "neuron-xla", "--matrix", str(path), cwd=tmp_path)
    assert done.returncode == 2 and "no snapshot of backend 'neuron-xla'" in done.stderr
    done = opsuite("history", "ad", "--matrix", str(path), cwd=tmp_path)
    assert done.returncode == 1 and "did you mean: ops/add" in done.stderr


def test_timeline_passes_over_gaps_and_skips():
    facts = history.timeline_facts([("a", "pass"), ("b", None), ("c", "skip"), ("d", "crash"), ("e", "pass"),
                                    ("f", None), ("g", "pass")])
    assert facts == {"works_since": "e", "stopped_in": ["d"]}
    assert history.timeline_facts([("a", "pass"), ("b", "mismatch")]) == {"works_since": None, "stopped_in": ["b"]}
    assert history.timeline_facts([]) == {"works_since": None, "stopped_in": []}
    # A host fallback that became a failure stopped working too (xla's stft float32 backward, 2.7.0 -> 2.8.1);
    # a failure that became another failure did not.
    assert history.timeline_facts([("2.7.0", "fallback"), ("2.8.1", "mismatch"), ("2.9.0", "fallback")]) == \
        {"works_since": None, "stopped_in": ["2.8.1"]}
    assert history.timeline_facts([("a", "pass"), ("b", "fallback"), ("c", "crash"), ("d", "runtime_error")]) == \
        {"works_since": None, "stopped_in": ["b", "c"]}


def test_a_host_fallback_reads_works_with_host_fallback(tmp_path):
    def fell_back(case):
        if case["case_id"] == ADD:
            case.update(status="fallback", fallback_ops=["aten::add.Tensor"])

    real = real_cpu_results()
    matrix = tmp_path / "matrix"
    publish.publish([real], matrix)
    publish.publish([edited_copy(real, tmp_path / "v214.jsonl", torch="2.14.0", case=fell_back)], matrix)
    done = opsuite("history", ADD, "--matrix", str(matrix), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    row = next(line for line in done.stdout.splitlines() if line.startswith(ADD))
    torch_version = next(s for s in snapshot.load_all(matrix) if "2.14.0" not in s.id).data["versions"]["torch"]
    assert "pass" in row and f"works, with host fallback  works, with host fallback since [1] {torch_version}" in row
    [entry] = json.loads(opsuite("history", ADD, "--json", "--matrix", str(matrix), cwd=tmp_path).stdout)
    [cell] = entry["cells"]
    assert cell["statuses"] == ["pass", "fallback"] and cell["works_since"] is None
    assert cell["works_with_host_fallback_since"] == entry["snapshots"][0]["id"]
    assert history.fallback_since([("a", "mismatch"), ("b", "fallback"), ("c", "pass"), ("d", "fallback")]) == "b"
    assert history.fallback_since([("a", "fallback"), ("b", "pass")]) is None


def test_history_takes_the_names_people_type(tmp_path):
    path, _ = three_version_matrix()
    by_opinfo = json.loads(opsuite("history", "softmax", "--json", "--matrix", str(path), cwd=tmp_path).stdout)
    for spelling in ("F.softmax", "torch.nn.functional.softmax", "Tensor.softmax"):
        done = opsuite("history", spelling, "--json", "--matrix", str(path), cwd=tmp_path)
        assert done.returncode == 0 and json.loads(done.stdout) == by_opinfo, done.stderr
