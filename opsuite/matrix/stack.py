"""The identity of a stack: which results may share a snapshot, its directory name, its version order.

A snapshot is keyed by the backend and the exact stack a run recorded in its header: every package and
tool version and device fact (`stack`) and every numerics-relevant flag (`env`). Two runs whose keys
differ are different stacks, even when only a compiler flag differs.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

# Per backend, the header fields that name its version, most significant first: they order the snapshots
# of a backend (history, charts) and make the directory name readable. Unlisted backends use torch's.
_NEURON = ("neuron_sdk", "torch_neuronx", "neuronx_cc", "neuron_runtime", "instance_type")
VERSION_FIELDS: dict[str, tuple[str, ...]] = {
    "neuron": (*_NEURON, "torch"),
    "neuron-compile": (*_NEURON, "torch"),
    "neuron-xla": (*_NEURON, "torch_xla", "torch"),
    "xla": ("torch_xla", "torch", "pjrt_device"),
    "cpu": ("torch",),
}
DEFAULT_VERSION_FIELDS = ("torch",)

# Header facts that say where or how much, not what is computed: they do not split snapshots.
NOT_IN_KEY = frozenset({"devices", "NEURON_COMPILE_CACHE_URL", "NEURON_RT_VISIBLE_CORES"})

_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


def version_fields(backend: str) -> tuple[str, ...]:
    """The header fields naming a backend's version, most significant first."""
    return VERSION_FIELDS.get(backend, DEFAULT_VERSION_FIELDS)


def identity(header: dict[str, Any]) -> dict[str, Any]:
    """What must be equal for two results files to be one stack: backend, stack and env, less NOT_IN_KEY."""
    return {
        "backend": header["backend"],
        "stack": {k: v for k, v in sorted(header["stack"].items()) if k not in NOT_IN_KEY},
        "env": {k: v for k, v in sorted(header["env"].items()) if k not in NOT_IN_KEY},
    }


def versions(header: dict[str, Any]) -> dict[str, Any]:
    """The version fields of a header that it has, in significance order."""
    stack = header["stack"]
    return {name: stack[name] for name in version_fields(header["backend"]) if stack.get(name) is not None}


def key(header: dict[str, Any]) -> str:
    """The snapshot directory name: the versions, readable, then a hash of the whole identity."""
    digest = hashlib.sha256(json.dumps(identity(header), sort_keys=True).encode()).hexdigest()[:10]
    parts = [f"{name}-{value}" for name, value in versions(header).items()]
    return "__".join(safe_name(part) for part in [*parts, digest])


def safe_name(text: str) -> str:
    """Text made fit for a file name: runs of characters other than letters, digits, `._+-` become `_`."""
    return _UNSAFE.sub("_", text)


def label(header: dict[str, Any]) -> str:
    """A short human name of the stack, e.g. `torch_xla 2.9.0 · torch 2.9.0+cu128 · pjrt_device CPU`."""
    return " · ".join(f"{name} {value}" for name, value in versions(header).items()) or header["backend"]


def release_name(backend: str, versions_: dict[str, Any]) -> str | None:
    """The most significant version a snapshot has (`2.9.0` for torch_xla 2.9.0): how people name a release."""
    return next((str(versions_[name]) for name in version_fields(backend) if versions_.get(name) is not None), None)


def order_key(backend: str, versions_: dict[str, Any], started_at: str) -> tuple:
    """Sort key of a snapshot among its backend's: each version field as a version, then the run's start."""
    from packaging.version import InvalidVersion, Version

    parts = []
    for name in version_fields(backend):
        value = versions_.get(name)
        if value is None:
            parts.append((0, Version("0"), ""))
            continue
        try:
            parts.append((1, Version(str(value)), ""))
        except InvalidVersion:  # instance types, device names: ordered as text, after versions
            parts.append((2, Version("0"), str(value)))
    return (tuple(parts), started_at)
