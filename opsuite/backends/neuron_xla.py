"""torch-neuronx's XLA stack (`PJRT_DEVICE=NEURON`, Trn1, Inf2, Trn2; torch 2.9 is its last release).

On top of the XLA backend it records the Neuron versions, compiler flags, instance type and logical
core setting, and gives every compiler version its own compile cache with failed compilations
retried, so that a failure cached by one night's compiler does not hide the next release's fix.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from opsuite.backends import neuron_tools
from opsuite.backends.base import package_version
from opsuite.backends.xla import XlaBackend

RETRY_FLAG = "--retry_failed_compilation"
DEFAULT_CACHE_ROOT = "/var/tmp/neuron-compile-cache"


class NeuronXlaBackend(XlaBackend):
    name = "neuron-xla"
    pjrt_device = "NEURON"
    numerics_env = XlaBackend.numerics_env + (
        "NEURON_CC_FLAGS", "NEURON_RT_STOCHASTIC_ROUNDING_EN", "NEURON_LOGICAL_NC_CONFIG",
        "NEURON_COMPILE_CACHE_URL", "NEURON_RT_VISIBLE_CORES",
    )

    def configure_env(self) -> None:
        os.environ["PJRT_DEVICE"] = self.pjrt_device
        configure_compile_cache(os.environ, neuron_tools.compiler_version())

    def stack(self) -> dict[str, Any]:
        compiler = neuron_tools.compiler_version()
        return {
            **super().stack(),
            "neuron_sdk": neuron_tools.sdk_release(os.environ),
            "torch_neuronx": package_version("torch-neuronx"),
            "libneuronxla": package_version("libneuronxla"),
            "neuronx_cc": compiler,
            "neuron_runtime": neuron_tools.runtime_version(),
            "instance_type": neuron_tools.instance_type(),
            "logical_nc_config": os.environ.get("NEURON_LOGICAL_NC_CONFIG"),
            **neuron_tools.numerics_flags(os.environ, compiler),
        }


def configure_compile_cache(env: "os._Environ[str] | dict[str, str]", compiler_version: str | None) -> None:
    """Point the compile cache at a directory of this compiler version, and retry cached failures.

    A cache URL the user set is kept as the root; a local root gains a per-version subdirectory
    (an s3:// root is left alone: its keys already differ per version).
    """
    root = env.get("NEURON_COMPILE_CACHE_URL", DEFAULT_CACHE_ROOT)
    if "://" not in root:
        version_dir = f"neuronx-cc-{compiler_version or 'unknown'}"
        if Path(root).name != version_dir:
            root = str(Path(root) / version_dir)
    env["NEURON_COMPILE_CACHE_URL"] = root
    flags = env.get("NEURON_CC_FLAGS", "")
    if RETRY_FLAG not in flags.split():
        env["NEURON_CC_FLAGS"] = f"{flags} {RETRY_FLAG}".strip()
