"""Scale: `opsuite summary` and `opsuite publish` of one large results file (issue 12, item 8).

Synthesises, in a temp dir, a results file of --cases cases (default 76,747, about 50 MB) from the real
records of a published snapshot's results (`matrix/<backend>/<key>/results/*.jsonl.gz`): each real case
line is repeated under varied subject names (`<name>.s<k>`), with the statuses rotated so that every
status occurs, under the real header. Then it runs, as fresh processes as a user does:

- `opsuite summary FILE`: wall time, target under 5 s;
- `opsuite publish FILE --matrix TMP/matrix`: wall time, target under 15 s, and peak memory (max RSS of the
  process), target under 300 MB.

Each time is also given as CPU time (user + system of the process), against the same target: on a shared
machine the wall time counts other people's work too, the CPU time does not.

Prints each figure and its ratio to the target (under 1.0 meets it), the best of --repeat runs (default 1).
Usage (either environment): python benchmarks/scale.py [--cases 76747] [--snapshot matrix/xla/<key>] [--repeat 1]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGETS = {"summary_s": 5.0, "summary_cpu_s": 5.0, "publish_s": 15.0, "publish_cpu_s": 15.0, "publish_rss_mb": 300.0}
STATUSES_ROTATED = ("pass", "fallback", "mismatch", "compile_error", "runtime_error", "crash", "timeout")


def _default_snapshot() -> Path:
    return max((p.parent for p in (ROOT / "matrix").glob("*/*/snapshot.json")),
               key=lambda d: sum(f.stat().st_size for f in (d / "results").glob("*.jsonl.gz")))


def synthesise(snapshot_dir: Path, cases: int, dest: Path, samples: int | None = 2) -> int:
    """Write a results file of `cases` cases made from the snapshot's real records, each keeping the
    first `samples` of its per-sample results (None: all); returns the file's size."""
    header, records = None, []
    for file in sorted((snapshot_dir / "results").glob("*.jsonl.gz")):
        for raw in gzip.decompress(file.read_bytes()).decode().splitlines():
            obj = json.loads(raw)
            if obj["kind"] == "header":
                header = header or obj
            else:
                records.append(obj)
    assert header is not None and records, f"no records under {snapshot_dir}"
    with open(dest, "w") as out:
        out.write(json.dumps(header) + "\n")
        for n in range(cases):
            record = dict(records[n % len(records)])
            copy = n // len(records)
            kind, name, dtype, direction = record["case_id"].split("/")
            record["case_id"] = f"{kind}/{name}.s{copy}/{dtype}/{direction}" if copy else record["case_id"]
            record["run_id"] = header["run_id"]
            if samples is not None and len(record.get("samples", ())) > samples:
                record["samples"] = record["samples"][:samples]
                record["samples_run"] = sum(1 for sample in record["samples"] if sample["status"] != "skip")
            if copy and record["status"] != "skip":
                record["status"] = STATUSES_ROTATED[(n + copy) % len(STATUSES_ROTATED)]
            out.write(json.dumps(record) + "\n")
    return dest.stat().st_size


def timed(args: list[str], cwd: Path) -> tuple[float, float, float]:
    """Run `python -m opsuite.cli ARGS`; its wall seconds, CPU seconds (user + system: on a shared machine
    the wall time also counts other people's work) and peak RSS in MB. Exits when it fails."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "opsuite.cli", *args], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    stderr = proc.stderr.read()
    proc.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"opsuite {' '.join(args)} failed: {stderr.strip()}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024  # Linux: ru_maxrss is in KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=76_747)
    parser.add_argument("--snapshot", type=Path, default=None, help="snapshot directory whose records are used")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    snapshot_dir = args.snapshot or _default_snapshot()
    with tempfile.TemporaryDirectory(prefix="opsuite-scale-") as tmp:
        work = Path(tmp)
        results = work / "large.jsonl"
        size = synthesise(snapshot_dir, args.cases, results)
        print(f"results file: {args.cases} cases, {size / 1e6:.1f} MB, from {snapshot_dir.relative_to(ROOT)}")
        figures: dict[str, float] = {}
        for round_ in range(args.repeat):
            summary = timed(["summary", str(results)], work)
            publish = timed(["publish", str(results), "--matrix", str(work / f"matrix-{round_}")], work)
            for name, value in zip(TARGETS, (*summary[:2], *publish)):
                figures[name] = min(figures.get(name, value), value)
    for name, value in figures.items():
        print(f"{name:>15}: {value:8.2f}   target {TARGETS[name]:g}   ratio {value / TARGETS[name]:.2f}")


if __name__ == "__main__":
    main()
