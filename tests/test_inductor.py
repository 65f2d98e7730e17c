"""The inductor backend, in process: graph breaks counted with their reasons, compile failures told apart
from errors of the compiled code, forward and backward, and every case compiled from an empty cache."""

import pytest
import torch

from opsuite import backends
from opsuite.catalog import Case, Sample
from opsuite.execute import run_case
from opsuite.record import Stage, Status

pytestmark = pytest.mark.main

# Custom ops whose fake (shape-only) implementation is what the compiler traces, and whose real
# implementation is what the compiled code calls: one fails to trace, one fails to run.
_lib = torch.library.Library("opsuite_test", "DEF")
_lib.define("untraceable(Tensor x) -> Tensor")
_lib.define("fails_at_run(Tensor x) -> Tensor")
torch.library.impl(_lib, "untraceable", "CPU")(lambda x: x.clone())
_float32_calls = []


@torch.library.impl(_lib, "fails_at_run", "CPU")
def _fails_at_run(x):
    """Works for the CPU reference (the first float32 call), then refuses: only the compiled call fails."""
    if x.dtype == torch.float32:
        _float32_calls.append(x)
        if len(_float32_calls) > 1:
            raise RuntimeError("kernel refused")
    return x.clone()


@torch.library.register_fake("opsuite_test::untraceable", lib=_lib)
def _untraceable_fake(x):
    raise RuntimeError("no shape function for this operator")


@torch.library.register_fake("opsuite_test::fails_at_run", lib=_lib)
def _fails_at_run_fake(x):
    return torch.empty_like(x)


def _with_print(x):
    print("a graph break")
    return torch.sin(x) + 1


class ListSource:
    """A case source over fixed functions, one sample each."""

    kind = "ops"

    def __init__(self, functions):
        self.functions = functions

    def samples(self, case, limit):
        x = torch.linspace(-1, 1, 6, dtype=torch.float32).reshape(2, 3)
        return [Sample(fn=self.functions[case.name], args=(x.requires_grad_(case.direction == "backward"),),
                       label="x")]

    def shape_only_reason(self, case):
        return None


SOURCE = ListSource({"sin": torch.sin, "print": _with_print, "untraceable": torch.ops.opsuite_test.untraceable,
                     "fails_at_run": torch.ops.opsuite_test.fails_at_run, "mul": lambda x: x * x})


@pytest.fixture(scope="module")
def inductor():
    return backends.open_backend("inductor")


def run(backend, name, direction="forward"):
    return run_case(Case("ops", name, "float32", direction), SOURCE, backend, limit=None)


def test_compiled_case_passes_and_counts_its_graph(inductor):
    record = run(inductor, "sin")
    assert record.status is Status.PASS, record.failure
    assert record.compiles == 1 and record.compile_s > 0
    assert record.extra["graph_breaks"] == 0


def test_cases_do_not_share_compiled_graphs(inductor):
    first, second = run(inductor, "sin"), run(inductor, "sin")
    assert first.compiles == second.compiles == 1  # recompiled from an empty Dynamo cache


def test_graph_break_counted_with_its_reason(inductor):
    record = run(inductor, "print")
    assert record.status is Status.PASS, record.failure
    assert record.extra["graph_breaks"] == 1
    [reason] = record.extra["graph_break_reasons"]
    assert "builtin operator" in reason and "\n" not in reason


def test_compile_failure_is_a_compile_error(inductor):
    record = run(inductor, "untraceable")
    assert (record.status, record.stage) == (Status.COMPILE_ERROR, Stage.COMPILE)
    # Dynamo's own headline and graph-break code; the underlying error is in the traceback.
    assert record.failure.error_type == "TorchRuntimeError"
    assert record.failure.message == "RuntimeError when making fake tensor call"
    assert record.failure.code.startswith("GB")


def test_error_of_the_compiled_code_is_a_runtime_error(inductor):
    record = run(inductor, "fails_at_run")
    assert (record.status, record.stage) == (Status.RUNTIME_ERROR, Stage.TRACE)
    assert record.failure.message == "kernel refused"


def test_backward_compile_failure_is_a_compile_error(inductor, monkeypatch):
    """The backward graph is compiled lazily, inside autograd: its failure is staged all the same."""
    compile_inner = inductor._compile_fx_inner

    def refuse_backward(gm, example_inputs, **kwargs):
        if kwargs.get("is_backward"):
            raise AssertionError("cannot lower the backward graph")
        return compile_inner(gm, example_inputs, **kwargs)

    monkeypatch.setattr(inductor, "_compile_fx_inner", refuse_backward)
    record = run(inductor, "mul", "backward")
    assert (record.status, record.stage) == (Status.COMPILE_ERROR, Stage.COMPILE)
    assert record.failure.message == "cannot lower the backward graph"
