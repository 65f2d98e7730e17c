"""Shared by tests/test_schedule.py and tests/test_merge.py: small fixture results files and matrices.

Fixture files are written with the project's own writer into tmp dirs; a fixture matrix is published with
`opsuite publish`'s code into a tmp dir, never into matrix/.
"""

from __future__ import annotations

from pathlib import Path

from opsuite.matrix import publish
from opsuite.record import CaseRecord, Stage, Status
from opsuite.results import ResultsWriter


def write_results(path: Path, times: dict[str, float], backend: str = "cpu", torch: str = "2.13.0",
                  run_id: str = "r1", options: dict | None = None, catalog: dict | None = None,
                  statuses: dict[str, Status] | None = None, samples_run: int = 1) -> Path:
    """A results file of `backend` whose cases took `times` (case id -> wall_s) for `samples_run` samples
    each, all passing unless `statuses` says otherwise."""
    def header() -> dict:
        return {"run_id": run_id, "backend": backend, "started_at": "2026-01-01T00:00:00+00:00",
                "stack": {"torch": torch}, "env": {}, "host": {"hostname": f"host-{run_id}"},
                "opsuite": {"version": "0", "commit": "x"}, "catalog": {"op_db_size": 0, **(catalog or {})},
                "options": {"profile": None, "samples": "2", "dtypes": None, "directions": None, "ops": None,
                            "keyword": None, "shard": None, "case_timeout_s": 300.0, "workers": None,
                            **(options or {})}}

    writer = ResultsWriter(path, header)
    for case_id, seconds in times.items():
        status = (statuses or {}).get(case_id, Status.PASS)
        writer.append(CaseRecord(case_id=case_id, status=status, stage=Stage.DONE, backend=backend,
                                 samples_run=samples_run, wall_s=seconds), run_id)
    return path


def write_part(path: Path, shard: str, times: dict[str, float], selection: list[str], **kwargs) -> Path:
    """A results file of shard `shard` (K/N) of a run whose whole selection is `selection`."""
    return write_results(path, times, run_id=f"part-{shard.replace('/', '-of-')}", options={"shard": shard},
                         catalog={"selection": sorted(selection)}, **kwargs)


def matrix_with(tmp_path: Path, *snapshots: tuple[str, dict[str, float]], backend: str = "cpu",
                samples_run: int = 1) -> Path:
    """A matrix holding one snapshot of `backend` per (torch version, case times) given."""
    matrix = tmp_path / "matrix"
    for number, (torch, times) in enumerate(snapshots):
        results = write_results(tmp_path / f"snap-{number}.jsonl", times, backend=backend, torch=torch,
                                run_id=f"snap-{number}", samples_run=samples_run)
        publish.publish([results], matrix)
    return matrix
