"""`opsuite audit --run --backend xla`: the model run as a case on XLA:CPU, beside the prediction."""

from __future__ import annotations

import json

import pytest

from tests.matrix_support import ROOT, opsuite
from tests.test_audit import audit_json, fixture_matrix

pytestmark = pytest.mark.xla

TINY_LLAMA = ["--hf", "llama", "--set", "num_hidden_layers=1", "--set", "hidden_size=32", "--set",
              "intermediate_size=64", "--set", "num_attention_heads=4", "--set", "num_key_value_heads=2",
              "--set", "vocab_size=64", "--seq", "8"]


def test_a_tiny_llama_runs_on_xla_as_a_case(capsys):
    report = audit_json(capsys, *TINY_LLAMA, "--matrix", str(fixture_matrix()), "--backend", "xla", "--run")
    run = report["run"]
    record = run["record"]
    assert run["backend"] == "xla" and run["seq_lens"] == [8, 12]
    assert record["case_id"] == "audit/llama/float32/forward" and record["samples_run"] == 2
    assert record["status"] == "pass" and record["numerics"]["verdict"] in ("close", "as_accurate_as_cpu")
    assert record["compiles"] >= 2 and record["device_s"] > 0   # a graph per sequence length at least
    assert run["agrees"] == (not run["disagreements"])


def test_a_training_step_runs_after_the_fake_backward():
    """The trace runs a backward on (fake) CPU tensors; the XLA backward after it must still work. In a
    fresh process: this one opened the XLA device first (conftest.py), which hides the problem."""
    done = opsuite("audit", *TINY_LLAMA, "--train", "--matrix", str(fixture_matrix()), "--backend", "xla", "--run",
                   "--format", "json", cwd=ROOT)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    record = report["run"]["record"]
    assert record["case_id"] == "audit/llama/float32/train"
    assert record["status"] == "pass", record["failure"]
    assert {r["direction"] for r in report["ops"]} == {"forward", "backward", "train"}


def test_a_fallback_the_matrix_does_not_record_is_named_as_a_gap(capsys):
    """On XLA, nonzero runs on the host. Against a matrix that records it falling back the run agrees;
    against one whose cases only dispatched it (no fallback recorded), the run names the gap."""
    args = ["--module", "tests.audit_models:selecting", "--backend", "xla", "--run"]
    agreeing = audit_json(capsys, *args, "--matrix", str(fixture_matrix(("aten::nonzero",))))["run"]
    assert agreeing["record"]["fallback_ops"] == ["aten::nonzero"]
    assert not [d for d in agreeing["disagreements"] if "nonzero" in d]
    gap = audit_json(capsys, *args, "--matrix", str(fixture_matrix(())))["run"]
    assert not gap["agrees"]
    assert any(d.startswith("gap in the matrix: aten::nonzero fell back to the host on the device")
               and "predicted: known_good" in d for d in gap["disagreements"]), gap["disagreements"]
