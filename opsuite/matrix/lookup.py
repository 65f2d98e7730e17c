"""`opsuite lookup NAME`: what every published snapshot says about an op, an aten overload or a block.

Reads only `matrix/index.json` (no torch, no device): NAME is a subject name (an OpInfo name such as
`nn.functional.softmax`, a block name), `kind/name`, a full case id, or an aten overload in either
spelling (`aten::_softmax`, `aten._softmax.default`, `aten::add.Tensor`; a packet such as `aten::add`
means all its overloads), which selects the cases whose CPU run dispatched it.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

from opsuite.matrix import DIRECTION_ORDER, DTYPE_ORDER, stack
from opsuite.vocabulary import parse_case_id

ATEN_PREFIXES = ("torch.ops.aten.", "aten::", "aten.")


@dataclass
class Match:
    """One subject the query selects, and which of its cells (all when `only` is None)."""

    subject: str
    only: set[str] | None = None          # "dtype/direction" keys
    via: list[str] = field(default_factory=list)  # the aten overloads that selected it


def aten_key(query: str) -> tuple[str, str | None] | None:
    """(packet, overload or None) of an aten spelling; None when `query` is not one.

    `aten._softmax.default` and `aten::_softmax` name the same default overload in records
    (`aten::_softmax`); without an overload the packet means all of them.
    """
    for prefix in ATEN_PREFIXES:
        if query.startswith(prefix):
            packet, _, overload = query[len(prefix):].partition(".")
            return (packet, overload or None) if packet else None
    return None


def _record_keys(index: dict[str, Any], packet: str, overload: str | None) -> list[str]:
    """The aten_ops strings in the index that a (packet, overload) query names."""
    if overload:  # records spell the default overload without a suffix
        key = f"aten::{packet}" if overload == "default" else f"aten::{packet}.{overload}"
        return [key] if key in index["aten"] else []
    return [k for k in index["aten"] if k.partition(".")[0] == f"aten::{packet}"]


def resolve(query: str, index: dict[str, Any]) -> list[Match]:
    """The subjects (and cells) a query names; empty when it names nothing published."""
    subjects = index["subjects"]
    parts = query.split("/")
    if len(parts) == 4 and "/".join(parts[:2]) in subjects:  # a case id
        return [Match("/".join(parts[:2]), {"/".join(parts[2:])})]
    if query in subjects:
        return [Match(query)]
    aten = aten_key(query)
    if aten:
        matches: dict[str, Match] = {}
        for op in _record_keys(index, *aten):
            for case_id in index["aten"][op]:
                kind, name, dtype, direction = parse_case_id(case_id)
                match = matches.setdefault(f"{kind}/{name}", Match(f"{kind}/{name}", set()))
                match.only.add(f"{dtype}/{direction}")
                if op not in match.via:
                    match.via.append(op)
        packet = aten[0].lstrip("_")
        # Subjects named after the packet (softmax for aten::_softmax) first: they are what was asked.
        return sorted(matches.values(), key=lambda m: (_last_name(m.subject) != packet, "." in m.subject, m.subject))
    return [Match(subject) for subject in subjects if subject.partition("/")[2] == query]


def _last_name(subject: str) -> str:
    """`ops/nn.functional.softmax` -> `softmax`."""
    return subject.partition("/")[2].rpartition(".")[2]


def suggestions(query: str, index: dict[str, Any]) -> list[str]:
    """Close matches among every name lookup knows."""
    names = {subject.partition("/")[2] for subject in index["subjects"]}
    names |= set(index["aten"]) | {op.partition(".")[0] for op in index["aten"]}
    return difflib.get_close_matches(query, sorted(names), n=6, cutoff=0.6)


def column_order(key: str) -> tuple:
    """Sort key of a `dtype/direction` cell key: the catalog's dtype order, then direction order."""
    dtype, direction = key.split("/")
    return (DTYPE_ORDER.index(dtype) if dtype in DTYPE_ORDER else len(DTYPE_ORDER), dtype,
            DIRECTION_ORDER.index(direction) if direction in DIRECTION_ORDER else len(DIRECTION_ORDER))


def newest_first(index: dict[str, Any]) -> list[str]:
    """The index's snapshot numbers (as its keys spell them) by backend, newest stack first."""
    snapshots = index["snapshots"]

    def key(number: int) -> tuple:
        snap = snapshots[number]
        return stack.order_key(snap["backend"], snap["versions"], snap["started_at"])

    by_version = sorted(range(len(snapshots)), key=key, reverse=True)
    return [str(n) for n in sorted(by_version, key=lambda n: snapshots[n]["backend"])]


def rows(match: Match, index: dict[str, Any], order: list[str]) -> list[dict[str, Any]]:
    """One row per snapshot x dtype x direction of a match, snapshots in `order` (see newest_first)."""
    snapshots = index["snapshots"]
    per_snapshot = index["subjects"][match.subject]
    out = []
    for number in (n for n in order if n in per_snapshot):
        snap = snapshots[int(number)]
        for key in sorted(per_snapshot[number], key=column_order):
            if match.only is not None and key not in match.only:
                continue
            status, note, source, run_id = per_snapshot[number][key]
            dtype, direction = key.split("/")
            out.append({"backend": snap["backend"], "snapshot": snap["id"], "stack": snap["label"],
                        "dtype": dtype, "direction": direction, "status": status, "note": note,
                        "source": source, "run_id": run_id})
    return out


def dispatched(subject: str, index: dict[str, Any]) -> list[str]:
    """The aten overloads a subject's cases dispatched on CPU, from the index."""
    prefix = subject + "/"
    return [op for op, cases in index["aten"].items() if any(c.startswith(prefix) for c in cases)]
