"""The words of a matrix cell: its short note, its full notes and where it came from.

Every page and command (Markdown, HTML, lookup, diff, regression mode) describes a cell through these
functions, so a cell reads the same everywhere. A cell is the snapshot's JSON object for one case.
"""

from __future__ import annotations

import shlex
from typing import Any

from opsuite.vocabulary import NOT_APPLICABLE, WORKING, working_rank

SHORT_MESSAGE = 100  # characters of an error message kept in a table cell
COUNTED = ("pass", "fallback", "mismatch")  # statuses whose short note starts with the sample count


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def error_class(cell: dict[str, Any]) -> tuple[str, str | None, str | None]:
    """What kind of outcome a cell is: status, error category and compiler code."""
    failure = cell.get("failure") or {}
    return cell["status"], failure.get("category"), failure.get("code")


def measured(cell: dict[str, Any]) -> str:
    """The measured error, e.g. `ratio 6.94, max abs err 0.0593 (CPU 0.00854)`; empty when none."""
    n = cell.get("numerics")
    if not n:
        return ""
    parts = []
    if n.get("verdict") not in (None, "close", "exact"):
        parts.append(n["verdict"] + (f" in {n['worst_output']}" if n.get("worst_output") else ""))
    if n.get("ratio") is not None:
        parts.append(f"ratio {_num(n['ratio'])}")
    if n.get("max_abs_err") is not None:
        parts.append(f"max abs err {_num(n['max_abs_err'])} (CPU {_num(n.get('cpu_max_abs_err'))})")
    if n.get("note"):
        parts.append(n["note"])
    return ", ".join(parts)


def failure_text(cell: dict[str, Any], limit: int | None = None) -> str:
    """`[category/code] ErrorType: message` of a failed cell, the message cut to `limit` characters."""
    failure = cell.get("failure")
    if not failure:
        return ""
    message = " ".join(failure["message"].split())
    if limit is not None and len(message) > limit:
        message = message[:limit - 1] + "…"
    where = "/".join(x for x in (failure.get("category"), failure.get("code")) if x)
    return (f"[{where}] " if where else "") + f"{failure['error_type']}: {message}"


def short(cell: dict[str, Any]) -> str:
    """One line for a table cell: fallback ops, the error (cut short) or the measured error (the worst
    sample's). A cell whose samples all ran to a verdict starts with how many samples it covers: a pass
    claims nothing beyond them, and a mismatch's figures are the worst among them."""
    parts = [sample_count(cell)] if cell["status"] in COUNTED else []
    if cell.get("fallback_ops"):
        parts.append("host: " + ", ".join(cell["fallback_ops"]))
    if cell.get("failure"):
        parts.append(f"{cell['stage']}{failing_sample(cell)}: " + failure_text(cell, SHORT_MESSAGE))
    elif cell["status"] == NOT_APPLICABLE:
        parts.append(str((cell.get("extra") or {}).get("skip_reason", "not applicable")))
    else:
        parts.append(measured(cell))
    return "; ".join(p for p in parts if p)


def sample_count(cell: dict[str, Any]) -> str:
    """How many samples a cell covers: `all 14 samples`, `2 of 14 samples`, `1 sample` (a case's only
    one), or `2 samples` when the run did not count them (a run of the first few samples, or one from
    before counts were kept)."""
    run = cell.get("samples_run", 0)
    available = cell.get("samples_available")
    if available is None:
        return f"{run} sample{'s' if run != 1 else ''}"
    if run >= available:
        return f"all {available} samples" if available != 1 else "1 sample"
    return f"{run} of {available} samples"


def failing_sample(cell: dict[str, Any]) -> str:
    """` in sample 2 of 10` for a failed cell whose record names the sample (the case's other samples may
    work: a porting team reads where it breaks); empty when it does not."""
    worst = cell.get("worst_sample")
    if not worst:
        return ""
    total = cell.get("samples_available") or cell.get("samples_run")
    return f" in sample {worst['index']}" + (f" of {total}" if total else "")


def worst_sample(cell: dict[str, Any]) -> str:
    """The sample the cell's figures or error come from: `sample 3: (Tensor[5, 5]:float32, ...)`."""
    worst = cell.get("worst_sample")
    return f"sample {worst['index']}: {worst['label']}" if worst else ""


def repro_samples(cell: dict[str, Any]) -> int | None:
    """How many samples (the first N, in the run's order) rerun a cell as it ran: up to and including the
    sample a failure came from, else every sample it ran; None when the record does not say.

    Not that sample alone: a compiled backend's failure can depend on the samples before it (Dynamo
    recompiles with dynamic shapes once a function has seen a second shape, so `--sample N` alone may pass
    where the run failed). A fallback or a pass covers every sample it ran."""
    worst = cell.get("worst_sample")
    if worst and cell["status"] != NOT_APPLICABLE and not working_rank(cell["status"]):
        return worst["index"] + 1
    return cell.get("samples_run") or None


def repro_command(case_id: str, backend: str, cell: dict[str, Any]) -> str:
    """The command that reruns one case as it ran (`repro_samples`), in-process, with its traceback."""
    samples = repro_samples(cell)
    return " ".join(["opsuite", "repro", shlex.quote(case_id), "--backend", shlex.quote(backend),
                     *(["--samples", str(samples)] if samples else [])])


def one_line(cell: dict[str, Any]) -> str:
    """`status: short note` of a cell, for listings."""
    note = short(cell)
    return cell["status"] + (f": {note}" if note else "")


def details(cell: dict[str, Any]) -> list[tuple[str, str]]:
    """Every note of a cell as (label, text) pairs, in reading order; empty parts left out."""
    count = sample_count(cell)
    rows = [("status", f"{cell['status']} (stage {cell['stage']})" + (f", {count}" if count else ""))]
    if cell.get("fallback_ops"):
        rows.append(("ran on the host", ", ".join(cell["fallback_ops"])))
    if cell.get("host_syncs"):
        rows.append(("host syncs", ", ".join(cell["host_syncs"])))
    if cell.get("failure"):
        rows.append(("error", failure_text(cell)))
    error = measured(cell)
    if error:
        rows.append(("measured", error))
    worst = worst_sample(cell)
    if worst and cell["status"] not in (*WORKING, NOT_APPLICABLE):
        rows.append(("worst sample", worst))
    stopped = (cell.get("extra") or {}).get("samples_stopped")
    if stopped:
        rows.append(("samples stopped", str(stopped)))
    skip_reason = (cell.get("extra") or {}).get("skip_reason")
    if skip_reason:
        rows.append(("skipped", str(skip_reason)))
    rows.append(("source", source(cell)))
    return rows


def source(cell: dict[str, Any]) -> str:
    """Where the cell came from: `results/<file>:<line> (run <id>)`, relative to the snapshot directory."""
    src = cell["source"]
    return f"{src['file']}:{src['line']} (run {src['run_id']})"
