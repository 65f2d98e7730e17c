"""The lookup index, `matrix/index.json`: every snapshot's cells in one small file, written on publish.

`opsuite lookup` and `opsuite history` read this one file instead of every snapshot, so they answer in a
fraction of a second with nothing but the standard library. It is derived data (rebuilt from the
snapshots by `opsuite reindex`), so it is checked for its format and version, not schema-validated.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from opsuite.matrix import MatrixError, notes
from opsuite.matrix.snapshot import Snapshot, split_id

FILE = "index.json"
FORMAT = "opsuite-matrix-index"
VERSION = 1


def build(snapshots: list[Snapshot]) -> dict[str, Any]:
    """The index object of snapshots (given in backend, version order).

    `subjects[kind/name][snapshot number][dtype/direction]` is [status, short note, file:line, run id].
    """
    subjects: dict[str, dict[str, dict[str, list[str]]]] = defaultdict(lambda: defaultdict(dict))
    aten: dict[str, set[str]] = defaultdict(set)
    entries = []
    for number, snap in enumerate(snapshots):
        data = snap.data
        entries.append({k: data[k] for k in ("id", "backend", "key", "label", "versions", "started_at",
                                              "published_at", "summary")})
        for case_id, cell in snap.cells.items():
            kind, name, dtype, direction = split_id(case_id)
            src = cell["source"]
            subjects[f"{kind}/{name}"][str(number)][f"{dtype}/{direction}"] = \
                [cell["status"], notes.short(cell), f"{src['file']}:{src['line']}", src["run_id"]]
            for op in cell.get("aten_ops", ()):
                aten[op].add(case_id)
    return {
        "format": FORMAT,
        "schema_version": VERSION,
        "snapshots": entries,
        "subjects": {subject: dict(per_snapshot) for subject, per_snapshot in sorted(subjects.items())},
        "aten": {op: sorted(cases) for op, cases in sorted(aten.items())},
    }


def load(matrix: Path) -> dict[str, Any]:
    """Read `matrix/index.json`; raises MatrixError when there is none or it is of another version."""
    file = matrix / FILE
    try:
        data = json.loads(file.read_text())
    except FileNotFoundError:
        raise MatrixError(f"no published matrix at {matrix} (no {FILE}); publish results with "
                          f"`opsuite publish RESULTS...` or point --matrix at one") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise MatrixError(f"{file}: cannot read the lookup index ({exc}); rebuild it with `opsuite reindex`") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("schema_version") != VERSION:
        raise MatrixError(f"{file}: not a version {VERSION} lookup index; rebuild it with `opsuite reindex`")
    return data
