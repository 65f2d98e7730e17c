"""How well the schedule keeps 1 to 8 hosts of 32 NeuronCores busy: a simulation from recorded case times.

The case times are the records of the published xla snapshot (`matrix/xla/*/results/*.jsonl.gz`: each
case's `wall_s`, of which `compile_s` went to its `compiles` XLA compiles). On Trainium each compile is a
neuronx-cc compile instead, which takes seconds, not XLA:CPU's milliseconds (median 16 ms per compile,
/work/shared/reference/xla-cpu.md), so a case's time on Neuron is modelled as

    wall_s - compile_s + compiles x C

with C the cost of one neuronx-cc compile (`--compile-cost`, seconds; a table for each C given; C = 0
leaves compiling out altogether, `measured` keeps XLA:CPU's own times). The model assumes a cold compile
cache (`NEURON_COMPILE_CACHE_URL` empty: every compile is a miss; a warm shared cache turns hits into
near-zero cost, which only shortens cases) and no cap by `--case-timeout` (cases longer than the
default 300 s are counted below each table: on Neuron they need a larger budget).

Each case is one task on one core. Schedules, all list scheduling (a free core takes the next case, as
xdist's load scheduling with one case at a time and the Ray executor do):

- `longest first`: opsuite's order (opsuite/schedule.py), expected times = the recorded ones;
- `collection`: the order the cases appear in the results file (the catalog's, as a 2-worker run
  finished them);
- `random`: a shuffled order, the mean over --seeds shuffles;
- `--shard per host`: `--shard K/N` with N = hosts (opsuite/schedule.py's split), then longest first on
  each host's 32 cores; the run ends with its slowest host.

With --noise S the actual times are the expected ones times a log-normal factor (sigma S), so that the
schedule works from stale estimates, as it does when a new release changes case times.

Efficiency = ideal / makespan, ideal = total work / cores. When one case is longer than the ideal, no
schedule can beat that case's time: the table says so, and `bound` is the best efficiency possible.

    python benchmarks/schedule_sim.py [--results FILE.jsonl.gz ...] [--compile-cost measured 2 5] [--noise 0.3]
"""

from __future__ import annotations

import argparse
import heapq
import math
import random
import statistics
import sys
from pathlib import Path

from tabulate import tabulate

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from opsuite import schedule  # noqa: E402
from opsuite.results import load  # noqa: E402

CORES_PER_HOST = 32  # trn1.32xlarge (/work/shared/reference/neuron.md, section 6)
DEFAULT_CASE_TIMEOUT_S = 300.0


def case_times(paths: list[Path], compile_cost: float | None) -> dict[str, float]:
    """Case id -> modelled seconds on Neuron, in the files' order (None: the recorded wall_s as it is)."""
    times: dict[str, float] = {}
    for path in paths:
        for record in load(path).records:
            wall = record.wall_s or 0.0
            if compile_cost is not None:
                wall = max(wall - (record.compile_s or 0.0), 0.0) + (record.compiles or 0) * compile_cost
            times[record.case_id] = wall
    return times


def makespan(order: list[str], actual: dict[str, float], cores: int) -> float:
    """List scheduling: each case, in order, starts on the core that is free first; when the last ends."""
    free = [0.0] * cores
    for case_id in order:
        heapq.heappush(free, heapq.heappop(free) + actual[case_id])
    return max(free)


def sharded_makespan(expected: dict[str, float], actual: dict[str, float], hosts: int) -> float:
    """`--shard K/N` per host, each host longest first on its cores: when the slowest host ends."""
    return max(makespan(part, actual, CORES_PER_HOST) for part in schedule.split(list(expected), expected, hosts))


def table(expected: dict[str, float], actual: dict[str, float], seeds: int, max_hosts: int) -> tuple[list, list[str]]:
    """One row per host count: cores, ideal, each schedule's efficiency; and the notes on bounds."""
    total, longest = sum(actual.values()), max(actual, key=actual.get)
    collection = list(expected)
    lpt = schedule.longest_first(collection, expected)
    rows, notes = [], []
    for hosts in range(1, max_hosts + 1):
        cores = hosts * CORES_PER_HOST
        ideal = total / cores
        shuffles = []
        for seed in range(seeds):
            order = collection[:]
            random.Random(seed).shuffle(order)
            shuffles.append(ideal / makespan(order, actual, cores))
        best = makespan(lpt, actual, cores)
        rows.append([hosts, cores, f"{ideal:,.0f}", f"{best:,.0f}", _pct(ideal / best),
                     _pct(ideal / makespan(collection, actual, cores)), _pct(statistics.mean(shuffles)),
                     _pct(ideal / sharded_makespan(expected, actual, hosts)), _pct(min(1.0, ideal / actual[longest]))])
        if actual[longest] > ideal:
            notes.append(f"{cores} cores: the longest case ({longest}, {actual[longest]:,.0f} s) is longer than the "
                         f"ideal makespan ({ideal:,.0f} s): no schedule can exceed {_pct(ideal / actual[longest])}")
    return rows, notes


def _pct(value: float) -> str:
    return f"{100 * value:.1f} %"


def main() -> int:
    """Print an efficiency table per compile cost."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", nargs="+", type=Path,
                        default=sorted(ROOT.glob("matrix/xla/*/results/*.jsonl.gz")),
                        help="results files of one snapshot (default: the published xla snapshot's)")
    parser.add_argument("--compile-cost", nargs="+", default=["measured", "2", "5"],
                        help="seconds per neuronx-cc compile, or 'measured' for XLA:CPU's recorded times")
    parser.add_argument("--hosts", type=int, default=8, help="simulate 1 to this many hosts of 32 cores")
    parser.add_argument("--seeds", type=int, default=20, help="shuffles averaged for the random order")
    parser.add_argument("--noise", type=float, default=0.0,
                        help="sigma of a log-normal factor on the actual times (the schedule sees the recorded ones)")
    args = parser.parse_args()
    if not args.results:
        parser.error("no results files: give --results, or run from a checkout with a published xla snapshot")
    print(f"case times: {', '.join(str(p.relative_to(ROOT) if p.is_relative_to(ROOT) else p) for p in args.results)}")
    for cost in args.compile_cost:
        expected = case_times(args.results, None if cost == "measured" else float(cost))
        rng = random.Random(0)
        actual = {case: t * math.exp(rng.gauss(0, args.noise)) for case, t in expected.items()} if args.noise \
            else expected
        over = sum(t > DEFAULT_CASE_TIMEOUT_S for t in actual.values())
        title = "XLA:CPU times as recorded" if cost == "measured" else f"neuronx-cc at {cost} s per compile"
        print(f"\n## {title}: {len(actual):,} cases, {sum(actual.values()):,.0f} core-seconds of work"
              + (f", actual times off the expected by a log-normal factor (sigma {args.noise})" if args.noise else ""))
        rows, notes = table(expected, actual, args.seeds, args.hosts)
        print(tabulate(rows, headers=["hosts", "cores", "ideal s", "longest first s", "longest first", "collection",
                                      f"random (mean of {args.seeds})", "--shard per host", "bound"],
                       tablefmt="github", colalign=("right",) * 9))
        for note in notes:
            print(f"- {note}")
        if over:
            print(f"- {over} cases take longer than the default --case-timeout of {DEFAULT_CASE_TIMEOUT_S:.0f} s "
                  f"here (not capped in this model)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
