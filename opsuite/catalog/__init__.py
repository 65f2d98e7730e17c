"""The catalog of cases: what can be run, named by stable ids.

A case is one subject (an OpInfo entry, a transformer block, a tiny model) x one dtype x one direction.
Its id is `<kind>/<name>/<dtype>/<direction>`, e.g. `ops/nn.functional.softmax/bfloat16/backward`.
Each kind of subject has a source module in this package; `Catalog` gathers them and refuses duplicates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Protocol

import torch

from opsuite import vocabulary

# The dtypes opsuite knows, by the name used in case ids.
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "int32": torch.int32,
    "int64": torch.int64,
    "bool": torch.bool,
}
DIRECTIONS = vocabulary.DIRECTIONS
assert tuple(DTYPES) == vocabulary.DTYPES


def dtype_name(dtype: torch.dtype) -> str:
    """`torch.bfloat16` -> `bfloat16`."""
    return str(dtype).removeprefix("torch.")


@dataclass(frozen=True)
class Case:
    """One runnable case: a subject of some kind, in one dtype and one direction."""

    kind: str        # "ops", "blocks", "models"
    name: str        # e.g. an OpInfo full name, "nn.functional.softmax"
    dtype: str       # a key of DTYPES
    direction: str   # "forward", "backward" (gradients of inputs) or "train" (one optimizer step)

    @property
    def id(self) -> str:
        return f"{self.kind}/{self.name}/{self.dtype}/{self.direction}"

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def __str__(self) -> str:
        return self.id

    @classmethod
    def parse(cls, case_id: str) -> "Case":
        """Inverse of `id`; raises ValueError for a malformed id."""
        parts = vocabulary.parse_case_id(case_id)
        if parts.dtype not in DTYPES:
            raise ValueError(f"not a case id: {case_id!r}: unknown dtype {parts.dtype!r}")
        return cls(*parts)


@dataclass
class Sample:
    """One call of a subject: `fn(*args, **kwargs)`.

    Tensors anywhere in args and kwargs are the inputs; in a backward case the floating ones that
    require grad are the leaves whose gradients are compared. A `device` keyword is pointed at the
    device under test when the sample is moved there (factory ops).
    """

    fn: Callable[..., Any]
    args: tuple
    kwargs: dict[str, Any] = field(default_factory=dict)
    label: str = ""
    # Post-processing applied to outputs before comparison (OpInfo's output_process_fn_grad), e.g. to
    # remove the sign ambiguity of singular vectors.
    output_process: Callable[[Any], Any] = lambda out: out
    # How its outputs are compared, when the case's default is not right for this sample:
    # outputs defined by value although the case's are in general not (a random op called with
    # dropout_p=0, a conversion whose every value is in range);
    values_defined: bool = False
    # index outputs that select along this dim of the first argument (sort, topk, max with dim...):
    # judged by the values they select, so that tied values may come in any order;
    index_dim: int | None = None
    # positions (in `pytree.tree_leaves((args, kwargs))`) of tensors that stay on the CPU when the
    # sample is moved to a device (tensor_split's index tensor): OpInfo makes them there for every device.
    host_inputs: frozenset[int] = frozenset()


class CaseSource(Protocol):
    """What a kind of subject provides to the catalog and to the executor."""

    kind: str

    def cases(self) -> Iterable[Case]:
        """Every case of this kind."""

    def samples(self, case: Case, limit: int | None) -> list[Sample]:
        """The first `limit` samples (all when None) on CPU, requiring grad for backward cases."""

    def shape_only_reason(self, case: Case) -> str | None:
        """Why outputs can only be compared by shape and dtype (random or undefined values), or None."""

    def facts(self) -> dict[str, Any]:
        """Facts about where the cases come from, for the run header (e.g. the size of OpInfo's op_db)."""


class DuplicateCaseError(ValueError):
    """Two cases with one id: ids must be unique so that results can be joined across runs."""


class Catalog:
    """All cases of the registered sources, by id, in registration order."""

    def __init__(self) -> None:
        self._cases: dict[str, Case] = {}
        self._sources: dict[str, CaseSource] = {}

    def add_source(self, source: CaseSource) -> None:
        """Register every case of `source`; refuses a kind or a case id seen before."""
        if source.kind in self._sources:
            raise DuplicateCaseError(f"case source {source.kind!r} registered twice")
        self._sources[source.kind] = source
        for case in source.cases():
            if case.id in self._cases:
                raise DuplicateCaseError(f"duplicate case id {case.id!r}")
            self._cases[case.id] = case

    def __iter__(self):
        return iter(self._cases.values())

    def __len__(self) -> int:
        return len(self._cases)

    def __contains__(self, case_id: str) -> bool:
        return case_id in self._cases

    def get(self, case_id: str) -> Case:
        """The case with this id; KeyError with close matches if there is none."""
        try:
            return self._cases[case_id]
        except KeyError:
            import difflib

            close = difflib.get_close_matches(case_id, self._cases, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise KeyError(f"unknown case {case_id!r}{hint}") from None

    def source(self, case: Case) -> CaseSource:
        return self._sources[case.kind]

    def facts(self) -> dict[str, Any]:
        """The facts of every source, merged."""
        merged: dict[str, Any] = {}
        for source in self._sources.values():
            merged.update(source.facts())
        return merged

    def select(self, dtypes: Iterable[str] | None = None, directions: Iterable[str] | None = None,
               kinds: Iterable[str] | None = None) -> list[Case]:
        """The cases whose dtype, direction and kind are among those given (None: any)."""
        dtypes, directions, kinds = (set(x) if x else None for x in (dtypes, directions, kinds))
        return [c for c in self if (dtypes is None or c.dtype in dtypes)
                and (directions is None or c.direction in directions)
                and (kinds is None or c.kind in kinds)]


def build_catalog(kinds: Iterable[str] = ("ops",)) -> Catalog:
    """The catalog of the named kinds of subject."""
    catalog = Catalog()
    for kind in kinds:
        catalog.add_source(_SOURCE_FACTORIES[kind]())
    return catalog


def _opinfo_source() -> CaseSource:
    from opsuite.catalog.opinfo import OpInfoSource

    return OpInfoSource()


def _block_source() -> CaseSource:
    from opsuite.catalog.blocks import BlockSource

    return BlockSource()


def _model_source() -> CaseSource:
    from opsuite.catalog.models import ModelSource

    return ModelSource()


_SOURCE_FACTORIES: dict[str, Callable[[], CaseSource]] = {
    "ops": _opinfo_source, "blocks": _block_source, "models": _model_source,
}
