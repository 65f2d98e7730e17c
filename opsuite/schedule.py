"""The order cases run in and how they split into shards, from the time each took last time.

A run's end is set by its slowest worker: a long model case started last keeps every other core idle
while it finishes. So cases run longest first, by the wall time each took in the latest published
snapshot of the same backend (a case the snapshot lacks gets the median of its kind there). The same
expected times split a run into `--shard K/N` parts: greedy longest-processing-time onto N bins, ties
broken by case id, so every host of a CI matrix, Indexed Job or job array computes the same split.

Torch-free: the pytest process (and each xdist worker) computes the order while collecting.
"""

from __future__ import annotations

import heapq
import statistics
from dataclasses import dataclass
from pathlib import Path

from opsuite.matrix import snapshot
from opsuite.vocabulary import parse_case_id


@dataclass(frozen=True)
class Shard:
    """Part `index` (1-based) of `count` equal-effort parts of a run."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> "Shard":
        """`K/N` with 1 <= K <= N; raises ValueError naming the value otherwise."""
        index, slash, count = str(text).partition("/")
        if not (slash and index.isdigit() and count.isdigit() and 1 <= int(index) <= int(count)):
            raise ValueError(f"--shard must be K/N with 1 <= K <= N (e.g. 2/8), not {text!r}")
        return cls(int(index), int(count))

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def latest_snapshot(backend: str, matrix_dir: Path) -> snapshot.Snapshot | None:
    """The newest published snapshot of `backend` under `matrix_dir` (by stack version, then run start)."""
    found = [snapshot.load(file.parent) for file in sorted(Path(matrix_dir, backend).glob(f"*/{snapshot.FILE}"))
             if not file.parent.name.startswith(".")]
    return max(found, key=lambda snap: snap.order_key, default=None)


def expected_times(backend: str, matrix_dir: Path, samples: int | None = None) -> dict[str, float]:
    """Case id -> seconds it took (its record's `wall_s`) in the latest snapshot of `backend`; empty when
    there is none. With `samples` (a run of at most that many samples per case), a case that ran more
    there counts in proportion: snapshots run every sample, a quick run 2. Raises MatrixError for a
    snapshot that cannot be read."""
    snap = latest_snapshot(backend, matrix_dir)
    if snap is None:
        return {}
    times = {}
    for case_id, cell in snap.cells.items():
        if isinstance(cell.get("wall_s"), (int, float)):
            ran = cell.get("samples_run") or 0
            times[case_id] = cell["wall_s"] * (samples / ran if samples is not None and ran > samples else 1.0)
    return times


def estimate(case_ids: list[str], times: dict[str, float]) -> dict[str, float]:
    """Every case's expected seconds: its own time where known, else the median of its kind's known times
    (the median of all of them for a kind the times lack). Empty times give every case 1.0 (no knowledge:
    all equal)."""
    if not times:
        return dict.fromkeys(case_ids, 1.0)
    by_kind: dict[str, list[float]] = {}
    for case_id, seconds in times.items():
        by_kind.setdefault(parse_case_id(case_id).kind, []).append(seconds)
    overall = statistics.median(times.values())
    medians = {kind: statistics.median(values) for kind, values in by_kind.items()}
    return {case_id: times[case_id] if case_id in times else medians.get(parse_case_id(case_id).kind, overall)
            for case_id in case_ids}


def longest_first(case_ids: list[str], expected: dict[str, float]) -> list[str]:
    """The cases by expected time, longest first; equal times by case id (the same order on every host)."""
    return sorted(case_ids, key=lambda case_id: (-expected[case_id], case_id))


def split(case_ids: list[str], expected: dict[str, float], count: int) -> list[list[str]]:
    """`count` shards of nearly equal expected time: each case, longest first, goes to the shard with the
    least time so far (the lowest-numbered one on a tie). Each shard lists its cases longest first."""
    loads = [(0.0, number) for number in range(count)]
    shards: list[list[str]] = [[] for _ in range(count)]
    for case_id in longest_first(case_ids, expected):
        total, number = heapq.heappop(loads)
        shards[number].append(case_id)
        heapq.heappush(loads, (total + expected[case_id], number))
    return shards

