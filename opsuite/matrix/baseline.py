"""Nightly regression mode: a run judged against a baseline snapshot.

A case that passed in the baseline and does not pass now is a regression (the run fails); a case that
did not pass in the baseline, or is not in it, is expected to fail (pytest xfail) and reported as an
improvement when it passes now; a baseline case the run did not run is **missing**, and fails the run
unless the user says it was deselected on purpose (`--allow-missing`). The run takes the baseline's
options (`profile`) unless told otherwise, so it compares like with like. Used by the pytest plugin
(`--baseline`) and by `opsuite run --baseline`.
"""

from __future__ import annotations

import json
from typing import Any

from tabulate import tabulate

from opsuite import profiles
from opsuite.matrix import DIRECTION_ORDER, DTYPE_ORDER, MatrixError, diff, find_matrix, notes, snapshot
from opsuite.matrix.snapshot import Snapshot, split_id

SHOWN_IN_FULL = 20  # regressions whose two records are printed in full


def load(ref: str, backend: str) -> Snapshot:
    """The baseline snapshot a user named; refuses one of another backend."""
    snap = snapshot.load(snapshot.resolve(ref, find_matrix()))
    if snap.backend != backend:
        raise MatrixError(f"baseline {snap.id} is a {snap.backend} snapshot; this run is on {backend}")
    return snap


def profile(snap: Snapshot) -> profiles.Profile:
    """The options the baseline was run with: the profile its runs recorded when they all name one;
    otherwise (snapshots from before profiles were recorded) the kinds, dtypes and directions of its cells,
    with the most samples any of its runs took."""
    runs = snap.data["runs"]
    recorded = {(run.get("options") or {}).get("profile") for run in runs}
    if len(recorded) == 1 and next(iter(recorded)) in profiles.PROFILES:
        return profiles.PROFILES[next(iter(recorded))]
    parts = [split_id(case_id) for case_id in snap.cells]

    def ordered(values: set[str], order: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(sorted(values, key=lambda v: (order.index(v) if v in order else len(order), v)))

    samples = [str((run.get("options") or {}).get("samples", profiles.PROFILES[profiles.DEFAULT].samples))
               for run in runs]
    most = "all" if "all" in samples else str(max(int(s) for s in samples))
    return profiles.Profile(None, ordered({p[0] for p in parts}, profiles.PROFILES[profiles.DEFAULT].kinds),
                            ordered({p[2] for p in parts}, DTYPE_ORDER), ordered({p[3] for p in parts}, DIRECTION_ORDER),
                            most)


def expected_to_pass(snap: Snapshot, case_id: str) -> bool:
    """Whether the baseline holds this case as passing (a failure now is a regression)."""
    cell = snap.cells.get(case_id)
    return cell is not None and cell["status"] in diff.WORKING


def xfail_reason(snap: Snapshot, case_id: str) -> str:
    """Why a case is expected to fail: its baseline cell, or its absence."""
    cell = snap.cells.get(case_id)
    if cell is None:
        return f"not in baseline {snap.id}"
    return f"baseline {snap.id}: {notes.one_line(cell)}"


def _record(cell: dict[str, Any]) -> str:
    shown = {k: v for k, v in cell.items() if k != "aten_ops"}
    return json.dumps(shown, sort_keys=True, default=str)


def regression_message(snap: Snapshot, case_id: str, new: dict[str, Any]) -> str:
    """The failure text of a regressed case: both records."""
    return (f"REGRESSION: {case_id} passed in baseline {snap.id}, now {new['status']}\n"
            f"  baseline record: {_record(snap.cells[case_id])}\n"
            f"  new record:      {_record(new)}")


def compare(snap: Snapshot, cells: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    """Changes from the baseline to this run's cells, over the cases this run ran (not run is not removed)."""
    return diff.compare({k: v for k, v in snap.cells.items() if k in cells}, cells)


def missing(snap: Snapshot, cells: dict[str, dict[str, Any]]) -> list[str]:
    """The baseline's cases this run has no record of (deselected, lost to a killed run, gone from the catalog)."""
    return sorted(set(snap.cells) - set(cells))


def failed(changes: dict[str, list[str]], absent: list[str], allow_missing: bool) -> bool:
    """Whether the comparison fails the run: a regression, or a missing case not allowed to be."""
    return bool(changes["regressed"]) or bool(absent and not allow_missing)


def report(snap: Snapshot, cells: dict[str, dict[str, Any]], changes: dict[str, list[str]],
           absent: list[str] = (), allow_missing: bool = False) -> str:
    """Text: counts, missing cases, regressions (both records), improvements, other changes."""
    out = [f"baseline {snap.id} ({snap.data['label']}): {len(cells)} cases compared",
           tabulate([[name, len(ids)] for name, ids in changes.items()] + [["missing", len(absent)]],
                    headers=["change", "cases"]), ""]
    if absent:
        why = ("deselected on purpose (--allow-missing)" if allow_missing else
               "this fails the run; pass --allow-missing if they were deselected on purpose")
        out += [f"missing ({len(absent)}): baseline cases this run did not run; {why}",
                *(f"  {case_id}" for case_id in absent[:SHOWN_IN_FULL])]
        if len(absent) > SHOWN_IN_FULL:
            out.append(f"  ... and {len(absent) - SHOWN_IN_FULL} more")
        out.append("")
    for name in diff.CLASSES:
        ids = changes[name]
        if ids:
            out += [f"{name} ({len(ids)}):",
                    tabulate([[c, notes.one_line(snap.cells[c]) if c in snap.cells else "-",
                               notes.one_line(cells[c])] for c in ids],
                             headers=["case", "baseline", "now"], maxcolwidths=[None, 60, 60]), ""]
    for case_id in changes["regressed"][:SHOWN_IN_FULL]:
        out += [regression_message(snap, case_id, cells[case_id]), ""]
    if len(changes["regressed"]) > SHOWN_IN_FULL:
        out.append(f"... {len(changes['regressed']) - SHOWN_IN_FULL} more regressions; their records are in the results file")
    return "\n".join(out)
