"""torch-neuronx's XLA stack (`PJRT_DEVICE=NEURON`, Trn1, Inf2, Trn2; torch 2.9 is its last release).

On top of the XLA backend it records the Neuron versions, compiler flags, instance type and logical
core setting, and gives every compiler version its own compile cache with failed compilations
retried, so that a failure cached by one night's compiler does not hide the next release's fix.
`NEURON_COMPILE_CACHE_URL` may be an s3:// URL that every host of a run shares; each case records how
many of its compiles the cache served (`compile_cache_hits`), counted from the compile wrapper's log.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from opsuite.backends import neuron_tools
from opsuite.backends.base import Counters, package_version
from opsuite.backends.xla import XlaBackend

RETRY_FLAG = "--retry_failed_compilation"
DEFAULT_CACHE_ROOT = "/var/tmp/neuron-compile-cache"
# libneuronxla's compile wrapper says so for each graph the cache serves instead of neuronx-cc, as its lines
# read: `INFO ||NEURON_CC_WRAPPER||: Using a cached neff at <cache>/MODULE_.../model.neff`.
CACHE_HIT_LOGGER = "NEURON_CC_WRAPPER"
CACHE_HIT_TEXT = "Using a cached neff"


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

    def prepare(self) -> None:
        self._cache_hits = CacheHitCounter().install()
        super().prepare()

    def begin_case(self) -> None:
        super().begin_case()
        self._cache_hits.hits = 0

    def counters(self) -> Counters:
        counters = super().counters()
        counters.compile_cache_hits = self._cache_hits.hits
        return counters

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


class CacheHitCounter(logging.Handler):
    """Counts the compile wrapper's "Using a cached neff" lines: compiles the compile cache served.

    Installed on the wrapper's logger (heard even if it does not propagate) and on the root logger (heard
    whatever the wrapper's logger is named); a line reaching both is counted once.
    """

    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self.hits = 0

    def install(self) -> "CacheHitCounter":
        """Listen on the wrapper's logger and the root logger, with INFO lines let through."""
        wrapper = logging.getLogger(CACHE_HIT_LOGGER)
        if not wrapper.isEnabledFor(logging.INFO):
            wrapper.setLevel(logging.INFO)
        for logger in (wrapper, logging.getLogger()):
            logger.addHandler(self)
        return self

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "_opsuite_counted", False) or CACHE_HIT_TEXT not in record.getMessage():
            return
        record._opsuite_counted = True
        self.hits += 1
