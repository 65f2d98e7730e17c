"""Join a trace with one published stack: a verdict for each traced (overload, dtype, direction).

The evidence is the snapshot's cases that dispatched the overload in that dtype and direction (their
CPU runs' `aten_ops`), read from the snapshot's small `aten.json`. What a case says about one of its ops:

- the op is in the case's `fallback_ops`: the op itself ran on the host;
- the case passed, or fell back only on other ops: the op ran on the device and the numbers matched;
- the case failed (wrong numerics, compile or runtime error, crash, timeout): something in it failed,
  not necessarily this op; it counts against the op only when nothing shows the op working, or when the
  case is the op's own (`ops/softmax` for `aten::_softmax`).

Verdicts, worst first: custom_kernel (not PyTorch's: must be ported), crash, timeout, compile_error,
runtime_error, mismatch, fallback, untested (no case dispatched it in that dtype and direction),
conditional (works in some cases, falls back or fails in others: it depends on the arguments),
known_good. Each verdict names the case ids it rests on.

Only torch-free code: it reads JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opsuite.audit import AuditError
from opsuite.matrix import MatrixError, index, op_cells, snapshot, stack
from opsuite.vocabulary import parse_case_id

VERDICTS = ("custom_kernel", "crash", "timeout", "compile_error", "runtime_error", "mismatch", "fallback",
            "untested", "conditional", "known_good")
FAILURES = ("crash", "timeout", "compile_error", "runtime_error", "mismatch")
WORDS = {"custom_kernel": "custom kernel to port", "crash": "crash", "timeout": "timeout",
         "compile_error": "compile error", "runtime_error": "runtime error", "mismatch": "wrong numerics",
         "fallback": "falls back to the host", "untested": "untested", "conditional": "depends on arguments",
         "known_good": "known good"}


@dataclass
class Verdict:
    """What one stack's matrix says of one traced (overload, dtype, direction)."""

    verdict: str
    cases: list[str] = field(default_factory=list)   # the case ids it rests on
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "cases": self.cases, "note": self.note}


@dataclass
class Stack:
    """One published snapshot, as the join reads it."""

    id: str
    label: str
    ops: dict[str, dict[str, list]]   # aten.json's `ops`


def severity(verdict: str) -> int:
    """0 for the worst verdict (custom_kernel), up to known_good."""
    return VERDICTS.index(verdict)


def open_stacks(matrix: Path, refs: list[str], backends: list[str]) -> list[Stack]:
    """The stacks named by `--stack` (ids, or the start of one) and `--backend` (its newest snapshot)."""
    try:
        entries = index.load(matrix)["snapshots"]
        directories = [snapshot.resolve(ref, matrix) for ref in refs]
        for backend in backends:
            mine = [e for e in entries if e["backend"] == backend]
            if not mine:
                have = sorted({e["backend"] for e in entries})
                raise AuditError(f"no snapshot of backend {backend!r} in {matrix} "
                                 f"(snapshots exist for: {', '.join(have) or 'none'})")
            newest = max(mine, key=lambda e: stack.order_key(backend, e["versions"], e["started_at"]))
            directories.append(matrix / newest["backend"] / newest["key"])
        labels = {e["id"]: e["label"] for e in entries}
        stacks = []
        for directory in directories:
            data = op_cells.load(directory)
            stacks.append(Stack(id=data["snapshot"], label=labels.get(data["snapshot"], data["snapshot"]),
                                ops=data["ops"]))
    except MatrixError as exc:
        raise AuditError(str(exc)) from None
    if not stacks:
        raise AuditError("name a stack to judge against: --backend B (its newest snapshot) or --stack B/KEY")
    return stacks


def _primary(case_id: str, op: str) -> bool:
    """Whether a case is the op's own: `ops/softmax/...` for `aten::_softmax`, `ops/addmm` for `aten::addmm`."""
    case = parse_case_id(case_id)
    packet = op.partition("::")[2].partition(".")[0].lstrip("_")
    return case.kind == "ops" and case.name.rpartition(".")[2] == packet


def judge(stack_: Stack, op: str, dtype: str, direction: str, custom: bool = False) -> Verdict:
    """The verdict of one stack on one traced (overload, dtype, direction)."""
    if custom:
        return Verdict("custom_kernel", note="not a PyTorch operator: no backend has it until it is ported")
    cells = [c for c in stack_.ops.get(op, {}).get(f"{dtype}/{direction}", ()) if c[1] != "skip"]
    if not cells:
        return Verdict("untested", note=f"no case dispatches {op} in {dtype} {direction}")
    fell_back = [c[0] for c in cells if c[2]]
    worked = [c[0] for c in cells if not c[2] and c[1] in ("pass", "fallback")]
    failed = [c for c in cells if c[1] in FAILURES]
    if fell_back and not worked:
        return Verdict("fallback", fell_back, f"ran on the host in {len(fell_back)} case(s)")
    if fell_back:
        return Verdict("conditional", fell_back + worked,
                       f"ran on the host in {len(fell_back)} case(s), on the device in {len(worked)}")
    own_failures = [c[0] for c in failed if _primary(c[0], op)]
    if worked and own_failures:
        return Verdict("conditional", own_failures + worked,
                       f"its own case(s) failed ({len(own_failures)}); it ran on the device in {len(worked)} other(s)")
    if worked:
        return Verdict("known_good", worked, f"ran on the device in {len(worked)} case(s)"
                                             + (f"; {len(failed)} other case(s) dispatching it failed" if failed else ""))
    worst = min((c[1] for c in failed), key=severity)
    return Verdict(worst, [c[0] for c in failed if c[1] == worst],
                   f"only in failing cases ({len(failed)}); nothing shows it working")
