"""How fast `opsuite lookup` answers on a large matrix: ten snapshots of 76,747 cases each.

Synthesises, in a temp dir, the lookup index of such a matrix (the files `opsuite publish` writes for
lookup: `index.json` and `index-cells.jsonl`) from the real cells of a published snapshot (their notes,
sources and aten ops), copied onto more subjects and every dtype x direction until each snapshot has
76,747 cases. Then times, as a user runs them (a fresh `python -m opsuite.cli` process each), lookups of
an OpInfo name, a torch spelling, an aten overload (which selects many subjects) and an unknown word,
against two baselines measured in the same run:

- `floor`: the interpreter starting and importing `opsuite.cli` (`opsuite --help`): no command can be faster;
- `one file`: reading one JSON file that holds every cell, as the version 1 index did (`json.load` only).

Target (issue 12): lookup under 0.3 s. Prints, per command, the medians of --rounds runs of its wall time
and of its CPU time (user + sys of the process: on a shared, loaded machine the wall time mostly measures
the wait for a core), and the ratios of CPU times.

    python benchmarks/lookup_scale.py [--snapshots 10] [--cases 76747] [--rounds 5] [--matrix matrix]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from opsuite.matrix import DIRECTION_ORDER, DTYPE_ORDER, index, snapshot  # noqa: E402
from opsuite.matrix.publish import write_text  # noqa: E402
from opsuite.matrix.snapshot import Snapshot  # noqa: E402

KEYS = [f"{dtype}/{direction}" for dtype in DTYPE_ORDER for direction in DIRECTION_ORDER[:2]]
QUERIES = ["softmax", "F.softmax", "aten::add.Tensor", "attention"]


def synthesise(template: Snapshot, snapshots: int, cases: int) -> list[Snapshot]:
    """`snapshots` snapshots of `cases` cells each, made of the template's cells on more subjects."""
    by_subject: dict[str, dict] = {}
    for case_id, cell in template.cells.items():
        kind, name, _, _ = snapshot.split_id(case_id)
        by_subject.setdefault(f"{kind}/{name}", cell)
    subjects = list(by_subject)
    cells: dict[str, dict] = {}
    copy = 0
    while len(cells) < cases:
        for subject in subjects:
            kind, name = subject.split("/", 1)
            new = subject if copy == 0 else f"{kind}/{name}.synth{copy}"
            for key in KEYS:
                if len(cells) == cases:
                    break
                cells[f"{new}/{key}"] = by_subject[subject]
        copy += 1
    op_names = {f"alias_{i}": [subjects[i].split("/", 1)[1]] for i in range(0, min(len(subjects), 170))}
    out = []
    for number in range(snapshots):
        version = f"2.{number}.0"
        data = {"id": f"xla/torch_xla-{version}__synthetic", "backend": "xla", "key": f"torch_xla-{version}__synthetic",
                "label": f"torch_xla {version} (synthetic)", "versions": {"torch_xla": version},
                "started_at": f"2026-11-{number + 1:02d}T00:00:00+00:00", "published_at": "2026-11-30T00:00:00+00:00",
                "summary": snapshot.summarise(cells), "runs": [{"catalog": {"op_names": op_names}}], "cells": cells}
        out.append(Snapshot(Path("/nonexistent"), data))
    return out


def one_file_index(snapshots: list[Snapshot]) -> dict:
    """Every cell in one object, as the version 1 index held them (subjects and aten -> case ids)."""
    subjects: dict = {}
    aten: dict = {}
    for number, snap in enumerate(snapshots):
        for case_id, cell in snap.cells.items():
            kind, name, dtype, direction = snapshot.split_id(case_id)
            src = cell["source"]
            subjects.setdefault(f"{kind}/{name}", {}).setdefault(str(number), {})[f"{dtype}/{direction}"] = \
                [cell["status"], "note", f"{src['file']}:{src['line']}", src["run_id"]]
            for op in cell.get("aten_ops", ()):
                aten.setdefault(op, set()).add(case_id)
    return {"subjects": subjects, "aten": {op: sorted(ids) for op, ids in aten.items()}}


def timed(argv: list[str], rounds: int) -> tuple[float, float, subprocess.CompletedProcess]:
    """Medians of wall and CPU seconds of `rounds` runs of a command, and its last result."""
    walls, cpus = [], []
    for _ in range(rounds):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
        walls.append(time.perf_counter() - started)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return statistics.median(walls), statistics.median(cpus), done


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--snapshots", type=int, default=10)
    parser.add_argument("--cases", type=int, default=76747)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--matrix", type=Path, default=ROOT / "matrix", help="where the template snapshot is")
    args = parser.parse_args()
    template = max(snapshot.load_all(args.matrix), key=lambda s: len(s.cells))
    with tempfile.TemporaryDirectory(prefix="opsuite-lookup-bench-") as tmp:
        matrix = Path(tmp)
        snaps = synthesise(template, args.snapshots, args.cases)
        started = time.perf_counter()
        for name, text in index.files(index.build(snaps)).items():
            write_text(matrix / name, text)
        built = time.perf_counter() - started
        one_file = matrix / "one-file-index.json"
        one_file.write_text(json.dumps(one_file_index(snaps), separators=(",", ":")))
        sizes = {p.name: p.stat().st_size / 1e6 for p in matrix.iterdir()}
        print(f"{args.snapshots} snapshots x {args.cases} cases (template {template.id}, {len(template.cells)} cells); "
              f"index written in {built:.1f} s")
        print("  " + ", ".join(f"{name} {mb:.1f} MB" for name, mb in sorted(sizes.items())))
        python = [sys.executable]
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        floor_wall, floor, _ = timed([*python, "-m", "opsuite.cli", "--help"], args.rounds)
        whole_wall, whole, _ = timed([*python, "-c", f"import json; json.load(open({str(one_file)!r}))"], args.rounds)
        print(f"\n{'what':<34} {'wall s':>7} {'CPU s':>7} {'CPU x floor':>12} {'one file / this':>16}")

        def line(what: str, wall: float, cpu: float) -> None:
            print(f"{what:<34} {wall:>7.3f} {cpu:>7.3f} {cpu / floor:>12.2f} {whole / cpu:>16.2f}")

        line("floor: opsuite --help", floor_wall, floor)
        line("one file: json.load every cell", whole_wall, whole)
        worst = 0.0
        for query in QUERIES:
            wall, cpu, done = timed([*python, "-m", "opsuite.cli", "lookup", query, "--matrix", str(matrix)], args.rounds)
            if done.returncode not in (0, 1):
                print(f"lookup {query} failed: {done.stderr.strip()}")
                return 2
            worst = max(worst, cpu)
            line(f"lookup {query}", wall, cpu)
        print(f"\nslowest lookup: {worst:.3f} s of CPU, {'under' if worst < 0.3 else 'OVER'} the 0.3 s target")
    return 0


if __name__ == "__main__":
    sys.exit(main())
