"""Eager CUDA: the GPU that users come from, as a column to compare Trainium with.

Uses nothing newer than torch 2.11, so that it runs on whatever torch a lent GPU machine brings.
"""

from __future__ import annotations

import subprocess
from typing import Any

import torch

from opsuite.backends.base import Backend


class CudaBackend(Backend):
    name = "cuda"
    # TF32 and reduced-precision reductions change float32 and half results; these set them.
    numerics_env = ("CUDA_VISIBLE_DEVICES", "NVIDIA_TF32_OVERRIDE", "TORCH_ALLOW_TF32_CUBLAS_OVERRIDE",
                    "CUBLAS_WORKSPACE_CONFIG")

    def prepare(self) -> None:
        reason = unavailable()
        if reason:
            raise RuntimeError(reason)
        full_float32_precision()
        self._device = torch.device("cuda", torch.cuda.current_device())
        if not self.recover():
            raise RuntimeError("a trivial computation on the GPU failed")

    def device(self) -> torch.device:
        return self._device

    def stack(self) -> dict[str, Any]:
        major, minor = torch.cuda.get_device_capability(self._device)
        return {
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
            "gpu": torch.cuda.get_device_name(self._device),
            "compute_capability": f"{major}.{minor}",
            "driver": _driver_version(),
            "devices": torch.cuda.device_count(),
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
            "cublas_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
            "fp16_reduced_precision_reduction": torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction,
            "bf16_reduced_precision_reduction": torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction,
        }

    def sync(self) -> None:
        torch.cuda.synchronize(self._device)


def full_float32_precision() -> None:
    """Turn TF32 off for matmuls and cuDNN convolutions: a verdict judges float32 as float32.

    cuDNN allows TF32 by default, so conv3d backward was judged at 10-bit mantissas; the stack records
    these flags (a run that keeps TF32 on is another snapshot).
    """
    torch.backends.cuda.matmul.allow_tf32 = False
    # Not `torch.backends.cudnn.allow_tf32 = False`: importing OpInfo (torch.testing._internal.common_utils)
    # freezes the cuDNN flags of the process, and the public setter then raises.
    torch._C._set_cudnn_allow_tf32(False)
    torch.set_float32_matmul_precision("highest")


def unavailable() -> str | None:
    """Why this environment cannot run the cuda backend, or None when it can."""
    if torch.cuda.is_available():
        return None
    build = f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
    return (f"backend 'cuda' needs an NVIDIA GPU, and torch.cuda.is_available() is False here "
            f"(torch {torch.__version__}, {build}); run it on a GPU machine")


def _driver_version() -> str | None:
    """The NVIDIA driver's version, from nvidia-smi (None where it cannot be run)."""
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.splitlines()[0].strip() if done.stdout.strip() else None
