"""The audit report: one JSON object (schemas/audit-v1.json), and its text and Markdown renderings.

The summary comes first (calls, overloads, verdict counts naming the ops that need attention), then one
row per traced (overload, dtype, direction), worst verdict first, then most calls first, with the
module path and source line it was called from and the case ids each verdict rests on.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from opsuite.audit.join import VERDICTS, WORDS, Stack, judge, severity
from opsuite.audit.trace import Trace

SCHEMA_VERSION = 1
FORMAT = "opsuite-audit"
# How many places (module paths, source lines) and case ids a table cell shows; JSON keeps them all.
SHOWN = 2
# Verdicts whose case ids the summary names too.
CITED = ("crash", "timeout", "compile_error", "runtime_error", "mismatch", "fallback")
# Verdicts that the summary spells out op by op.
NAMED = ("custom_kernel", "crash", "timeout", "compile_error", "runtime_error", "mismatch", "fallback", "untested",
         "conditional")


def build(trace: Trace, stacks: list[Stack]) -> dict[str, Any]:
    """The report object of a trace judged against stacks (before any device run)."""
    rows = []
    for use in trace.uses:
        verdicts = {s.id: judge(s, use.op, use.dtype, use.direction, use.custom).to_json() for s in stacks}
        rows.append({"op": use.op, "dtype": use.dtype, "direction": use.direction, "calls": use.calls,
                     "input_dtypes": dict(use.input_dtypes.most_common()),
                     "modules": dict(use.modules.most_common()), "sources": dict(use.sources.most_common()),
                     "custom": use.custom, "host_sync": use.host_sync, "data_dependent": use.data_dependent,
                     "verdicts": verdicts})
    rows.sort(key=lambda r: (min(severity(v["verdict"]) for v in r["verdicts"].values()), -r["calls"], r["op"]))
    counts = {s.id: dict(sorted(Counter(r["verdicts"][s.id]["verdict"] for r in rows).items(),
                                key=lambda kv: severity(kv[0]))) for s in stacks}
    return {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "model": trace.model,
        "dtype": trace.dtype,
        "mode": "train" if trace.train else "inference",
        "stacks": [{"id": s.id, "label": s.label} for s in stacks],
        "summary": {"calls": trace.calls, "overloads": len({r["op"] for r in rows}), "rows": len(rows),
                    "counts": counts},
        "assumptions": trace.assumptions,
        "ops": rows,
        "run": None,
    }


def worst_verdicts(report: dict[str, Any]) -> set[str]:
    """Every verdict some row has on some stack."""
    return {v["verdict"] for row in report["ops"] for v in row["verdicts"].values()}


def _place(row: dict[str, Any]) -> str:
    modules = list(row["modules"])
    text = ", ".join(m or "(top level)" for m in modules[:SHOWN])
    return text + (f" +{len(modules) - SHOWN}" if len(modules) > SHOWN else "")


def _source(row: dict[str, Any]) -> str:
    sources = list(row["sources"])
    return sources[0] + (f" +{len(sources) - 1}" if len(sources) > 1 else "")


def _cases(verdict: dict[str, Any]) -> str:
    cases = verdict["cases"]
    return ", ".join(cases[:SHOWN]) + (f" +{len(cases) - SHOWN}" if len(cases) > SHOWN else "")


def _mentions(rows: list[dict[str, Any]], stack_id: str | None = None) -> str:
    """`aten::nonzero x16 in model.layers.*.block_sparse_moe, ...` for the summary; with `stack_id`, the
    case ids each op's verdict on that stack rests on too."""
    by_op: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_op.setdefault(row["op"], []).append(row)
    parts = []
    for op, its in by_op.items():
        calls = sum(r["calls"] for r in its)
        modules = Counter()
        for r in its:
            modules.update(r["modules"])
        where = modules.most_common(1)[0][0] if modules else ""
        cases = sorted({c for r in its for c in r["verdicts"][stack_id]["cases"]}) if stack_id else []
        parts.append(f"{op} x{calls} in {where or '(top level)'}"
                     + (f" [cases: {_cases({'cases': cases})}]" if cases else ""))
    return "; ".join(parts)


def summary_lines(report: dict[str, Any]) -> list[str]:
    """The summary, one line per fact: totals, then per stack the verdict counts naming the ops."""
    s = report["summary"]
    mode = "training step (forward, backward, one AdamW step)" if report["mode"] == "train" else "inference"
    lines = [f"{report['model']}, {report['dtype']}, {mode}",
             f"{s['calls']:,} op calls, {s['overloads']} distinct overloads, "
             f"{s['rows']} (overload, dtype, direction) rows"]
    for stack in report["stacks"]:
        counts = s["counts"][stack["id"]]
        parts = []
        for verdict in VERDICTS:
            if verdict not in counts:
                continue
            text = f"{counts[verdict]} {WORDS[verdict]}"
            if verdict in NAMED:
                rows = [r for r in report["ops"] if r["verdicts"][stack["id"]]["verdict"] == verdict]
                text += f" ({_mentions(rows, stack['id'] if verdict in CITED else None)})"
            parts.append(text)
        lines.append(f"{stack['id']} [{stack['label']}]: " + "; ".join(parts))
    for flag, title in (("custom", "Custom kernels to port"), ("host_sync", "Host syncs (a graph break or a "
                        "device-to-host copy each)"), ("data_dependent", "Data-dependent output shapes")):
        rows = [r for r in report["ops"] if r[flag]]
        if rows:
            lines.append(f"{title}: {_mentions(rows)}")
    for note in report["assumptions"]:
        lines.append(f"Assumed while tracing: {note}")
    return lines


def table_rows(report: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """Headers and rows of the table (one verdict column per stack)."""
    many = len(report["stacks"]) > 1
    headers = ["op", "dtype", "direction", "calls", "module", "source"]
    for stack in report["stacks"]:
        name = stack["id"].partition("/")[0] if many else ""  # a snapshot id: backend/key
        headers += [f"verdict {name}".strip(), f"cases {name}".strip()]
    rows = []
    for row in report["ops"]:
        line = [row["op"] + (" [host sync]" if row["host_sync"] else "") + (" [data-dependent]" if row["data_dependent"]
                                                                             else ""),
                row["dtype"], row["direction"], row["calls"], _place(row), _source(row)]
        for stack in report["stacks"]:
            verdict = row["verdicts"][stack["id"]]
            line += [WORDS[verdict["verdict"]], _cases(verdict)]
        rows.append(line)
    return headers, rows


def run_lines(report: dict[str, Any]) -> list[str]:
    """The device run beside the prediction (empty without --run)."""
    run = report["run"]
    if not run:
        return []
    rec = run["record"]
    lines = [f"On the device ({run['backend']}, case {rec['case_id']}): {rec['status']}"
             + (f" at {rec['stage']}: {rec['failure']['message']}" if rec.get("failure") else ""),
             f"  compiles {rec['compiles']} over sequence lengths {', '.join(map(str, run['seq_lens']))}; "
             f"graph breaks {rec['extra'].get('graph_breaks', 'n/a')}; device time {rec['device_s']} s, "
             f"host-side time {run['host_s']} s, wall {rec['wall_s']} s",
             f"  fallbacks observed: {', '.join(rec['fallback_ops']) or 'none'}; "
             f"host syncs observed: {', '.join(rec['host_syncs']) or 'none'}"]
    if rec.get("numerics"):
        n = rec["numerics"]
        lines.append(f"  numerics against float64 CPU: {n['verdict']}, ratio {n['ratio']}, max abs err {n['max_abs_err']}")
    if run["agrees"]:
        lines.append("  The run agrees with the prediction.")
    for line in run["disagreements"]:
        lines.append(f"  DISAGREES: {line}")
    return lines


def text(report: dict[str, Any], markdown: bool = False) -> str:
    """The report as plain text, or as Markdown for a pull-request comment."""
    from tabulate import tabulate

    headers, rows = table_rows(report)
    summary = summary_lines(report)
    runs = run_lines(report)
    if markdown:
        out = ["## opsuite audit", "", f"**{summary[0]}**", "", *[f"- {line}" for line in summary[1:]], ""]
        if runs:
            out += ["### On the device", "", *[f"- {line.strip()}" for line in runs], ""]
        out += ["### Operators, worst first", "", tabulate(rows, headers=headers, tablefmt="github")]
        return "\n".join(out) + "\n"
    out = ["opsuite audit: " + summary[0], *summary[1:], ""]
    if runs:
        out += [*runs, ""]
    out.append(tabulate(rows, headers=headers, maxcolwidths=[40, None, None, None, 40, 50] + [None, 60] *
                        len(report["stacks"])))
    return "\n".join(out) + "\n"
