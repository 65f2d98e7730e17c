"""Markdown pages (tabulate): a snapshot's page and the matrix index, `matrix/README.md`."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from typing import Any, Iterable, Iterator

from tabulate import tabulate

from opsuite import vocabulary
from opsuite.matrix import DIRECTION_ORDER, DTYPE_ORDER, caveats, notes
from opsuite.matrix.snapshot import Snapshot, category, split_id

STATUSES = vocabulary.STATUSES
# Backslash-escaping these keeps error texts literal: no emphasis, links, table breaks or raw HTML.
_SPECIAL = re.compile(r"([\\`*_\[\]<>|&#])")


def md(text: Any) -> str:
    """Text made literal for a Markdown table cell or paragraph (one line, punctuation escaped)."""
    return _SPECIAL.sub(r"\\\1", " ".join(str(text).split()))


def columns(cells: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    """The (dtype, direction) pairs that occur, in display order."""
    present = {split_id(case_id)[2:] for case_id in cells}
    order = [(d, r) for d in DTYPE_ORDER for r in DIRECTION_ORDER]
    return [c for c in order if c in present] + sorted(present - set(order))


def pipe_table(headers: list[str], rows: Iterable[list[str]]) -> Iterator[str]:
    """The lines of a GitHub Markdown table without padding: tabulate pads every cell to its column's
    widest, which makes a large snapshot's table of cells mostly spaces (hundreds of MB) and slow to build."""
    yield "| " + " | ".join(headers) + " |"
    yield "|" + "---|" * len(headers)
    for row in rows:
        yield "| " + " | ".join(row) + " |"


def _joined(lines: Iterable[str]) -> Iterator[str]:
    """What `"\n".join(lines)` is, in pieces: a large page is written as it is made, never held whole."""
    for number, line in enumerate(lines):
        if number:
            yield "\n"
        yield line


def catalog_text(catalog: dict[str, Any]) -> str:
    """What a run's cases came from: their kinds, the size of OpInfo's op_db, the transformers version."""
    parts = [", ".join(catalog.get("kinds", ()))]
    if catalog.get("op_db_size"):
        parts.append(f"op_db {catalog['op_db_size']} entries")
    if catalog.get("transformers"):
        parts.append(f"transformers {catalog['transformers']}")
    return "; ".join(part for part in parts if part)


def pct(value: float | None) -> str:
    """A pass percentage for display."""
    return "-" if value is None else f"{value:.1f}"


def summary_rows(cells: dict[str, dict[str, Any]]) -> list[list[Any]]:
    """Per category: count per status, total and pass % (None when no case applies); then the total row."""
    groups: dict[str, list[str]] = defaultdict(list)
    for case_id, cell in cells.items():
        groups[category(case_id)].append(cell["status"])
    groups_all = sorted(groups.items()) + [("all", [c["status"] for c in cells.values()])]
    rows = []
    for name, statuses in groups_all:
        counts = {s: statuses.count(s) for s in STATUSES}
        applicable = len(statuses) - counts[vocabulary.NOT_APPLICABLE]
        working = sum(counts[s] for s in vocabulary.WORKING)
        rows.append([name, *counts.values(), len(statuses), 100.0 * working / applicable if applicable else None])
    return rows


def summary_table(cells: dict[str, dict[str, Any]]) -> str:
    """The summary by category and status as a Markdown table (a snapshot's page, the end of a run)."""
    return tabulate(summary_rows(cells), headers=["category", *STATUSES, "total", "pass %"], tablefmt="github",
                    floatfmt=".1f", missingval="-")


def _cell_text(cell: dict[str, Any], run_number: dict[str, int], caveat_numbers: list[int]) -> str:
    note = notes.short(cell)
    ref = f"⟨{run_number[cell['source']['run_id']]}:{cell['source']['line']}⟩"
    marks = "".join(f" (caveat {n})" for n in caveat_numbers)
    return f"**{cell['status']}**" + (f" {md(note)}" if note else "") + f" {ref}{marks}"


def caveats_section(snap: Snapshot) -> list[str]:
    """The snapshot's caveats (`caveats.py`), numbered, each with the cells it covers; [] without any."""
    if not snap.caveats:
        return []
    out = ["## Caveats", "",
           "What is known about these cells that the run could not know (a rule or the harness changed since; "
           "a re-run is pending). The cells are as measured; each one covered is marked (caveat N).", ""]
    for number, (caveat, covered) in enumerate(caveats.matched(snap.caveats, snap.cells), start=1):
        shown = ", ".join(f"`{c}`" for c in covered[:12]) + (f" and {len(covered) - 12} more" if len(covered) > 12 else "")
        out.append(f"{number}. {md(caveat['reason'])} ({len(covered)} cells: {shown})")
    return out + [""]


def snapshot_page(snap: Snapshot) -> Iterator[str]:
    """The snapshot's README.md (stack, runs, summary by category and status, every cell, failure
    details), in the pieces of its text."""
    return _joined(_snapshot_lines(snap))


def _snapshot_lines(snap: Snapshot) -> Iterator[str]:
    data, cells = snap.data, snap.cells
    run_number = {run["run_id"]: n for n, run in enumerate(data["runs"], start=1)}
    summary = data["summary"]
    out = [f"# {md(data['backend'])}: {md(data['label'])}", "",
           f"Snapshot `{data['id']}`, published {data['published_at']}: {summary['cases']} cases, "
           f"{pct(summary['pass_pct'])} % pass (of the cases that apply). Generated by `opsuite publish`; "
           f"machine-readable: [snapshot.json](snapshot.json); searchable: [index.html](index.html).", "",
           "## Stack", ""]
    facts = [[f"stack.{k}", md(v)] for k, v in data["stack"].items()] + \
            [[f"env.{k}", md(v)] for k, v in data["env"].items()]
    out += [tabulate(facts, headers=["field", "value"], tablefmt="github"), "", "## Runs", ""]
    runs = [[n, f"[{md(run['file'])}]({run['file']})", md(run["run_id"]), run["started_at"], run["cases"],
             md(catalog_text(run.get("catalog", {}))), md(run.get("opsuite", {}).get("commit", "")),
             md(json.dumps(run.get("options", {})))]
            for n, run in enumerate(data["runs"], start=1)]
    out += [tabulate(runs, headers=["#", "results file", "run id", "started", "cases", "catalog", "opsuite commit",
                                    "options"], tablefmt="github"), "",
            "## Summary by category and status", "",
            summary_table(cells), "",
            *caveats_section(snap),
            "## Cells", "",
            "One row per subject, one column per dtype and direction. A cell gives the status, then what ran on "
            "the host, the stage and error (`[category/code] type: message`) or the measured error "
            "(ratio of the device's error to CPU's, max abs err), then ⟨run:line⟩: the line of the results "
            "file (numbered as in Runs) the cell came from.", ""]
    cols = columns(cells)
    grid: dict[tuple[str, str], dict[tuple[str, str], str]] = defaultdict(dict)
    for case_id, cell in cells.items():
        kind, name, dtype, direction = split_id(case_id)
        numbers = [n for n, _ in caveats.numbered(snap.caveats, case_id)]
        grid[(kind, name)][(dtype, direction)] = _cell_text(cell, run_number, numbers)
    yield from out
    rows = ([f"{md(kind)}/{md(name)}", *(row.get(col, "") for col in cols)] for (kind, name), row in sorted(grid.items()))
    yield from pipe_table(["subject", *(f"{d} {r}" for d, r in cols)], rows)
    yield ""
    failed = [(case_id, cell) for case_id, cell in cells.items() if cell.get("failure")]
    if failed:
        yield from ["## Failures in full", ""]
        for case_id, cell in failed:
            yield f"- `{case_id}`: " + "; ".join(f"{label}: {md(text)}" for label, text in notes.details(cell))
        yield ""


def index_page(snapshots: list[Snapshot], release_notes: list[dict[str, str]] = ()) -> str:
    """`matrix/README.md`: every snapshot with its coverage figures, per backend, newest stack first, and
    the backend's release notes (`release_notes.files`)."""
    out = ["# opsuite coverage matrix", "",
           "Generated by `opsuite publish`; do not edit by hand. Search every cell in [index.html](index.html); "
           "look one up offline with `opsuite lookup NAME`; compare two snapshots with `opsuite diff A B`. "
           "Pass % is of the cases that apply (skips left out), each run with the samples per case shown "
           "(`all`: every OpInfo sample). Layout and schemas: docs/matrix.md.", ""]
    if not snapshots:
        out += ["No snapshot is published yet.", ""]
    by_backend: dict[str, list[Snapshot]] = defaultdict(list)
    for snap in snapshots:
        by_backend[snap.backend].append(snap)
    for backend, snaps in sorted(by_backend.items()):
        out += [f"## {md(backend)}", ""]
        rows = []
        for snap in sorted(snaps, key=lambda s: s.order_key, reverse=True):
            summary = snap.data["summary"]
            rows.append([f"[{md(snap.data['label'])}]({backend}/{snap.data['key']}/README.md)",
                         snap.data["published_at"][:10], summary["cases"], snap.samples, summary["pass_pct"],
                         *(summary["counts"].get(s, 0) for s in STATUSES)])
        headers = ["stack", "published", "cases", "samples per case", "pass %", *STATUSES]
        out += [tabulate(rows, headers=headers, tablefmt="github", floatfmt=".1f", missingval="-"), ""]
        pages = [page for page in release_notes if page["backend"] == backend]
        if pages:
            out += ["Release notes:", ""] + [f"- [{md(page['headline'])}]({page['md']}) ([HTML]({page['html']}))"
                                             for page in pages] + [""]
    return "\n".join(out)
