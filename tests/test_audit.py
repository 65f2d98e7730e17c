"""`opsuite audit`: tracing real model families and small modules on fake tensors, the join with a fixture
matrix published through the real publish code, the report formats, and bad input."""

from __future__ import annotations

import functools
import json
from importlib import resources
from pathlib import Path

import jsonschema
import pytest

from opsuite.cli import main

HEADER = {"kind": "header", "schema_version": 1, "started_at": "2026-11-30T00:00:00+00:00",
          "host": {"hostname": "test", "platform": "linux", "python": "3.11", "cpus": 2, "user": "test"},
          "opsuite": {"version": "0.1.0", "commit": "test"},
          "catalog": {"kinds": ["ops", "blocks"], "cases": 9, "op_db_size": 1},
          "options": {"samples": "2", "dtypes": None, "directions": None, "case_timeout_s": 300.0, "workers": 1}}
STACKS = {
    "cpu": ({"torch": "2.13.0+cpu"}, {}),
    "xla": ({"torch": "2.9.0", "torch_xla": "2.9.0", "pjrt_device": "CPU"}, {"PJRT_DEVICE": "CPU"}),
}
# (case id, status, aten ops, fallback ops): what each case says about its ops is in test_verdicts.
CASES = [
    ("ops/addmm/float32/forward", "fallback", ["aten::addmm"], ["aten::addmm"]),
    ("blocks/mlp/float32/forward", "pass", ["aten::addmm", "aten::mm", "aten::t", "aten::view"], []),
    ("blocks/moe/float32/forward", "fallback", ["aten::nonzero", "aten::mm", "aten::index_add_"], ["aten::nonzero"]),
    ("ops/sin/float32/forward", "mismatch", ["aten::sin"], []),
    ("ops/cos/float32/forward", "compile_error", ["aten::cos", "aten::mm"], []),
    ("ops/mean/float32/forward", "runtime_error", ["aten::mean.dim"], []),
    ("blocks/norm/float32/forward", "pass", ["aten::mean.dim", "aten::rsqrt"], []),
    ("ops/jiterator/float32/forward", "skip", ["aten::neg"], []),
    ("blocks/mlp/float32/backward", "pass", ["aten::addmm", "aten::mm", "aten::t", "aten::sum.dim_IntList"], []),
]


def _results(path: Path, backend: str, cases: list[tuple]) -> Path:
    stack, env = STACKS[backend]
    run_id = f"{backend}-fixture"
    lines = [{**HEADER, "run_id": run_id, "backend": backend, "stack": stack, "env": env}]
    for case_id, status, aten, fallback in cases:
        failed = status in ("mismatch", "compile_error", "runtime_error")
        lines.append({"kind": "case", "run_id": run_id, "case_id": case_id, "status": status,
                      "stage": "done" if not failed or status == "mismatch" else "compile", "backend": backend,
                      "samples_run": 2, "fallback_ops": fallback, "host_syncs": [], "aten_ops": aten,
                      "compiles": 2, "compile_s": 0.1, "device_s": 0.01, "cpu_s": 0.01, "wall_s": 0.2,
                      "numerics": None,
                      "failure": {"error_type": "RuntimeError", "message": "made to fail", "sample": None,
                                  "category": None, "code": None} if failed else None, "extra": {}})
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


@functools.cache
def fixture_matrix(xla_moe_fallbacks: tuple[str, ...] = ("aten::nonzero", "aten::mm")) -> Path:
    """A matrix of a cpu and an xla snapshot of CASES (in the xla one the moe block fell back on
    `xla_moe_fallbacks`), published by the real publish code into a temporary directory."""
    import atexit
    import shutil
    import tempfile

    from opsuite.matrix import publish

    work = Path(tempfile.mkdtemp(prefix="opsuite-audit-tests-"))
    atexit.register(shutil.rmtree, work, True)
    xla_cases = [(c, s, a, list(xla_moe_fallbacks) if c.startswith("blocks/moe") else f) for c, s, a, f in CASES]
    publish.publish([_results(work / "cpu.jsonl", "cpu", CASES)], work / "matrix")
    publish.publish([_results(work / "xla.jsonl", "xla", xla_cases)], work / "matrix")
    return work / "matrix"


def audit(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["audit", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def audit_json(capsys, *args: str) -> dict:
    code, out, err = audit(capsys, *args, "--format", "json")
    assert code == 0, err
    report = json.loads(out)
    schema = json.loads(resources.files("opsuite").joinpath("schemas/audit-v1.json").read_text())
    jsonschema.validate(report, schema)
    return report


def rows(report: dict, op: str, direction: str = "forward") -> list[dict]:
    return [r for r in report["ops"] if r["op"] == op and r["direction"] == direction]


# ---------------------------------------------------------------- the join

def test_publish_writes_the_per_op_cells_beside_the_snapshot():
    cells = json.loads(next(fixture_matrix().glob("cpu/*/aten.json")).read_text())
    assert cells["ops"]["aten::addmm"]["float32/forward"] == [
        ["blocks/mlp/float32/forward", "pass", 0], ["ops/addmm/float32/forward", "fallback", 1]]


def test_verdicts(capsys):
    """What each case says about its ops: a fallback on another op does not make an op a fallback; a failing
    case counts against an op only when nothing shows the op working, or when the case is the op's own."""
    from opsuite.audit import join
    from opsuite.matrix import op_cells

    stack = join.Stack("cpu/x", "torch", op_cells.load(next(fixture_matrix().glob("cpu/*/snapshot.json")).parent)["ops"])
    judge = functools.partial(join.judge, stack, dtype="float32", direction="forward")
    assert judge(op="aten::nonzero").verdict == "fallback"
    assert judge(op="aten::nonzero").cases == ["blocks/moe/float32/forward"]
    mm = judge(op="aten::mm")   # dispatched in the moe case that fell back on nonzero, and in a failing case
    assert mm.verdict == "known_good" and set(mm.cases) == {"blocks/mlp/float32/forward", "blocks/moe/float32/forward"}
    assert judge(op="aten::addmm").verdict == "conditional"
    assert judge(op="aten::sin").verdict == "mismatch" and judge(op="aten::sin").cases == ["ops/sin/float32/forward"]
    assert judge(op="aten::cos").verdict == "compile_error"
    assert judge(op="aten::mean.dim").verdict == "conditional"   # its own case failed, a block passed
    assert judge(op="aten::rsqrt").verdict == "known_good"
    assert judge(op="aten::neg").verdict == "untested"             # only a skipped case
    assert judge(op="aten::sum.dim_IntList").verdict == "untested"  # only in backward
    assert join.judge(stack, "aten::sum.dim_IntList", "float32", "backward").verdict == "known_good"
    assert judge(op="aten::mm", dtype="bfloat16").verdict == "untested"


def test_a_module_against_two_stacks_side_by_side(capsys):
    report = audit_json(capsys, "--module", "tests.audit_models:selecting", "--matrix", str(fixture_matrix()),
                        "--backend", "cpu", "--backend", "xla")
    cpu, xla = (s["id"] for s in report["stacks"])
    assert cpu.startswith("cpu/") and xla.startswith("xla/")
    nonzero = rows(report, "aten::nonzero")[0]
    assert nonzero["data_dependent"] and nonzero["modules"] == {"": 1}
    assert list(nonzero["sources"]) == ["tests/audit_models.py:47"]
    assert nonzero["verdicts"][cpu] == {"verdict": "fallback", "cases": ["blocks/moe/float32/forward"],
                                        "note": "ran on the host in 1 case(s)"}
    addmm = rows(report, "aten::addmm")[0]
    assert addmm["modules"] == {"proj": 1} and addmm["verdicts"][cpu]["verdict"] == "conditional"
    assert any(r["host_sync"] for r in rows(report, "aten::_local_scalar_dense"))
    assert report["ops"][0]["op"] == "aten::nonzero"   # worst first
    code, out, _ = audit(capsys, "--module", "tests.audit_models:selecting", "--matrix", str(fixture_matrix()),
                         "--backend", "cpu", "--fail-on", "fallback")
    assert code == 1
    assert "1 falls back to the host (aten::nonzero x1 in (top level) [cases: blocks/moe/float32/forward])" in out
    assert out.index("falls back") < out.index("\nop ")   # the summary comes before the table
    code, out, _ = audit(capsys, "--module", "tests.audit_models:selecting", "--matrix", str(fixture_matrix()),
                         "--backend", "cpu", "--fail-on", "crash", "--format", "markdown")
    assert code == 0 and out.startswith("## opsuite audit") and "| aten::nonzero [data-dependent]" in out


def test_a_custom_op_is_a_kernel_to_port(capsys):
    report = audit_json(capsys, "--module", "tests.audit_models:custom_op_net", "--matrix", str(fixture_matrix()),
                        "--backend", "cpu")
    custom = rows(report, "opsuite_test::scaled_tanh")[0]
    assert custom["custom"] and custom["modules"] == {"": 1}
    assert next(iter(custom["verdicts"].values()))["verdict"] == "custom_kernel"
    assert report["ops"][0]["op"] == "opsuite_test::scaled_tanh"


# ---------------------------------------------------------------- real families, small configs

FAMILIES = {   # the seven of the models cases, and more
    "llama": ["num_hidden_layers=2"], "qwen3": ["num_hidden_layers=1"], "mistral": ["num_hidden_layers=1"],
    "mixtral": ["num_hidden_layers=1", "experts_implementation=eager", "num_local_experts=4"],
    "gpt2": ["n_layer=1"], "bert": ["num_hidden_layers=1"], "t5": ["num_layers=1", "num_decoder_layers=1"],
    "phi3": ["num_hidden_layers=1"], "gemma2": ["num_hidden_layers=1"], "vit": ["num_hidden_layers=1"],
}


@pytest.mark.parametrize("family", FAMILIES)
def test_real_families_trace_with_module_paths_and_lines(capsys, family):
    sets = [a for s in FAMILIES[family] for a in ("--set", s)]
    report = audit_json(capsys, "--hf", family, *sets, "--train", "--dtype", "bfloat16", "--seq", "8",
                        "--matrix", str(fixture_matrix()), "--backend", "cpu")
    assert report["mode"] == "train" and report["summary"]["calls"] > 50
    directions = {r["direction"] for r in report["ops"]}
    assert directions == {"forward", "backward", "train"}
    modules = {m for r in report["ops"] for m in r["modules"]}
    assert any(".*." in m for m in modules), modules   # repeated layers folded
    matmul = [r for r in report["ops"] if r["op"] in ("aten::mm", "aten::bmm", "aten::addmm") and r["direction"] == "forward"]
    assert matmul and all(not s.startswith(("torch/", "opsuite/")) for r in matmul for s in r["sources"])
    assert any("modeling_" in s for r in matmul for s in r["sources"])
    assert any(r["direction"] == "backward" and "modeling_" in next(iter(r["sources"])) for r in report["ops"])


def test_mixtral_names_the_host_fallback_in_its_moe_block(capsys):
    report = audit_json(capsys, "--hf", "mixtral", "--set", "num_hidden_layers=2", "--set",
                        "experts_implementation=eager", "--matrix", str(fixture_matrix()), "--backend", "xla")
    nonzero = rows(report, "aten::nonzero")[0]
    assert list(nonzero["modules"]) == ["model.layers.*.mlp.experts"]
    assert nonzero["verdicts"][report["stacks"][0]["id"]]["cases"] == ["blocks/moe/float32/forward"]


# ---------------------------------------------------------------- bad input: one line, exit 2

@pytest.mark.parametrize("args, message", [
    (["--hf", "lama"], "unknown model type 'lama'"),
    (["--hf", "llama", "--set", "num_hiden_layers=2"], "did you mean num_hidden_layers"),
    (["--hf", "llama", "--set", "hidden_act=no_such_activation"], "cannot be built from this config"),
    (["--module", "tests.audit_models:raising"], "the factory raised ValueError: checkpoint weights.bin not found"),
    (["--module", "tests.audit_models:not_a_pair"], "must return (torch.nn.Module, example inputs)"),
    (["--module", "tests.audit_models:untraceable_net"], "opsuite_test::no_fake"),
    (["--module", "tests.audit_models:selecting", "--backend", "neuron"], "no snapshot of backend 'neuron'"),
    (["--module", "tests.audit_models:selecting", "--stack", "xla/torch_xla-9"], "no snapshot 'xla/torch_xla-9'"),
    (["--exported", "missing.pt2"], "no such file"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, args, message):
    backend = [] if any(a in ("--backend", "--stack") for a in args) else ["--backend", "cpu"]
    code, out, err = audit(capsys, *args, *backend, "--matrix", str(fixture_matrix()))
    assert code == 2 and out == ""
    assert err.startswith("opsuite: ") and err.count("\n") == 1 and message in err, err


def test_an_exported_program_keeps_module_paths(capsys, tmp_path):
    import torch

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.block = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.GELU())

        def forward(self, x):
            return self.block(x).softmax(-1)

    file = tmp_path / "net.pt2"
    torch.export.save(torch.export.export(Net(), (torch.randn(2, 8),)), str(file))
    report = audit_json(capsys, "--exported", str(file), "--matrix", str(fixture_matrix()), "--backend", "cpu")
    addmm, gelu, softmax = (rows(report, op)[0] for op in ("aten::addmm", "aten::gelu", "aten::_softmax"))
    assert addmm["modules"] == gelu["modules"] == {"block.*": 1} and softmax["modules"] == {"": 1}
    assert [s.rpartition(":")[0] for s in (*addmm["sources"], *softmax["sources"])] == ["tests/test_audit.py"] * 2
