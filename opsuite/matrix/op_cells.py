"""Per snapshot, `aten.json`: which cases dispatched each aten overload, and how each ended.

`ops[overload]["<dtype>/<direction>"]` is a list of `[case id, status, fell back]`, where `fell back` is 1
when the overload itself is among the case's `fallback_ops` (ran on the host), 0 when the case only
dispatched it. Derived data, written beside `snapshot.json` on publish and reindex, so that `opsuite
audit` can judge a model's ops against a stack by reading one small file instead of the snapshot's
records. A matrix published before this file existed is read from `snapshot.json` instead.
"""

from __future__ import annotations

import array
import json
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterator

from opsuite.matrix import MatrixError
from opsuite.matrix.snapshot import FILE as SNAPSHOT_FILE, split_id

FILE = "aten.json"
FORMAT = "opsuite-op-cells"
VERSION = 1


def _by_op(data: dict[str, Any]) -> Iterator[tuple[str, dict[str, list]]]:
    """Per aten overload (sorted), its cells by `dtype/direction`: `[case id, status, fell back]` each.

    The grouping keeps only each cell's number (times two, plus the fell-back bit) in an array, and an
    overload's lists are made when it comes: a large snapshot has hundreds of thousands of entries.
    """
    case_ids = list(data["cells"])
    ops: dict[str, dict[str, array.array]] = defaultdict(dict)
    for number, (case_id, cell) in enumerate(data["cells"].items()):
        _, _, dtype, direction = split_id(case_id)
        key = f"{dtype}/{direction}"
        fell_back = set(cell.get("fallback_ops") or ())
        for op in cell.get("aten_ops") or ():
            # Backends name a fallback with or without its overload (`aten::nonzero`, `aten::scatter_reduce.two`).
            host = op in fell_back or op.partition(".")[0] in fell_back
            ops[op].setdefault(key, array.array("q")).append(2 * number + host)
    statuses = [cell["status"] for cell in data["cells"].values()]
    for op in sorted(ops):
        yield op, {key: [[case_ids[n >> 1], statuses[n >> 1], n & 1] for n in entries]
                   for key, entries in ops.pop(op).items()}


def build(data: dict[str, Any]) -> dict[str, Any]:
    """The aten.json object of a snapshot's JSON object."""
    return {"format": FORMAT, "schema_version": VERSION, "snapshot": data["id"], "ops": dict(_by_op(data))}


def text(data: dict[str, Any]) -> Iterator[str]:
    """aten.json's text for a snapshot's JSON object (`build`'s object, compact), in pieces: one per overload."""
    head = json.dumps({"format": FORMAT, "schema_version": VERSION, "snapshot": data["id"]}, separators=(",", ":"))
    yield head[:-1] + ',"ops":{'
    for number, (op, cells) in enumerate(_by_op(data)):
        yield f"{',' if number else ''}{json.dumps(op)}:{json.dumps(cells, separators=(',', ':'))}"
    yield "}}\n"


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
