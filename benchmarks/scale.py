"""Scale: `opsuite summary` and `opsuite publish` of one large results file (issue 12, item 8).

Synthesises, in a temp dir, a results file of --cases cases (default 76,747) from the real records of a
published snapshot's results (`matrix/<backend>/<key>/results/*.jsonl.gz`): each real case line is
repeated under varied subject names (`<name>.s<k>`), with the statuses rotated so that every status
occurs, under the real header. Each case keeps the first --samples of its per-sample results (default 2,
what the default `quick` profile runs; `all` keeps every one, as a `matrix` profile run records them).
Then it runs, as fresh processes as a user does:

- the baseline, measured in the same run: the interpreter reading the same file with `json.loads` per
  line (no command that reads the file can be faster) and nothing else;
- `opsuite summary FILE`: target under 5 s;
- `opsuite publish FILE --matrix TMP/matrix`: target under 15 s and a peak memory (max RSS of the
  process) under 300 MB.

Each is given as wall time, CPU time (user + system of the process: on a shared machine the wall time
counts other people's work too, the CPU time does not) and peak RSS, the best of --repeat runs (default
1), with its CPU time as a multiple of the baseline's and each figure's ratio to its target (under 1.0
meets it). The lookup target (under 0.3 s with ten snapshots of this size) is measured by
benchmarks/lookup_scale.py.

Usage (either environment):
    python benchmarks/scale.py [--cases 76747] [--samples 2|all] [--snapshot matrix/xla/<key>] [--repeat 1]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from opsuite.vocabulary import NOT_APPLICABLE, STATUSES, format_case_id, parse_case_id  # noqa: E402

TARGETS = {"summary": {"CPU s": 5.0, "wall s": 5.0}, "publish": {"CPU s": 15.0, "wall s": 15.0, "peak MB": 300.0}}
STATUSES_ROTATED = tuple(s for s in STATUSES if s != NOT_APPLICABLE)


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
            case = parse_case_id(record["case_id"])
            record["case_id"] = format_case_id(case.kind, f"{case.name}.s{copy}", case.dtype, case.direction) \
                if copy else record["case_id"]
            record["run_id"] = header["run_id"]
            if samples is not None and len(record.get("samples", ())) > samples:
                record["samples"] = record["samples"][:samples]
                record["samples_run"] = sum(1 for sample in record["samples"] if sample["status"] != NOT_APPLICABLE)
            if copy and record["status"] != NOT_APPLICABLE:
                record["status"] = STATUSES_ROTATED[(n + copy) % len(STATUSES_ROTATED)]
            out.write(json.dumps(record) + "\n")
    return dest.stat().st_size


def timed(argv: list[str], cwd: Path) -> dict[str, float]:
    """Run a command; its wall seconds, CPU seconds (user + system) and peak RSS in MB. Exits when it fails."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    started = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    stderr = proc.stderr.read()
    proc.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{' '.join(argv)} failed: {stderr.strip()}")
    # Linux: ru_maxrss is in KiB
    return {"wall s": wall, "CPU s": usage.ru_utime + usage.ru_stime, "peak MB": usage.ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=76_747)
    parser.add_argument("--samples", default="2", help="per-sample results kept per case: a count, or all")
    parser.add_argument("--snapshot", type=Path, default=None, help="snapshot directory whose records are used")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    snapshot_dir = args.snapshot.resolve() if args.snapshot else _default_snapshot()
    samples = None if args.samples == "all" else int(args.samples)
    python = [sys.executable]
    with tempfile.TemporaryDirectory(prefix="opsuite-scale-") as tmp:
        work = Path(tmp)
        results = work / "large.jsonl"
        size = synthesise(snapshot_dir, args.cases, results, samples)
        print(f"results file: {args.cases} cases, {size / 1e6:.1f} MB ({args.samples} samples kept per case), "
              f"from {snapshot_dir.relative_to(ROOT)}")
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        commands = {
            "baseline": [*python, "-c", f"import json\nfor line in open({str(results)!r}, 'rb'): json.loads(line)"],
            "summary": [*python, "-m", "opsuite.cli", "summary", str(results)],
            "publish": [*python, "-m", "opsuite.cli", "publish", str(results), "--matrix", str(work / "matrix")],
        }
        figures: dict[str, dict[str, float]] = {}
        for _ in range(args.repeat):
            shutil.rmtree(work / "matrix", ignore_errors=True)
            for what, argv in commands.items():
                measured = timed(argv, work)
                best = figures.setdefault(what, measured)
                for name, value in measured.items():
                    best[name] = min(best[name], value)
    floor = figures["baseline"]["CPU s"]
    print(f"\n{'what':<9} {'wall s':>7} {'CPU s':>7} {'peak MB':>8} {'CPU x baseline':>15}   ratio to target (under 1 meets it)")
    for what, figure in figures.items():
        targets = TARGETS.get(what, {})
        ratios = ", ".join(f"{name} {figure[name] / target:.2f} (target {target:g})" for name, target in targets.items())
        print(f"{what:<9} {figure['wall s']:>7.2f} {figure['CPU s']:>7.2f} {figure['peak MB']:>8.0f} "
              f"{figure['CPU s'] / floor:>15.2f}   {ratios}")


if __name__ == "__main__":
    main()
