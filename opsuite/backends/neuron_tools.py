"""Facts about a Neuron machine read from its tools and files, never from the network.

Each function returns None where the tool or file is absent, so a header can always be written.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

DMI_PRODUCT_NAME = Path("/sys/devices/virtual/dmi/id/product_name")
NEURON_DEVICE_GLOB = "neuron*"
VISIBLE_CORES = "NEURON_RT_VISIBLE_CORES"
# No installed file names the Neuron SDK release (it is a set of package versions): whoever installs the
# SDK by release, as .github/workflows/neuron-nightly.yml does, says which one here.
SDK_RELEASE_ENV = "OPSUITE_NEURON_SDK_RELEASE"
# neuronx-cc 2.22 (Neuron 2.27) changed the default of --auto-cast from matmult to none.
AUTO_CAST_NONE_SINCE = "2.22"


def _run(argv: list[str], timeout: float = 30.0) -> str | None:
    if shutil.which(argv[0]) is None:
        return None
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def compiler_version() -> str | None:
    """neuronx-cc's version, from `neuronx-cc --version` ("NeuronX Compiler version 2.14.227.0+2d4f85be")."""
    out = _run(["neuronx-cc", "--version"])
    match = re.search(r"version\s+([0-9][\w.+-]*)", out or "")
    if match:
        return match.group(1)
    from opsuite.backends.base import package_version

    return package_version("neuronx-cc")


def sdk_release(env: "os._Environ[str] | dict[str, str]") -> str | None:
    """The Neuron SDK release this stack was installed from, when the installer recorded it."""
    return env.get(SDK_RELEASE_ENV) or None


def numerics_flags(env: "os._Environ[str] | dict[str, str]", compiler: str | None) -> dict[str, Any]:
    """The compiler and runtime settings that change a Neuron result, as the stack records them.

    `auto_cast` is the effective --auto-cast (the compiler's default when NEURON_CC_FLAGS does not set
    it; None when neither the flag nor the compiler version is known), `native_int64` whether int64
    stays int64 (else it is computed in int32), `stochastic_rounding` NEURON_RT_STOCHASTIC_ROUNDING_EN
    as set (None: the runtime's default), `neuron_cc_flags` the flags in full.
    """
    flags = env.get("NEURON_CC_FLAGS", "")
    try:
        words = shlex.split(flags)
    except ValueError:  # unbalanced quotes: the compiler would refuse them too; keep the text
        words = flags.split()
    given: dict[str, str | None] = {}
    for i, word in enumerate(words):
        name, eq, value = word.partition("=")
        if name.startswith("--"):
            follows = words[i + 1] if i + 1 < len(words) and not words[i + 1].startswith("-") else None
            given[name] = value if eq else follows
    return {
        "auto_cast": given.get("--auto-cast") or _default_auto_cast(compiler),
        "auto_cast_type": given.get("--auto-cast-type"),
        "native_int64": "--native-int64" in given,
        "stochastic_rounding": env.get("NEURON_RT_STOCHASTIC_ROUNDING_EN"),
        "neuron_cc_flags": flags,
    }


def _default_auto_cast(compiler: str | None) -> str | None:
    from packaging.version import InvalidVersion, Version

    try:
        return "none" if Version(compiler or "") >= Version(AUTO_CAST_NONE_SINCE) else "matmult"
    except InvalidVersion:
        return None


def runtime_version() -> str | None:
    """The Neuron runtime library's package version (Debian or RPM package aws-neuronx-runtime-lib)."""
    out = _run(["dpkg-query", "-W", "-f=${Version}", "aws-neuronx-runtime-lib"])
    if out:
        return out.strip()
    out = _run(["rpm", "-q", "--qf", "%{VERSION}-%{RELEASE}", "aws-neuronx-runtime-lib"])
    return out.strip() if out else None


def neuron_ls() -> list[dict[str, Any]] | None:
    """`neuron-ls -j`: one entry per Neuron device, each with its `nc_count`."""
    out = _run(["neuron-ls", "-j"])
    if out is None:
        return None
    try:
        data = json.loads(out)
    except json.JSONDecodeError:
        return None
    return data if isinstance(data, list) else None


def core_count() -> int | None:
    """The number of NeuronCores visible on this machine, summed over `neuron-ls -j`'s devices."""
    devices = neuron_ls()
    if not devices:
        return None
    return sum(int(d.get("nc_count", 0)) for d in devices) or None


def instance_type() -> str | None:
    """The EC2 instance type: DMI's product name on Nitro instances, else `neuron-ls`'s header."""
    try:
        name = DMI_PRODUCT_NAME.read_text().strip()
        if re.fullmatch(r"(trn|inf)\d\w*\.\w+", name):
            return name
    except OSError:
        pass
    out = _run(["neuron-ls"])
    match = re.search(r"instance-type:\s*(\S+)", out or "")
    return match.group(1) if match else None


def has_neuron_device(dev: Path = Path("/dev")) -> bool:
    """True when a Neuron device node (/dev/neuron0, ...) exists."""
    return any(dev.glob(NEURON_DEVICE_GLOB))


def parse_cores(value: str) -> list[int]:
    """NEURON_RT_VISIBLE_CORES's syntax, "3", "0-3" or "0-1,4", as the list of cores it names."""
    cores: list[int] = []
    for part in value.replace(" ", "").split(","):
        first, _, last = part.partition("-")
        if not first.isdigit() or (last and not last.isdigit()):
            raise ValueError(f"{VISIBLE_CORES}={value!r} is not a core list such as 0, 0-3 or 0-1,4")
        cores.extend(range(int(first), int(last or first) + 1))
    return cores


def worker_count(visible: str | None) -> int | None:
    """How many one-core workers fit: the cores NEURON_RT_VISIBLE_CORES names, else all cores found."""
    return len(parse_cores(visible)) if visible else core_count()


def core_for_worker(index: int, visible: str | None) -> str:
    """The NeuronCore the `index`-th parallel worker takes: its place among the visible cores, else `index`.

    Cores are never shared between processes, so a worker without a core of its own is refused here
    rather than left to fail at its first case.
    """
    if not visible:
        return str(index)
    cores = parse_cores(visible)
    if index >= len(cores):
        raise ValueError(f"worker {index} has no NeuronCore of its own: {VISIBLE_CORES}={visible} names "
                         f"{len(cores)}; run at most {len(cores)} workers")
    return str(cores[index])
