"""The matrix subcommands of `opsuite`: publish, reindex, diff, history, lookup.

Registered in `opsuite.cli.COMMANDS`. Modules are imported inside each command so that `opsuite lookup`
loads only what it uses (no torch, no jsonschema). Bad input raises MatrixError: one line, exit 2.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import textwrap
from pathlib import Path
from typing import Any

from opsuite.matrix import MATRIX_ENV, find_matrix

EXIT_UNKNOWN_NAME = 1


def _add_matrix(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--matrix", type=Path, default=None,
                        help=f"the matrix directory (default: ${MATRIX_ENV}, else the matrix/ of the current "
                             f"checkout, found from the working directory)")


def _add_publish(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", nargs="+", help="results files (.jsonl) of one backend and stack")
    parser.add_argument("--replace", action="store_true",
                        help="replace the snapshot of this stack if there is one (it may not lose cases)")
    _add_matrix(parser)


def cmd_publish(args: argparse.Namespace) -> int:
    """Publish results files as a snapshot; regenerate the matrix's README.md, index.json and index.html."""
    from opsuite.matrix import publish

    snap = publish.publish(args.results, find_matrix(args.matrix, write=True), replace=args.replace)
    summary = snap.data["summary"]
    print(f"published {snap.id}: {summary['cases']} cases, {summary['pass_pct']} % pass\n  {snap.path}")
    return 0


def cmd_reindex(args: argparse.Namespace) -> int:
    """Rewrite every page and the lookup index from the snapshots' JSON (after an opsuite upgrade)."""
    from opsuite.matrix import publish

    matrix = find_matrix(args.matrix, write=True)
    snapshots = publish.reindex(matrix)
    print(f"reindexed {len(snapshots)} snapshots in {matrix}")
    return 0


def _add_diff(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("a", help="the earlier side: a snapshot (its directory, snapshot.json, or id "
                                  "backend/key) or a results file (.jsonl) of a finished run, not published")
    parser.add_argument("b", help="the later side: a snapshot or a results file")
    parser.add_argument("--json", action="store_true", help="print the diff as JSON")
    _add_matrix(parser)


def cmd_diff(args: argparse.Namespace) -> int:
    """Regressed, improved, changed, added and removed cases from A to B. Exit 1 when any regressed."""
    from opsuite.matrix import diff

    matrix = find_matrix(args.matrix)
    result = diff.diff(*(diff.side(ref, matrix) for ref in (args.a, args.b)))
    print(json.dumps(result, indent=1) if args.json else diff.text(result))
    return diff.exit_code(result)


def _add_release_notes(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("a", help="the earlier release's snapshot: its directory, snapshot.json, or id (backend/key)")
    parser.add_argument("b", help="the later release's snapshot")
    parser.add_argument("--json", action="store_true", help="print the notes as JSON")
    _add_matrix(parser)
    parser.add_argument("--write", action="store_true",
                        help="also write the notes' Markdown and HTML pages under <matrix>/release-notes/<backend>/")


def cmd_release_notes(args: argparse.Namespace) -> int:
    """What release B changed against A, for people: print the Markdown notes (or JSON); --write the pages."""
    from opsuite.matrix import publish, release_notes, snapshot

    matrix = find_matrix(args.matrix, write=args.write)
    a, b = (snapshot.load(snapshot.resolve(ref, matrix)) for ref in (args.a, args.b))
    result = release_notes.release_notes(a, b)
    sys.stdout.write(json.dumps(result, indent=1) + "\n" if args.json else release_notes.markdown(result))
    if args.write:
        for path in release_notes.write(result, matrix):
            print(f"wrote {path}", file=sys.stderr)
        publish.reindex(matrix, pages=False)  # the index links every release's notes
    return 0


def _add_name(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="an op as PyTorch users write it (softmax, F.softmax, "
                                     "torch.nn.functional.softmax, Tensor.softmax, an OpInfo alias), an aten "
                                     "overload (aten::_softmax, aten._softmax.default), a block name, or a case id")
    parser.add_argument("--json", action="store_true", help="print the answer as JSON")
    _add_matrix(parser)


def _resolve(name: str, index: dict[str, Any]) -> list[Any] | None:
    """The matches of a name, or None after printing close matches."""
    from opsuite.matrix import lookup

    matches = lookup.resolve(name, index)
    if not matches:
        close = lookup.suggestions(name, index)
        print(f"opsuite: {name!r} is in no published snapshot" +
              (f"; did you mean: {', '.join(close)}?" if close else ""), file=sys.stderr)
    return matches or None


def _add_history(parser: argparse.ArgumentParser) -> None:
    _add_name(parser)
    parser.add_argument("--backend", help="only this backend's snapshots")


def cmd_history(args: argparse.Namespace) -> int:
    """Per cell, across a backend's snapshots in version order: since when it works, where it stopped."""
    from opsuite.matrix import MatrixError, history, index

    matrix = find_matrix(args.matrix)
    data = index.load(matrix)
    if args.backend and args.backend not in {s["backend"] for s in data["snapshots"]}:
        raise MatrixError(f"no snapshot of backend {args.backend!r} in {matrix}")
    matches = _resolve(args.name, data)
    if matches is None:
        return EXIT_UNKNOWN_NAME
    result = history.history(matches, data, args.backend)
    print(json.dumps(result, indent=1) if args.json else history.text(result))
    return 0


def _add_lookup(parser: argparse.ArgumentParser) -> None:
    _add_name(parser)
    parser.add_argument("--limit", type=int, default=20,
                        help="show at most this many subjects (an aten overload may select many); 0: all")


def cmd_lookup(args: argparse.Namespace) -> int:
    """Every backend and stack's cells of an op, aten overload or block, with notes. Exit 1 when unknown."""
    from opsuite.matrix import index, lookup

    data = index.load(find_matrix(args.matrix))
    matches = _resolve(args.name, data)
    if matches is None:
        return EXIT_UNKNOWN_NAME
    order = lookup.newest_first(data)
    shown = matches[:args.limit] if args.limit > 0 else matches
    answer = [{"subject": m.subject, "via": m.via, "dispatches": lookup.dispatched(m.subject, data),
               "cells": lookup.rows(m, data, order)} for m in shown]
    if args.json:
        print(json.dumps({"query": args.name, "subjects": len(matches), "answer": answer}, indent=1))
        return 0
    from tabulate import tabulate

    for entry in answer:
        print(f"{entry['subject']}" + (f"  (dispatches {', '.join(entry['via'])})" if entry["via"] else ""))
        if entry["dispatches"] and not entry["via"]:
            print(f"  aten ops on CPU: {', '.join(entry['dispatches'])}")
        for snapshot_id, cells in itertools.groupby(entry["cells"], key=lambda c: c["snapshot"]):
            cells = list(cells)
            print(f"\n  {cells[0]['backend']}: {cells[0]['stack']}  [{snapshot_id}]")
            said = list(dict.fromkeys(r for c in cells for r in c.get("caveats", ())))
            rows = [[c["dtype"], c["direction"], c["status"],
                     c["note"] + "".join(f" (caveat {said.index(r) + 1})" for r in c.get("caveats", ())), c["source"]]
                    for c in cells]
            # Notes are cut to 100 characters already; no wrapping or number parsing: they cost more
            # than the rest of a lookup when a packet selects many subjects.
            table = tabulate(rows, headers=["dtype", "direction", "status", "notes", "source"], disable_numparse=True)
            print(textwrap.indent(table, "    "))
            for number, reason in enumerate(said, start=1):
                print(textwrap.fill(reason, width=110, initial_indent=f"    caveat {number}: ",
                                    subsequent_indent="      "))
        print()
    if len(shown) < len(matches):
        print(f"... and {len(matches) - len(shown)} more subjects (--limit 0 shows all)")
    return 0


COMMANDS = {
    "publish": (_add_publish, cmd_publish, "publish results files of one stack as a matrix snapshot"),
    "reindex": (_add_matrix, cmd_reindex, "rewrite the matrix's pages and lookup index from its snapshots"),
    "diff": (_add_diff, cmd_diff, "compare two snapshots or results files: regressed, improved, changed, added, removed"),
    "release-notes": (_add_release_notes, cmd_release_notes,
                      "what release B changed against A: newly working and broken, fallbacks, numerics, catalog"),
    "history": (_add_history, cmd_history, "per cell, since which stack version it works and where it broke"),
    "lookup": (_add_lookup, cmd_lookup, "look an op, aten overload or block up in the published matrix"),
}
