"""Differences between two sets of cells: regressed, improved, changed error class, added, removed.

The same rule serves `opsuite diff A B` (snapshots, or a finished run's results file on either side,
compared without publishing it) and the nightly regression mode (a baseline snapshot against a new
run): only `pass` is working, so pass -> fallback is a regression too, and so is a host fallback (right
numbers, partly on the host) that became a failure.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tabulate import tabulate

from opsuite.matrix import MatrixError, notes, snapshot
from opsuite.vocabulary import NOT_APPLICABLE, WORKING, working_rank

CLASSES = ("regressed", "improved", "changed", "added", "removed")
EXIT_OK, EXIT_REGRESSED = 0, 1


def change(old: dict[str, Any] | None, new: dict[str, Any] | None) -> str | None:
    """How a cell changed between two results, one of CLASSES, or None when it did not."""
    if old is None:
        return None if new is None else "added"
    if new is None:
        return "removed"
    before, after = old["status"], new["status"]
    if NOT_APPLICABLE in (before, after):
        return None if before == after else "changed"
    if working_rank(after) < working_rank(before):  # a pass that fell back or failed; a fallback that failed
        return "regressed"
    if after in WORKING:
        return None if before in WORKING else "improved"
    return None if notes.error_class(old) == notes.error_class(new) else "changed"


def compare(old: dict[str, dict[str, Any]], new: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    """Case ids of every change between two cell maps, by class."""
    found: dict[str, list[str]] = {name: [] for name in CLASSES}
    for case_id in sorted(old.keys() | new.keys()):
        kind = change(old.get(case_id), new.get(case_id))
        if kind:
            found[kind].append(case_id)
    return found


@dataclass
class Side:
    """One side of a diff: a snapshot or a results file, by its cells."""

    id: str
    label: str
    cells: dict[str, dict[str, Any]]


def side(ref: str, matrix: Path) -> Side:
    """What a user named as a side of a diff: a results file (`.jsonl`, not published), or a snapshot
    (its directory, snapshot.json or id)."""
    path = Path(ref)
    if ref.endswith((".jsonl", ".jsonl.gz")) and not path.is_file():
        raise MatrixError(f"no results file {ref}")
    if path.is_file() and path.name != snapshot.FILE:
        cells = snapshot.run_cells(path)
        run_ids = sorted({cell["source"]["run_id"] for cell in cells.values()})
        return Side(str(path), f"run {', '.join(run_ids)}, not published", cells)
    snap = snapshot.load(snapshot.resolve(ref, matrix))
    return Side(snap.id, snap.data["label"], snap.cells)


def diff(a: Side, b: Side) -> dict[str, Any]:
    """The JSON-ready diff of `a` (before) and `b` (after), with both cells of every change."""
    changes = compare(a.cells, b.cells)
    return {
        "a": {"id": a.id, "label": a.label},
        "b": {"id": b.id, "label": b.label},
        "counts": {name: len(ids) for name, ids in changes.items()},
        "changes": {name: [{"case_id": case_id, "a": a.cells.get(case_id), "b": b.cells.get(case_id)}
                           for case_id in ids] for name, ids in changes.items()},
    }


def _cell(cell: dict[str, Any] | None) -> str:
    return "-" if cell is None else notes.one_line(cell)


def text(result: dict[str, Any]) -> str:
    """The diff as text tables: counts, then one table per kind of change."""
    out = [f"A: {result['a']['id']} ({result['a']['label']})", f"B: {result['b']['id']} ({result['b']['label']})", "",
           tabulate([[name, count] for name, count in result["counts"].items()], headers=["change", "cases"]), ""]
    for name in CLASSES:
        entries = result["changes"][name]
        if entries:
            out += [f"{name} ({len(entries)}):",
                    tabulate([[e["case_id"], _cell(e["a"]), _cell(e["b"])] for e in entries],
                             headers=["case", "A", "B"], maxcolwidths=[None, 60, 60]), ""]
    return "\n".join(out)


def exit_code(result: dict[str, Any]) -> int:
    """EXIT_REGRESSED when any case regressed, else EXIT_OK."""
    return EXIT_REGRESSED if result["counts"]["regressed"] else EXIT_OK
