"""The Ray executor against pytest-xdist on one machine: `opsuite run --executor ray` vs `-n 2` vs one worker.

The same selection (float32 forward cases of one backend) is run three ways in this one invocation, each a
fresh `opsuite run` (imports and catalog builds included): one worker (no -n), `-n 2`, and `--executor ray`
(a local Ray instance on 127.0.0.1 with one case worker per CPU). `--repeat` rounds (default 1); the ratios
are those of the medians. It also checks that the three runs recorded the same statuses.
The default backend is `inductor` (torch.compile on the CPU): like Neuron's, its cases are compile-bound,
seconds each, which is the work a cluster spreads; `cpu` cases take milliseconds, so start-up dominates.
Usage (main environment, with Ray): python benchmarks/ray_speedup.py [--backend inductor] [--samples 2]
[--repeat 1] [-k EXPR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WAYS = {"1 worker": [], "-n 2": ["-n", "2"], "--executor ray": ["--executor", "ray"]}


def run_opsuite(backend: str, samples: str, keyword: str | None, way: list[str], results: Path) -> tuple[float, dict]:
    """Wall seconds of one `opsuite run`, and the status it recorded for each case."""
    argv = [sys.executable, "-m", "opsuite.cli", "run", "--backend", backend, "--kinds", "ops", "--samples", samples,
            "--dtypes", "float32", "--directions", "forward", "--results", str(results), *way]
    if keyword:
        argv += ["-k", keyword]
    began = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, cwd=results.parent)
    seconds = time.perf_counter() - began
    lines = results.read_text().splitlines()[1:]
    return seconds, {json.loads(line)["case_id"]: json.loads(line)["status"] for line in lines}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="inductor")
    parser.add_argument("--samples", default="2")
    parser.add_argument("--repeat", type=int, default=1, help="rounds of the three runs (default 1)")
    parser.add_argument("-k", dest="keyword", help="restrict to cases matching a pytest -k expression")
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    times: dict[str, list[float]] = {way: [] for way in WAYS}
    for round_ in range(1, args.repeat + 1):
        statuses = {}
        with tempfile.TemporaryDirectory(prefix="opsuite-bench-") as tmp:
            for number, (way, flags) in enumerate(WAYS.items()):
                seconds, statuses[way] = run_opsuite(args.backend, args.samples, args.keyword, flags,
                                                     Path(tmp) / f"way{number}.jsonl")
                times[way].append(seconds)
        same = all(found == statuses["1 worker"] for found in statuses.values())
        print(f"round {round_}: " + ", ".join(f"{way} {times[way][-1]:.1f} s" for way in WAYS)
              + f"; {len(statuses['1 worker'])} cases, statuses {'identical' if same else 'DIFFERENT'} in all three",
              flush=True)
        if not same:
            return 1
    one, two, ray = (statistics.median(times[way]) for way in WAYS)
    print(f"backend {args.backend}, float32 forward, {args.samples} samples each; medians of {args.repeat} rounds")
    print(f"1 worker:          {one:8.1f} s")
    print(f"-n 2:              {two:8.1f} s   speed-up over 1 worker {one / two:.2f}x")
    print(f"--executor ray:    {ray:8.1f} s   speed-up over 1 worker {one / ray:.2f}x, over -n 2 {two / ray:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
