"""Per snapshot, `aten.json`: which cases dispatched each aten overload, and how each ended.

`ops[overload]["<dtype>/<direction>"]` is a list of `[case id, status, fell back]`, where `fell back` is 1
when the overload itself is among the case's `fallback_ops` (ran on the host), 0 when the case only
dispatched it. Derived data, written beside `snapshot.json` on publish and reindex, so that `opsuite
audit` can judge a model's ops against a stack by reading one small file instead of the snapshot's
records. A matrix published before this file existed is read from `snapshot.json` instead.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from opsuite.matrix import MatrixError
from opsuite.matrix.snapshot import FILE as SNAPSHOT_FILE, split_id

FILE = "aten.json"
FORMAT = "opsuite-op-cells"
VERSION = 1


def build(data: dict[str, Any]) -> dict[str, Any]:
    """The aten.json object of a snapshot's JSON object."""
    ops: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for case_id, cell in data["cells"].items():
        _, _, dtype, direction = split_id(case_id)
        fell_back = set(cell.get("fallback_ops") or ())
        for op in cell.get("aten_ops") or ():
            # Backends name a fallback with or without its overload (`aten::nonzero`, `aten::scatter_reduce.two`).
            host = op in fell_back or op.partition(".")[0] in fell_back
            ops[op][f"{dtype}/{direction}"].append([case_id, cell["status"], int(host)])
    return {"format": FORMAT, "schema_version": VERSION, "snapshot": data["id"],
            "ops": {op: dict(cells) for op, cells in sorted(ops.items())}}


def text(data: dict[str, Any]) -> str:
    """aten.json's text for a snapshot's JSON object."""
    return json.dumps(build(data), separators=(",", ":")) + "\n"


def load(directory: Path) -> dict[str, Any]:
    """A snapshot directory's aten.json, or the same built from its snapshot.json when it has none."""
    file = directory / FILE
    if file.is_file():
        try:
            data = json.loads(file.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise MatrixError(f"{file}: cannot read ({exc}); rebuild it with `opsuite reindex`") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("schema_version") != VERSION:
            raise MatrixError(f"{file}: not a version {VERSION} op index; rebuild it with `opsuite reindex`")
        return data
    from opsuite.matrix import snapshot

    return build(snapshot.load(directory / SNAPSHOT_FILE).data)
