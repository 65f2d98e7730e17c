"""The interface every backend implements, and the counters a case reads from it.

A backend object lives in the worker process that runs cases (see `opsuite/isolation.py`); the pytest
process never imports a device stack, so a crash in one cannot take the run down.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Callable

import torch
from torch.utils import _pytree as pytree

from opsuite.record import Stage


@dataclass
class Counters:
    """What the backend measured for one case, read after it ran."""

    compiles: int | None = None
    compile_cache_hits: int | None = None  # compiles served from a persistent compile cache, where it can tell
    compile_s: float | None = None
    device_s: float | None = None
    fallback_ops: list[str] = field(default_factory=list)
    host_syncs: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


class StageError(Exception):
    """A backend's failure together with the stage it belongs to (e.g. compile, not execute)."""

    def __init__(self, stage: Stage, error: BaseException):
        super().__init__(str(error))
        self.stage, self.error = stage, error


class Backend:
    """A device under test. Subclasses override what differs; the defaults fit an eager device."""

    name: str = ""
    # Environment variables whose values change numerics or compilation; recorded in the run header.
    numerics_env: tuple[str, ...] = ()

    def configure_env(self) -> None:
        """Set environment variables that must be in place before the device stack is imported."""

    def prepare(self) -> None:
        """Import the stack and open the device; raises if there is none."""

    def device(self) -> torch.device:
        """The torch device that case inputs are moved to."""
        raise NotImplementedError

    def stack(self) -> dict[str, Any]:
        """Versions of every package and tool of the stack, and facts about the device."""
        return {"torch": torch.__version__}

    def env(self) -> dict[str, str | None]:
        """The values of `numerics_env`, for the run header."""
        return {name: os.environ.get(name) for name in self.numerics_env}

    def begin_case(self) -> None:
        """Reset per-case counters."""

    def wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """The callable that runs `fn` on this backend: itself for eager, compiled for a compiler."""
        return fn

    def sync(self) -> None:
        """Wait until every queued computation has run (for lazy backends: compile and run it).

        A failure that belongs to a stage other than EXECUTE is raised as `StageError`.
        """

    def to_host(self, value: Any) -> Any:
        """Copy every tensor in `value` to the CPU."""
        return pytree.tree_map_only(torch.Tensor, lambda t: t.detach().cpu(), value)

    def counters(self) -> Counters:
        """Counters accumulated since `begin_case`."""
        return Counters()

    def recover(self) -> bool:
        """Drop dead tensors and check that a trivial computation still runs; False if the runtime is lost.

        After a failed case its tensors can stay referenced (by a traceback): on XLA every later sync then
        fails with `Check failed: tensor_data`, and after a device-side assert a CUDA context is gone.
        """
        gc.collect()
        try:
            probe = torch.ones(2, device=self.device()) + 1
            self.sync()
            return bool((probe.cpu() == 2).all())
        except Exception:  # any failure here means the device cannot be trusted for the next case
            return False


def package_version(name: str) -> str | None:
    """The installed version of a distribution, or None when it is not installed."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None
