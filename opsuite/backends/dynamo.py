"""What the `torch.compile` backends share: a fresh Dynamo per case, compile failures staged, graph facts."""

from __future__ import annotations

import functools
from collections import Counter
from typing import Any, Callable

import torch._dynamo
from torch._dynamo.utils import counters, guard_failures

from opsuite.backends.base import StageError
from opsuite.record import Stage

# How many graph-break reasons a record keeps (most frequent first).
MAX_REASONS = 10


def reset() -> None:
    """Forget every compiled graph and every counter, so that a case neither reuses nor counts another's."""
    torch._dynamo.reset()
    counters.clear()
    guard_failures.clear()


def staged(compiled: Callable[..., Any]) -> Callable[..., Any]:
    """`compiled`, with failures of tracing or compiling raised as `StageError(Stage.COMPILE, ...)`."""

    @functools.wraps(compiled)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return compiled(*args, **kwargs)
        except torch._dynamo.exc.TorchDynamoException as exc:
            # Dynamo wraps every failure of tracing or of the backend compiler in one of these;
            # errors of the compiled code itself arrive unwrapped.
            raise StageError(Stage.COMPILE, root_cause(exc)) from exc

    return run


def root_cause(exc: BaseException) -> BaseException:
    """The error inside Dynamo's and Inductor's wrappers (BackendCompilerFailed, InductorError)."""
    while True:
        inner = exc.error if isinstance(exc, StageError) else getattr(exc, "inner_exception", None)
        if not isinstance(inner, BaseException):
            return exc
        exc = inner


def graph_facts() -> dict[str, Any]:
    """Graph breaks (with their reasons, most frequent first) and recompiles since `reset`."""
    breaks = Counter({_headline(reason): count for reason, count in counters["graph_break"].items()})
    return {
        "graph_breaks": sum(breaks.values()),
        "graph_break_reasons": dict(breaks.most_common(MAX_REASONS)),
        "recompiles": sum(len(reasons) for reasons in guard_failures.values()),
    }


def captured_graphs() -> int:
    """How many graphs Dynamo handed to the backend since `reset`."""
    return counters["stats"]["unique_graphs"]


def _headline(reason: str) -> str:
    """A graph-break reason's first line ("Dynamic shape operator"), without explanations and hints."""
    return reason.strip().splitlines()[0].strip() if reason.strip() else "unknown"
