"""Status summary tables of a run's records (tabulate)."""

from __future__ import annotations

from collections import Counter
from typing import Iterable

from tabulate import tabulate

from opsuite import vocabulary
from opsuite.record import CaseRecord, Status

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
