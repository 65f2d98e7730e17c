"""What a person reads at the end of a run: the cases that did not pass, and the summary tables (tabulate)."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Iterable

from tabulate import tabulate

from opsuite import vocabulary
from opsuite.matrix import notes, render_md
from opsuite.record import CaseRecord, Status

if TYPE_CHECKING:
    from opsuite.results import Run

# Columns in reading order: best first.
STATUS_COLUMNS = [Status(s) for s in vocabulary.STATUSES]


def status_counts(records: Iterable[CaseRecord]) -> Counter[Status]:
    """How many records ended in each status."""
    return Counter(r.status for r in records)


def status_table(records: list[CaseRecord], tablefmt: str = "github") -> str:
    """Counts per status, one row per dtype x direction and a total row."""
    groups: dict[tuple[str, str], list[CaseRecord]] = {}
    for record in records:
        _, _, dtype, direction = vocabulary.parse_case_id(record.case_id)
        groups.setdefault((direction, dtype), []).append(record)
    headers = ["direction", "dtype", *(s.value for s in STATUS_COLUMNS), "total"]
    rows = []
    for (direction, dtype), group in sorted(groups.items()):
        counts = status_counts(group)
        rows.append([direction, dtype, *(counts.get(s, 0) for s in STATUS_COLUMNS), len(group)])
    counts = status_counts(records)
    rows.append(["all", "", *(counts.get(s, 0) for s in STATUS_COLUMNS), len(records)])
    return tabulate(rows, headers=headers, tablefmt=tablefmt)


def category_table(records: list[CaseRecord]) -> str:
    """The snapshot page's summary by category and status, of a run's records."""
    return render_md.summary_table({r.case_id: r.to_json() for r in records})


def not_passed_lines(run: "Run") -> list[str]:
    """One line per case that did not pass, in the tables' status order: status, case, why, repro command.

    Skips are only counted: they are not applicable (the CPU reference itself cannot run them).
    """
    order = {status: n for n, status in enumerate(STATUS_COLUMNS)}
    records = sorted((r for r in run.records if r.status not in (Status.PASS, Status.SKIP)),
                     key=lambda r: (order[r.status], r.case_id))
    return [f"{r.status.value} {r.case_id}: {notes.short(r.to_json())}; "
            f"repro: {notes.repro_command(r.case_id, run.backend, r.to_json())}" for r in records]


def run_report(run: "Run") -> str:
    """The end of a run: the cases that did not pass, then the summary by category and the status table."""
    lines = not_passed_lines(run)
    out = ([f"{len(lines)} cases did not pass:", *lines, ""] if lines else []) + [
        "Summary by category and status:", category_table(run.records), "",
        "By dtype and direction:", status_table(run.records)]
    return "\n".join(out)
