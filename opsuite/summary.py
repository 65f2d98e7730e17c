"""Status summary tables of a run's records (tabulate)."""

from __future__ import annotations

from collections import Counter
from typing import Iterable

from tabulate import tabulate

from opsuite.record import SEVERITY, CaseRecord, Status

# Columns in reading order: best first.
STATUS_COLUMNS = [Status.PASS, Status.FALLBACK, Status.MISMATCH, Status.COMPILE_ERROR, Status.RUNTIME_ERROR,
                  Status.CRASH, Status.TIMEOUT, Status.SKIP]
assert set(STATUS_COLUMNS) == set(SEVERITY)


def status_counts(records: Iterable[CaseRecord]) -> Counter[Status]:
    """How many records ended in each status."""
    return Counter(r.status for r in records)


def status_table(records: list[CaseRecord], tablefmt: str = "github") -> str:
    """Counts per status, one row per dtype x direction and a total row."""
    groups: dict[tuple[str, str], list[CaseRecord]] = {}
    for record in records:
        _, _, dtype, direction = record.case_id.split("/")
        groups.setdefault((direction, dtype), []).append(record)
    headers = ["direction", "dtype", *(s.value for s in STATUS_COLUMNS), "total"]
    rows = []
    for (direction, dtype), group in sorted(groups.items()):
        counts = status_counts(group)
        rows.append([direction, dtype, *(counts.get(s, 0) for s in STATUS_COLUMNS), len(group)])
    counts = status_counts(records)
    rows.append(["all", "", *(counts.get(s, 0) for s in STATUS_COLUMNS), len(records)])
    return tabulate(rows, headers=headers, tablefmt=tablefmt)
