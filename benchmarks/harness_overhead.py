"""What the harness costs: opsuite over the float32 forward catalog against a bare loop over the same samples.

Both run on the same backend in this one invocation, as fresh processes (imports included):

- bare loop: for every case, the same first N samples; copy to the device, call the op, sync, copy back,
  compare with the op on CPU with `torch.allclose`. Nothing else: no records, no float64 reference, no
  isolation. A sample that kills the process (XLA:CPU has some) restarts the loop after that case, so
  both sides pay for crashes alike.
- opsuite: `opsuite run --dtypes float32 --directions forward` with one worker, then with `-n 2`.

The three are measured in turn, `--repeat` times (default 3): on a shared machine one pair of runs can
differ by 10 % from the next, so the ratios are those of the medians, with every round's figures shown.
Prints the wall times and the ratios: opsuite / bare (target at most 1.15) and the speed-up of -n 2.
Usage (xla environment): python benchmarks/harness_overhead.py [--backend xla] [--samples 2] [--repeat 3]
[-k EXPR]
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

BARE_LOOP = r'''
import sys, json, torch
from opsuite import backends
from opsuite.catalog import build_catalog
backend = backends.open_backend(sys.argv[1])
device = backend.device()
catalog = build_catalog(["ops"])
ids = json.loads(open(sys.argv[3]).read())
progress = open(sys.argv[4], "a")
def move(x, dev):
    if isinstance(x, torch.Tensor):
        return x.to(dev)
    if isinstance(x, (list, tuple)):
        return type(x)(move(v, dev) for v in x)
    if isinstance(x, dict):
        return {k: (dev if k == "device" and dev is not None else move(v, dev)) for k, v in x.items()}
    return x
for case_id in ids:
    progress.write(case_id + "\n"); progress.flush()
    case = catalog.get(case_id)
    try:
        for s in catalog.source(case).samples(case, int(sys.argv[2])):
            args, kwargs = move(s.args, device), move(s.kwargs, device)
            with torch.no_grad():
                out = s.fn(*args, **kwargs)
                backend.sync()
                host = [t.cpu() for t in torch.utils._pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]
                ref = [t for t in torch.utils._pytree.tree_leaves(s.fn(*s.args, **s.kwargs)) if isinstance(t, torch.Tensor)]
                ok = all(h.shape == r.shape and (not h.is_floating_point() or torch.allclose(h, r, equal_nan=True))
                         for h, r in zip(host, ref))
    except Exception:
        import gc; gc.collect(); backend.recover()
progress.write("DONE\n")
'''


def run_opsuite(backend: str, samples: str, keyword: str | None, workers: int, out: Path) -> tuple[float, list[str]]:
    """Wall seconds of one `opsuite run`, and the case ids it recorded."""
    results = out / f"opsuite-n{workers}.jsonl"
    argv = [sys.executable, "-m", "opsuite.cli", "run", "--backend", backend, "--samples", samples,
            "--dtypes", "float32", "--directions", "forward", "--results", str(results)]
    if keyword:
        argv += ["-k", keyword]
    if workers > 1:
        argv += ["-n", str(workers)]
    began = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, cwd=out)
    seconds = time.perf_counter() - began
    ids = [json.loads(line)["case_id"] for line in results.read_text().splitlines()[1:]]
    return seconds, ids


def run_bare(backend: str, samples: str, ids: list[str], out: Path) -> float:
    """Wall seconds of the bare loop over `ids`, restarted after any case that kills it."""
    script, progress = out / "bare.py", out / "bare-progress.txt"
    script.write_text(BARE_LOOP)
    began = time.perf_counter()
    remaining = ids
    while remaining:
        todo = out / "bare-ids.json"
        todo.write_text(json.dumps(remaining))
        progress.write_text("")
        subprocess.run([sys.executable, str(script), backend, samples, str(todo), str(progress)],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=out)
        seen = progress.read_text().split()
        if seen and seen[-1] == "DONE":
            break
        remaining = remaining[len(seen):]  # the last one seen killed the loop: go on after it
    return time.perf_counter() - began


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="xla")
    parser.add_argument("--samples", default="2")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of the three runs (default 3)")
    parser.add_argument("-k", dest="keyword", help="restrict to cases matching a pytest -k expression")
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    rounds: list[tuple[float, float, float]] = []
    for round_ in range(1, args.repeat + 1):
        with tempfile.TemporaryDirectory(prefix="opsuite-bench-") as tmp:
            out = Path(tmp)
            one, ids = run_opsuite(args.backend, args.samples, args.keyword, 1, out)
            bare = run_bare(args.backend, args.samples, ids, out)
            two, _ = run_opsuite(args.backend, args.samples, args.keyword, 2, out)
        rounds.append((bare, one, two))
        print(f"round {round_}: bare {bare:.1f} s, opsuite 1 worker {one:.1f} s ({one / bare:.2f}x), "
              f"-n 2 {two:.1f} s ({one / two:.2f}x)", flush=True)
    bare, one, two = (statistics.median(column) for column in zip(*rounds))
    print(f"backend {args.backend}, float32 forward, {len(ids)} cases, {args.samples} samples each; "
          f"medians of {args.repeat} rounds")
    print(f"bare loop:            {bare:8.1f} s")
    print(f"opsuite, 1 worker:    {one:8.1f} s   ratio to bare {one / bare:.2f}x (target <= 1.15x)")
    print(f"opsuite, -n 2:        {two:8.1f} s   speed-up over 1 worker {one / two:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
