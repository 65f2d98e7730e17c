"""`opsuite lookup NAME`: what every published snapshot says about an op, an aten overload or a block.

Reads only the lookup index (no torch, no device; see `index.py`): NAME is anything `opsuite.names`
resolves (an OpInfo name or alias, `F.softmax`, `torch.nn.functional.softmax`, `Tensor.softmax`, a block
name, `kind/name`), a case id whose name part is any of those, or an aten overload in either spelling
(`aten::_softmax`, `aten._softmax.default`, `aten::add.Tensor`; a packet such as `aten::add` means all its
overloads): the subject named after it (`aten::index_put_` -> `index_put`) first, then the cases whose CPU
run dispatched it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from opsuite import names
from opsuite.matrix import DIRECTION_ORDER, DTYPE_ORDER, caveats, index as lookup_index, stack
from opsuite.vocabulary import parse_cell_key, split_typed_case_id


@dataclass
class Match:
    """One subject the query selects, and which of its cells (all when `only` is None)."""

    subject: str
    keys: set[str] | None = None          # "dtype/direction" keys, when a case id chose them
    via: list[str] = field(default_factory=list)  # the aten overloads that selected it
    cells_file: Any = None                # with `via`: the index's Cells, which knows the cells that dispatched them

    @property
    def only(self) -> set[str] | None:
        """The cells selected: those a case id named, or (selected by aten ops) those whose CPU run
        dispatched them, read from the index when first asked (a packet may select thousands of subjects)."""
        if self.keys is None and self.cells_file is not None:
            dispatched = self.cells_file.line(self.subject)[2]
            self.keys = {key for op in self.via for key in dispatched.get(op, ())}
        return self.keys


def _record_keys(index: dict[str, Any], packet: str, overload: str | None) -> list[str]:
    """The aten_ops strings in the index that a (packet, overload) query names."""
    if overload:  # records spell the default overload without a suffix
        key = f"aten::{packet}" if overload == "default" else f"aten::{packet}.{overload}"
        return [key] if key in index["aten"] else []
    return [k for k in index["aten"] if k.partition(".")[0] == f"aten::{packet}"]


def _dispatching(index: dict[str, Any], packet: str, overload: str | None) -> list[Match]:
    """The subjects whose CPU run dispatched an aten op, with only the cells that did."""
    matches: dict[str, Match] = {}
    for op in _record_keys(index, packet, overload):
        for subject in index["aten"][op]:
            match = matches.setdefault(subject, Match(subject, cells_file=index["subjects"]))
            if op not in match.via:
                match.via.append(op)
    bare = packet.lstrip("_")
    # Subjects named after the packet (softmax for aten::_softmax) first: they are what was asked.
    return sorted(matches.values(), key=lambda m: (_last_name(m.subject) != bare, "." in m.subject, m.subject))


def resolve(query: str, index: dict[str, Any]) -> list[Match]:
    """The subjects (and cells) a query names; empty when it names nothing published."""
    found = lookup_index.resolver(index)
    if split_typed_case_id(query):  # a case id, its name part spelled any way lookup accepts
        return [Match(case.subject, {case.cell}) for case in map(split_typed_case_id, found.resolve_case(query))]
    matches = [Match(subject) for subject in found.resolve(query)]
    aten = names.aten_packet(query)
    if aten:  # the subject named after the op, whole, then those whose CPU run dispatched it
        dispatching = {m.subject: m for m in _dispatching(index, *aten)}
        for match in matches:  # named: the whole subject, with the overloads it dispatched
            match.via = dispatching.pop(match.subject, match).via
        matches += dispatching.values()
    return matches


def _last_name(subject: str) -> str:
    """`ops/nn.functional.softmax` -> `softmax`."""
    return subject.partition("/")[2].rpartition(".")[2]


def suggestions(query: str, index: dict[str, Any]) -> list[str]:
    """Real subjects (and aten ops, for an aten spelling) close to a name that names nothing."""
    import difflib

    aten = names.aten_packet(query)
    if aten:
        return difflib.get_close_matches(query, list(index["aten"]), n=6, cutoff=0.6)
    return lookup_index.resolver(index).suggest(query)


def column_order(key: str) -> tuple:
    """Sort key of a `dtype/direction` cell key: the catalog's dtype order, then direction order."""
    dtype, direction = parse_cell_key(key)
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
            dtype, direction = parse_cell_key(key)
            row = {"backend": snap["backend"], "snapshot": snap["id"], "stack": snap["label"],
                   "dtype": dtype, "direction": direction, "status": status, "note": note,
                   "source": source, "run_id": run_id}
            said = caveats.reasons(snap.get("caveats", []), f"{match.subject}/{key}")
            if said:
                row["caveats"] = said
            out.append(row)
    return out


def dispatched(subject: str, index: dict[str, Any]) -> list[str]:
    """The aten overloads a subject's cases dispatched on CPU, from the index."""
    return list(index["subjects"].line(subject)[2])
