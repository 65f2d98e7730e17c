"""`opsuite history NAME`: per cell, since which stack version it works and where it stopped working.

Like MDN's browser-compat-data (`version_added`, `version_removed`), read off every snapshot of a
backend in stack-version order. A snapshot that lacks a cell (a partial run) or skips it (not
applicable) says nothing about it and is passed over.
"""

from __future__ import annotations

from typing import Any

from tabulate import tabulate

from opsuite.matrix import lookup, stack
from opsuite.vocabulary import HOST_FALLBACK, NOT_APPLICABLE, WORKING, working_rank

FALLBACK_WORDS = "works, with host fallback"


def timeline_facts(timeline: list[tuple[str, str | None]]) -> dict[str, Any]:
    """From (snapshot id, status or None) oldest first: works since (passes since), and every snapshot
    where it stopped working as it had (a pass or a host fallback that became worse)."""
    seen = [(label, status) for label, status in timeline if status not in (None, NOT_APPLICABLE)]
    stopped = [label for (_, before), (label, after) in zip(seen, seen[1:]) if working_rank(after) < working_rank(before)]
    since = None
    for label, status in reversed(seen):
        if status not in WORKING:
            break
        since = label
    return {"works_since": since, "stopped_in": stopped}


def fallback_since(timeline: list[tuple[str, str | None]]) -> str | None:
    """When the newest status is a host fallback: the oldest snapshot of the unbroken run of passes and
    fallbacks up to it (it has worked, with or without the host, since then); otherwise None."""
    seen = [(label, status) for label, status in timeline if status not in (None, NOT_APPLICABLE)]
    if not seen or seen[-1][1] != HOST_FALLBACK:
        return None
    since = None
    for label, status in reversed(seen):
        if status not in WORKING | {HOST_FALLBACK}:
            break
        since = label
    return since


def history(matches: list[lookup.Match], index: dict[str, Any], backend: str | None = None) -> list[dict[str, Any]]:
    """Per backend: its snapshots oldest first and, per matched cell, its statuses and facts."""
    snapshots = index["snapshots"]
    # A release's name (`2.9.0`); a snapshot without version fields is named by its label.
    release = {s["id"]: stack.release_name(s["backend"], s["versions"]) or s["label"] for s in snapshots}
    backends = sorted({s["backend"] for s in snapshots if backend in (None, s["backend"])})
    out = []
    for name in backends:
        numbers = sorted((n for n, s in enumerate(snapshots) if s["backend"] == name),
                         key=lambda n: stack.order_key(name, snapshots[n]["versions"], snapshots[n]["started_at"]))
        cells = []
        for match in matches:
            per_snapshot = index["subjects"][match.subject]
            keys = sorted({k for n in numbers for k in per_snapshot.get(str(n), {})}, key=lookup.column_order)
            for key in keys:
                if match.only is not None and key not in match.only:
                    continue
                statuses = [per_snapshot.get(str(n), {}).get(key, [None])[0] for n in numbers]
                timeline = list(zip((snapshots[n]["id"] for n in numbers), statuses))
                facts = timeline_facts(timeline)
                cells.append({"cell": f"{match.subject}/{key}", "statuses": statuses, **facts,
                              "works_with_host_fallback_since": fallback_since(timeline),
                              "works_since_version": release.get(facts["works_since"]),
                              "stopped_in_versions": [release[i] for i in facts["stopped_in"]]})
        if cells:
            out.append({"backend": name, "cells": cells,
                        "snapshots": [{"id": snapshots[n]["id"], "label": snapshots[n]["label"],
                                       "version": release[snapshots[n]["id"]]} for n in numbers]})
    return out


def since(subject: str, index: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """For lookup and the pages: per backend and `dtype/direction` of a subject (`ops/add`), the version
    it works since (None: not working now) and the versions it stopped working in."""
    return {entry["backend"]: {c["cell"].removeprefix(subject + "/"): {"works_since": c["works_since_version"],
                                                                       "stopped_in": c["stopped_in_versions"]}
                               for c in entry["cells"]}
            for entry in history([lookup.Match(subject)], index)}


def _works(cell: dict[str, Any], number: dict[str, str]) -> str:
    """The "works since" column: a snapshot, a host fallback since a snapshot, or not working now."""
    if cell["works_since"]:
        return number[cell["works_since"]]
    if cell.get("works_with_host_fallback_since"):
        return f"{FALLBACK_WORDS} since {number[cell['works_with_host_fallback_since']]}"
    return "not working now"


def text(result: list[dict[str, Any]]) -> str:
    """Tables, one per backend: a column per snapshot ([1] the oldest), then works since / stopped in,
    each named by its number and release (`[2] 2.14.0`)."""
    out = []
    for entry in result:
        number = {snap["id"]: f"[{i}]" for i, snap in enumerate(entry["snapshots"], start=1)}
        named = {snap["id"]: f"{number[snap['id']]} {snap['version']}" for snap in entry["snapshots"]}
        headers = ["cell", *number.values(), "works since", "stopped working in"]
        rows = [[c["cell"], *(FALLBACK_WORDS if s == HOST_FALLBACK else s or "-" for s in c["statuses"]),
                 _works(c, named),
                 ", ".join(named[i] for i in c["stopped_in"]) or "-"]
                for c in entry["cells"]]
        out += [f"{entry['backend']}:"]
        out += [f"  {number[snap['id']]} {snap['label']}  ({snap['id']})" for snap in entry["snapshots"]]
        out += ["", tabulate(rows, headers=headers), ""]
    return "\n".join(out)
