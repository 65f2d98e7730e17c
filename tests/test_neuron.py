"""The neuron and neuron-compile backends, end to end against the test double in tests/neuron_double.

The double is installed for the worker processes as torch-neuronx is: its directory on the path (a
spawned worker starts from its parent's sys.path, and torch autoloads the device from the dist-info's
entry point when imported) and its tools (neuron-ls, neuronx-cc) on PATH. Nothing here writes results.
"""

import os
from pathlib import Path

import pytest
import torch

from opsuite import backends
from opsuite.backends import neuron_tools
from opsuite.classify import DEVICE_MEMORY, UNSUPPORTED_OPERATOR
from opsuite.isolation import IsolatedRunner, WorkerConfig
from opsuite.matrix import stack
from opsuite.record import Stage, Status

pytestmark = pytest.mark.main

DOUBLE = Path(__file__).parent / "neuron_double"
SIN, COS, TAN, ATAN, ATAN2 = (f"ops/{op}/float32/forward" for op in ("sin", "cos", "tan", "atan", "atan2"))
SIN_BACKWARD = "ops/sin/float32/backward"


@pytest.fixture
def neuron_double(monkeypatch):
    monkeypatch.syspath_prepend(str(DOUBLE))
    monkeypatch.setenv("PATH", f"{DOUBLE / 'bin'}{os.pathsep}{os.environ['PATH']}")
    return DOUBLE


def run(backend, case_ids, log_dir):
    """The worker's handshake and one record per case, from one worker process."""
    with IsolatedRunner(WorkerConfig(backend=backend, samples=2, kinds=("ops",)), case_timeout_s=120,
                        log_dir=log_dir) as runner:
        records = {case_id: runner.run(case_id) for case_id in case_ids}
        return runner.handshake, records


def test_eager_fallbacks_from_torch_neuronx_tracking(neuron_double, tmp_path):
    hello, records = run("neuron", [SIN, COS, SIN_BACKWARD, TAN, ATAN], tmp_path)
    stack = hello["stack"]
    assert stack["fallback_tracking"] == "torch_neuronx"
    assert (stack["torch_neuronx"], stack["neuronx_cc"]) == ("2.13.3.0", "2.28.7631.0+0d1e2f3a")
    assert (stack["instance_type"], stack["neuron_cores"]) == ("trn2.3xlarge", 3)
    assert stack["autocast_enabled"] is False
    assert "TORCH_NEURONX_DISABLE_FALLBACK_EXECUTION" in hello["env"]

    assert records[SIN].status is Status.PASS and records[SIN].fallback_ops == []
    # cos has no device kernel: its composite kernel's out= variant ran on the CPU, named by aten op.
    assert (records[COS].status, records[COS].fallback_ops) == (Status.FALLBACK, ["aten::cos.out"])
    assert (records[SIN_BACKWARD].status, records[SIN_BACKWARD].fallback_ops) == (Status.FALLBACK,
                                                                                  ["aten::cos.out"])
    tan = records[TAN]
    assert (tan.status, tan.failure.category) == (Status.COMPILE_ERROR, UNSUPPORTED_OPERATOR)
    assert tan.failure.message == "Operation aten::tan.out is not implemented for Neuron"
    atan = records[ATAN]
    assert (atan.status, atan.stage, atan.failure.category) == (Status.RUNTIME_ERROR, Stage.TRACE, DEVICE_MEMORY)


def test_eager_fallbacks_from_dispatch_keys(neuron_double, tmp_path, monkeypatch):
    """A release without op tracking: the adapter names the ops with no kernel for PrivateUse1 itself."""
    monkeypatch.setenv("OPSUITE_DOUBLE_NO_OP_TRACKING", "1")
    hello, records = run("neuron", [SIN, COS, SIN_BACKWARD, TAN], tmp_path)
    assert hello["stack"]["fallback_tracking"] == "dispatch_key"
    assert records[SIN].status is Status.PASS and records[SIN].fallback_ops == []
    assert (records[COS].status, records[COS].fallback_ops) == (Status.FALLBACK, ["aten::cos.out"])
    assert records[SIN_BACKWARD].fallback_ops == ["aten::cos.out"]
    assert (records[TAN].status, records[TAN].fallback_ops) == (Status.COMPILE_ERROR, [])


def test_compiled_graphs_and_compiler_errors(neuron_double, tmp_path):
    _, records = run("neuron-compile", [SIN, ATAN2], tmp_path)
    assert (records[SIN].status, records[SIN].compiles) == (Status.PASS, 1)
    assert records[SIN].extra["graph_breaks"] == 0
    refused = records[ATAN2]
    assert (refused.status, refused.stage) == (Status.COMPILE_ERROR, Stage.COMPILE)
    assert (refused.failure.category, refused.failure.code) == (UNSUPPORTED_OPERATOR, "NCC_EVRF001")


def test_default_backend_on_a_neuron_machine(neuron_double, monkeypatch):
    monkeypatch.setattr(neuron_tools, "has_neuron_device", lambda: True)
    assert backends.default() == "neuron"
    monkeypatch.setattr(torch, "__version__", "2.9.0")  # torch-neuronx's XLA stack ends with torch 2.9
    assert backends.default() == "neuron-xla"
    monkeypatch.setattr(neuron_tools, "has_neuron_device", lambda: False)
    assert backends.default() == "xla"


def test_neuron_needs_torch_2_13(neuron_double, monkeypatch):
    backends.check_available("neuron")
    monkeypatch.setattr(torch, "__version__", "2.9.0")
    with pytest.raises(backends.BackendError, match="TorchNeuron needs torch >= 2.13"):
        backends.check_available("neuron-compile")


def test_neuron_needs_torch_neuronx():
    with pytest.raises(backends.BackendError, match="'torch_neuronx'"):
        backends.check_available("neuron")


def _header(backend, hello):
    return {"backend": backend, "stack": hello["stack"], "env": hello["env"]}


def test_a_neuron_stack_is_named_by_its_sdk_and_carries_its_numerics_flags(neuron_double, tmp_path, monkeypatch):
    """Keyed and labelled by the Neuron versions, not torch's alone; the numerics flags in every stack."""
    monkeypatch.setenv(neuron_tools.SDK_RELEASE_ENV, "2.33.0")
    monkeypatch.setenv("NEURON_CC_FLAGS", "--auto-cast=matmult --auto-cast-type bf16 --native-int64")
    monkeypatch.setenv("NEURON_RT_STOCHASTIC_ROUNDING_EN", "1")
    hello, _ = run("neuron-compile", [SIN], tmp_path)
    stack_ = hello["stack"]
    assert (stack_["auto_cast"], stack_["auto_cast_type"], stack_["native_int64"]) == ("matmult", "bf16", True)
    assert stack_["stochastic_rounding"] == "1"
    assert stack_["neuron_cc_flags"] == "--auto-cast=matmult --auto-cast-type bf16 --native-int64"
    header = _header("neuron-compile", hello)
    assert stack.label(header) == ("neuron_sdk 2.33.0 · torch_neuronx 2.13.3.0 · neuronx_cc 2.28.7631.0+0d1e2f3a · "
                                   f"instance_type trn2.3xlarge · torch {torch.__version__}")
    assert stack.key(header).startswith("neuron_sdk-2.33.0__torch_neuronx-2.13.3.0__neuronx_cc-2.28.7631.0+0d1e2f3a__")


def test_two_neuron_runs_differing_only_in_a_numerics_flag_are_two_snapshots(neuron_double, tmp_path, monkeypatch):
    monkeypatch.delenv("NEURON_CC_FLAGS", raising=False)
    plain, _ = run("neuron", [SIN], tmp_path)
    # The double's compiler is 2.28: --auto-cast defaults to none there.
    assert (plain["stack"]["auto_cast"], plain["stack"]["native_int64"]) == ("none", False)
    monkeypatch.setenv("NEURON_CC_FLAGS", "--native-int64")
    int64, _ = run("neuron", [SIN], tmp_path)
    a, b = _header("neuron", plain), _header("neuron", int64)
    assert stack.versions(a) == stack.versions(b)
    assert stack.key(a) != stack.key(b)
