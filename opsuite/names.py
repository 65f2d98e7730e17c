"""Names people type for a subject: `F.softmax`, `torch.nn.functional.softmax`, `aten::index_put_`,
`Tensor.softmax`, `x.softmax`, an OpInfo alias such as `absolute`, all resolved to the subjects of the
catalog (`ops/softmax`, `ops/softmax.with_dtype`).

Torch-free, so `opsuite lookup` stays fast and the pytest process never imports torch. Two sources:

- **spelling rules**, which need no table: the `torch.`, `torch.nn.functional.`, `F.`, `Tensor.` and
  method-receiver prefixes; aten spellings with or without overload (`aten::add.Tensor`,
  `aten.add.out`, `torch.ops.aten.add.default`); in-place names (`index_put_`); aten's flat namespace
  names (`linalg_det` -> `linalg.det`); a name looked for in OpInfo's namespaces (`relu` ->
  `nn.functional.relu`, `interpolate.area` -> `nn.functional.interpolate.area`, `F.tanh` -> `tanh`);
  an OpInfo name standing for all its variants (`softmax` -> `softmax`, `softmax.with_dtype`).
- **the alias table** OpInfo itself knows (`aliases`, `aten_name`, method variants: `clip` -> `clamp`),
  built by `alias_table` where op_db is (the case worker), recorded in the run header's catalog facts
  (`catalog.op_names`) and carried into snapshots and the lookup index.
"""

from __future__ import annotations

import difflib
import functools
import re
from typing import Any, Iterable, Mapping

from opsuite.vocabulary import split_typed_case_id

# Namespaces of OpInfo names, longest first; other names are torch's own functions.
OP_NAMESPACES = ("nn.functional", "signal.windows", "torch.ops.aten", "linalg", "special", "fft", "masked",
                 "sparse", "nn")
ATEN_PREFIXES = ("torch.ops.aten.", "aten::", "aten.")
FUNCTIONAL_PREFIXES = ("torch.nn.functional.", "nn.functional.", "functional.", "F.")
METHOD_PREFIXES = ("torch.Tensor.", "Tensor.")
# Namespaces whose functions aten spells flat: `linalg_det` is `torch.linalg.det`.
_FLAT_NAMESPACES = ("linalg", "special", "fft")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def namespace(name: str) -> str | None:
    """The OpInfo namespace of a name (`nn.functional` of `nn.functional.softmax`), or None for torch's own."""
    return next((n for n in OP_NAMESPACES if name.startswith(n + ".")), None)


def base_name(name: str) -> str:
    """An OpInfo full name without its variant: `softmax.with_dtype` -> `softmax`.

    A block's name is its family and variant the same way: `attention.sdpa_gqa` -> `attention`.
    """
    head, dot, _ = name.rpartition(".")
    if not dot or head in OP_NAMESPACES:
        return name
    return head


def aten_packet(query: str) -> tuple[str, str | None] | None:
    """(packet, overload or None) of an aten spelling (`aten::add.Tensor` -> ("add", "Tensor")); None
    when `query` is not one."""
    for prefix in ATEN_PREFIXES:
        if query.startswith(prefix):
            packet, _, overload = query[len(prefix):].partition(".")
            return (packet, overload or None) if packet else None
    return None


def spellings(query: str) -> list[str]:
    """The OpInfo-style names a query may mean, the most literal first (the query itself first)."""
    query = query.strip()
    forms = [query]
    aten = aten_packet(query)
    if aten:
        packet = aten[0]
        forms.append(packet)
        for ns in _FLAT_NAMESPACES:
            if packet.startswith(ns + "_"):
                forms.append(f"{ns}.{packet[len(ns) + 1:]}")
    elif query.startswith(FUNCTIONAL_PREFIXES):
        rest = query.split(".functional.", 1)[1] if ".functional." in query else query.partition(".")[2]
        forms += [f"nn.functional.{rest}", rest]
    elif query.startswith(METHOD_PREFIXES):
        forms.append(query.rpartition(".")[2])
    elif query.startswith("torch."):
        forms.append(query.removeprefix("torch."))
    else:
        receiver, dot, method = query.partition(".")
        # `x.softmax`: a variable's method, when the head is no namespace of OpInfo or torch.
        if dot and _IDENTIFIER.match(method) and receiver not in {n.partition(".")[0] for n in OP_NAMESPACES}:
            forms.append(method)
    # In-place variants (`index_put_`, `add_`) are the same subject, as are out variants (`add_out`).
    forms += [f[:-1] for f in forms if f.endswith("_") and not f.endswith("__")]
    forms += [f[:-4] for f in forms if f.endswith("_out")]
    return list(dict.fromkeys(f for f in forms if f))


class Resolver:
    """Resolves names against a catalog's subjects (`kind/name`) and an alias table (term -> OpInfo names)."""

    def __init__(self, subjects: Iterable[str], aliases: Mapping[str, Iterable[str]] | None = None):
        self.subjects = subjects
        self.aliases = aliases or {}

    @functools.cached_property
    def _by_name(self) -> dict[str, list[str]]:
        by_name: dict[str, list[str]] = {}
        for subject in self.subjects:
            by_name.setdefault(subject.partition("/")[2], []).append(subject)
        return by_name

    @functools.cached_property
    def _by_base(self) -> dict[str, list[str]]:
        # An OpInfo name stands for its variants; a block family does not.
        by_base: dict[str, list[str]] = {}
        for subject in self.subjects:
            if subject.startswith("ops/"):
                by_base.setdefault(base_name(subject[4:]), []).append(subject)
        return by_base

    def _named(self, name: str) -> list[str]:
        """Subjects of this exact name, else the variants of this OpInfo name."""
        return self._by_name.get(name) or self._by_base.get(name, [])

    def resolve(self, query: str) -> list[str]:
        """The subjects a name means, or [] when it means none of them.

        Tried in order, the first that names something wins: a `kind/name` subject; each spelling of
        the query as a subject name, an OpInfo base name, or a term of the alias table; then a name
        outside OpInfo's namespaces looked for in each (`relu` -> `nn.functional.relu`,
        `interpolate.area` -> `nn.functional.interpolate.area`).
        """
        if query in self._by_name.get(query.partition("/")[2], ()):
            return [query]
        forms = spellings(query)
        for form in forms:
            found = self._named(form) or [s for name in self.aliases.get(form, ()) for s in self._named(name)]
            if found:
                return list(dict.fromkeys(found))
        for form in forms:
            if namespace(form) is None:
                found = [s for ns in OP_NAMESPACES for s in self._named(f"{ns}.{form}")]
                if found:
                    return list(dict.fromkeys(found))
        return []

    def resolve_case(self, case_id: str) -> list[str]:
        """The case ids a `<kind>/<name>/<dtype>/<direction>` means, its name spelled any way `resolve`
        accepts (`ops/F.softmax/float32/forward` -> `ops/softmax/float32/forward`); [] for none."""
        typed = split_typed_case_id(case_id)
        if typed is None:
            return []
        subjects = self.resolve(typed.subject) or [s for s in self.resolve(typed.name) if s.startswith(typed.kind + "/")]
        return [f"{subject}/{typed.cell}" for subject in subjects]

    def suggest(self, query: str, n: int = 8) -> list[str]:
        """Real subjects close to an unknown name: those whose name holds the query (shortest first),
        then close spellings of names and alias terms."""
        needle = (spellings(query) or [query])[-1].lower()  # the most reduced spelling: `F.sofmax` -> `sofmax`
        containing = sorted((s for s in self.subjects if needle in s.partition("/")[2].lower()),
                            key=lambda s: (not s.partition("/")[2].lower().startswith(needle), len(s), s))
        names = {s.partition("/")[2]: s for s in self.subjects}
        terms = {term: next(iter(self._named(next(iter(targets), ""))), None) for term, targets in self.aliases.items()}
        universe = {**{k: v for k, v in terms.items() if v}, **names}
        close = [universe[name] for name in difflib.get_close_matches(needle, list(universe), n=n, cutoff=0.6)]
        return list(dict.fromkeys(containing + close))[:n]

    def terms(self, subject: str) -> list[str]:
        """Names a user may type for a subject, beyond its own: the alias table's terms for it and the
        torch spellings of an OpInfo name (`F.softmax`, `torch.softmax`)."""
        kind, _, name = subject.partition("/")
        if kind != "ops":
            return []
        base = base_name(name)
        out = [term for term, targets in self.aliases.items() if base in targets]
        if base.startswith("nn.functional."):
            short = base.removeprefix("nn.functional.")
            out += [f"F.{short}", f"torch.nn.functional.{short}"]
        elif namespace(base) is None:
            out += [f"torch.{base}", f"Tensor.{base}"]
        else:
            out.append(f"torch.{base}")
        for term in list(out):
            if term.startswith("nn.functional."):
                out.append("F." + term.removeprefix("nn.functional."))
        return list(dict.fromkeys(t for t in out if t != name))


def alias_table(entries: Iterable[Any]) -> dict[str, list[str]]:
    """term -> OpInfo names, from op_db's entries (duck-typed: `name`, `aliases`, `aten_name`,
    `method_variant`): every term other than the name itself."""
    table: dict[str, set[str]] = {}
    for op in entries:
        terms = [alias.name for alias in getattr(op, "aliases", ()) or ()]
        terms.append(getattr(op, "aten_name", None))
        method = getattr(op, "method_variant", None)
        terms.append(getattr(method, "__name__", None))
        for term in terms:
            if term and _IDENTIFIER.match(term.replace(".", "_")) and term != op.name:
                table.setdefault(term, set()).add(op.name)
    return {term: sorted(names) for term, names in sorted(table.items())}
