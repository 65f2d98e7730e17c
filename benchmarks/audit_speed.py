"""What the offline audit costs on a Llama-3-8B-shaped config (32 layers), training step, bfloat16.

Measured in this one invocation, each in a fresh process (imports included), `--repeat` times:

- bare: the same model built on fake tensors and one training step (forward, backward, one AdamW step)
  run on them with no recording: what any fake-tensor trace of this model costs;
- audit: `opsuite audit --hf llama <8B settings> --train --dtype bfloat16 --backend B --format json`, the
  whole command: trace with module paths and source lines, the join, the report.

Then, in this process, the join alone (open the stack, judge every traced row) against reading the lookup
index (`index.json`) as a baseline, on the matrix as `opsuite reindex` leaves it (a reindexed temporary copy
when the repository's matrix has not been reindexed since aten.json or its index's version came). Prints medians, the audit's peak memory (max RSS of its process), and
the ratios audit / bare and join / index read. Goals: audit under 20 s and 2 GB on a 2-core machine, join
under 1 s. On a shared machine the wall times grow with the load (printed per round); the CPU time
(user + system) of the audit's process does not. Usage (either environment): python benchmarks/audit_speed.py [--backend xla] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = {"num_hidden_layers": 32, "hidden_size": 4096, "intermediate_size": 14336, "num_attention_heads": 32,
            "num_key_value_heads": 8, "vocab_size": 128256, "max_position_embeddings": 8192}
BARE = r'''
import sys, torch, transformers
from torch._subclasses.fake_tensor import FakeTensorMode
config = transformers.AutoConfig.for_model("llama", **SETTINGS)
with FakeTensorMode():
    model = transformers.LlamaForCausalLM._from_config(config, dtype=torch.bfloat16)
    ids = torch.randint(0, config.vocab_size, (1, 64))
    model(input_ids=ids, labels=ids).loss.backward()
    torch.optim.AdamW([p for p in model.parameters()], lr=1e-4).step()
'''


def _timed(argv: list[str]) -> tuple[float, float, float, str]:
    """Wall seconds, CPU seconds (user + system), peak RSS in MiB, and stdout of a child process."""
    began = time.perf_counter()
    child = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
    out = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{' '.join(argv[:4])}... failed")
    return time.perf_counter() - began, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, out


def _reindexed() -> Path:
    """The repository's matrix as `opsuite reindex` leaves it (each snapshot's aten.json, the current lookup
    index): itself when it is so, else a reindexed copy of its snapshots in a temporary directory."""
    import shutil
    import tempfile

    from opsuite.matrix import DEFAULT_MATRIX, MatrixError, index, op_cells, publish

    snapshots = sorted(DEFAULT_MATRIX.glob("*/*/snapshot.json"))
    try:
        index.load(DEFAULT_MATRIX)
        if all((s.parent / op_cells.FILE).is_file() for s in snapshots):
            return DEFAULT_MATRIX
    except MatrixError:  # an index of an older version: reindex a copy
        pass
    copy = Path(tempfile.mkdtemp(prefix="opsuite-audit-bench-"))
    for file in snapshots:
        (copy / file.parent.relative_to(DEFAULT_MATRIX)).mkdir(parents=True)
        shutil.copy(file, copy / file.relative_to(DEFAULT_MATRIX))
    publish.reindex(copy)
    return copy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="xla")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    from opsuite.audit import join
    from opsuite.matrix import index

    matrix = _reindexed()
    sets = [a for k, v in SETTINGS.items() for a in ("--set", f"{k}={v}")]
    audit_argv = [sys.executable, "-m", "opsuite.cli", "audit", "--hf", "llama", *sets, "--train", "--dtype",
                  "bfloat16", "--backend", args.backend, "--format", "json", "--matrix", str(matrix)]
    bare_argv = [sys.executable, "-c", f"SETTINGS = {SETTINGS!r}\n{BARE}"]
    bare, audit, audit_cpu, peaks = [], [], [], []
    report = None
    for round_ in range(args.repeat):
        bare.append(_timed(bare_argv)[0])
        seconds, cpu, peak, out = _timed(audit_argv)
        audit.append(seconds)
        audit_cpu.append(cpu)
        peaks.append(peak)
        report = json.loads(out)
        print(f"round {round_ + 1}: bare {bare[-1]:.1f} s, audit {seconds:.1f} s wall, {cpu:.1f} s CPU "
              f"(peak {peak:.0f} MiB); load average {os.getloadavg()[0]:.1f}")

    rows = [(r["op"], r["dtype"], r["direction"], r["custom"]) for r in report["ops"]]
    join_s, index_s = [], []
    for _ in range(args.repeat):
        began = time.perf_counter()
        index.load(matrix)
        index_s.append(time.perf_counter() - began)
        began = time.perf_counter()
        stack = join.open_stacks(matrix, [], [args.backend])[0]
        for row in rows:
            join.judge(stack, *row)
        join_s.append(time.perf_counter() - began)
    b, a, j, i = (statistics.median(x) for x in (bare, audit, join_s, index_s))
    print(f"\n{report['model']}: {report['summary']['calls']:,} op calls, {report['summary']['rows']} rows")
    print(f"bare fake-tensor step  {b:6.2f} s (median of {args.repeat})")
    print(f"opsuite audit          {a:6.2f} s   ratio {a / b:.2f}   CPU {statistics.median(audit_cpu):.2f} s   "
          f"peak {max(peaks):.0f} MiB   goal < 20 s, < 2048 MiB")
    print(f"index.json read        {i:6.3f} s")
    print(f"join ({len(rows)} rows)        {j:6.3f} s   ratio {j / i:.2f}   goal < 1 s")


if __name__ == "__main__":
    main()
