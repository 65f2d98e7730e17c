"""The XLA backend: torch-xla's lazy tensors on whatever PJRT device is configured (CPU here).

This is the same tracing, compile and CPU-fallback path that torch-neuronx's XLA stack runs on
Trainium; `neuron_xla.py` adds only what is Neuron's own. Fallbacks and compiles are read from
`torch_xla.debug.metrics`.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from opsuite.backends.base import Backend, Counters, StageError, package_version
from opsuite.record import Stage

# `.item()` and friends: a sync that copies a value to the host, not a missing lowering.
HOST_SYNC_OPS = frozenset({"aten::_local_scalar_dense"})


class XlaBackend(Backend):
    name = "xla"
    pjrt_device = "CPU"
    numerics_env = ("PJRT_DEVICE", "XLA_FLAGS", "XLA_USE_BF16", "XLA_DOWNCAST_BF16", "XLA_USE_32BIT_LONG")

    def configure_env(self) -> None:
        # Respect a device the user chose; otherwise XLA:CPU is the stand-in everywhere.
        os.environ.setdefault("PJRT_DEVICE", self.pjrt_device)

    def prepare(self) -> None:
        import torch_xla
        import torch_xla.debug.metrics as met

        self._xla = torch_xla
        self._met = met
        self._device = torch_xla.device()
        self.recover()

    def device(self) -> torch.device:
        return self._device

    def stack(self) -> dict[str, Any]:
        import torch_xla.runtime as xr

        return {
            "torch": torch.__version__,
            "torch_xla": package_version("torch-xla") or getattr(self._xla, "__version__", None),
            "pjrt_device": xr.device_type(),
            "device_kind": _device_kind(),
            "devices": xr.global_runtime_device_count(),
        }

    def begin_case(self) -> None:
        self._met.clear_all()

    def sync(self) -> None:
        compiled_before = self._metric_count("CompileTime")
        try:
            self._xla.sync()
        except Exception as exc:
            # CompileTime gains a sample only once a compile has finished: if it has not moved, the
            # failure came from compiling (or lowering) the graph, else from running it.
            compiled = self._metric_count("CompileTime") > compiled_before
            raise StageError(Stage.EXECUTE if compiled else Stage.COMPILE, exc) from exc

    def counters(self) -> Counters:
        met = self._met
        fallbacks = sorted(set(met.executed_fallback_ops()))
        return Counters(
            compiles=met.counter_value("UncachedCompile") or 0,
            compile_s=self._metric_total_s("CompileTime"),
            device_s=self._metric_total_s("ExecuteTime"),
            fallback_ops=[op for op in fallbacks if op not in HOST_SYNC_OPS],
            host_syncs=[op for op in fallbacks if op in HOST_SYNC_OPS],
        )

    def _metric_total_s(self, name: str) -> float:
        data = self._met.metric_data(name)
        return (data[1] / 1e9) if data else 0.0

    def _metric_count(self, name: str) -> int:
        data = self._met.metric_data(name)
        return int(data[0]) if data else 0


def _device_kind() -> str | None:
    try:
        import torch_xla.core.xla_model as xm

        return xm.xla_device_kind()
    except Exception:  # older or newer torch-xla without it: the kind is a nicety, not a requirement
        return None
