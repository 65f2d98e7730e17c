"""The CPU backend: the reference itself run as a device (a sanity baseline; every case should pass)."""

from __future__ import annotations

import torch

from opsuite.backends.base import Backend


class CpuBackend(Backend):
    name = "cpu"

    def device(self) -> torch.device:
        return torch.device("cpu")
