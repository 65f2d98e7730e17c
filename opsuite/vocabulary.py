"""The project's words: case ids and their parts, statuses, and the names of backends and snapshots.

Torch-free and dependency-free, so that the pytest process, the case worker and `opsuite.matrix` all
spell these the same way. The JSON schemas repeat the enums and patterns (a schema cannot import
Python); tests/test_vocabulary.py checks that they agree. A new status is one line in STATUSES plus its
place in SEVERITY and its colour in STATUS_COLORS.
"""

from __future__ import annotations

import re
from typing import NamedTuple

KINDS = ("ops", "blocks", "models")
# The dtypes of case ids, in display order; catalog/__init__.py maps them to torch dtypes.
DTYPES = ("float32", "bfloat16", "float16", "int32", "int64", "bool")
DIRECTIONS = ("forward", "backward", "train")

# How a case ended, in reading order: best first, `skip` (not applicable) last.
STATUSES = ("pass", "fallback", "mismatch", "compile_error", "runtime_error", "crash", "timeout", "skip")
# Worst first: when several things went wrong in one case, the record keeps the worst.
SEVERITY = ("crash", "timeout", "compile_error", "runtime_error", "mismatch", "fallback", "pass", "skip")
# The statuses in which the device produced a result that can be trusted as a port target.
WORKING = frozenset({"pass"})
NOT_APPLICABLE = "skip"
# Ran and matched, with named aten ops on the host: it works, but not all on the device.
HOST_FALLBACK = "fallback"


def working_rank(status: str) -> int:
    """How well a cell works: 2 it passes, 1 with a host fallback, 0 not at all. A cell that moves down a
    rank between two runs stopped working as it had (diff's `regressed`, history's "stopped working in")."""
    return 2 if status in WORKING else 1 if status == HOST_FALLBACK else 0
STATUS_COLORS = {
    "pass": "#2e7d32", "fallback": "#c0a000", "mismatch": "#ef6c00", "compile_error": "#c62828",
    "runtime_error": "#8e0000", "crash": "#6a1b9a", "timeout": "#546e7a", "skip": "#bdbdbd",
}

# A backend name, a snapshot key, a run id: a letter or digit first (no `.`, `..`, `.hidden`), then letters,
# digits and `._+-` only (no `/`, `:` or spaces), so that it is safe as a path component and inside a link.
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._+-]{0,199}"
# The name part of a case id (an OpInfo name with its variant, a block or model name).
SUBJECT_PATTERN = r"[A-Za-z0-9_][A-Za-z0-9_.+-]*"
CASE_ID_PATTERN = rf"[a-z]+/{SUBJECT_PATTERN}/[a-z0-9]+/({'|'.join(DIRECTIONS)})"
_NAME = re.compile(NAME_PATTERN)
_CASE_ID = re.compile(CASE_ID_PATTERN)


class CaseId(NamedTuple):
    """The four parts of a case id `<kind>/<name>/<dtype>/<direction>`."""

    kind: str
    name: str
    dtype: str
    direction: str

    def __str__(self) -> str:
        return "/".join(self)

    @property
    def subject(self) -> str:
        """`kind/name`: the row of a matrix table."""
        return f"{self.kind}/{self.name}"

    @property
    def cell(self) -> str:
        """`dtype/direction`: the column of a matrix table (the key of a subject's cells in the index)."""
        return f"{self.dtype}/{self.direction}"


def is_case_id(text: str) -> bool:
    """Whether `text` is a well-formed case id."""
    return isinstance(text, str) and _CASE_ID.fullmatch(text) is not None


def parse_case_id(text: str) -> CaseId:
    """`ops/nn.functional.softmax/float32/forward` -> CaseId(...); ValueError for anything else."""
    if not is_case_id(text):
        raise ValueError(f"not a case id: {text!r} (expected <kind>/<name>/<dtype>/<direction>)")
    return CaseId(*text.split("/"))


def split_typed_case_id(text: str) -> CaseId | None:
    """A case id as a user types it, its name part spelled any way (`ops/F.softmax/float32/forward`;
    `opsuite.names` resolves the name), cut into its four parts unchecked; None unless it has four."""
    parts = text.split("/")
    return CaseId._make(parts) if len(parts) == 4 else None


def parse_cell_key(key: str) -> tuple[str, str]:
    """`float32/forward` (a `CaseId.cell`) -> (dtype, direction); ValueError unless it has two parts."""
    dtype, direction = key.split("/")
    return dtype, direction


def format_case_id(kind: str, name: str, dtype: str, direction: str) -> str:
    """The case id of its four parts; ValueError unless the result is a well-formed id."""
    return str(parse_case_id(f"{kind}/{name}/{dtype}/{direction}"))


def is_name(text: object) -> bool:
    """Whether `text` is a valid backend name, snapshot key or run id (see NAME_PATTERN)."""
    return isinstance(text, str) and _NAME.fullmatch(text) is not None


def check_name(text: object, what: str) -> str:
    """`text` when it is a valid name; otherwise ValueError naming `what` it was meant to be."""
    if not is_name(text):
        raise ValueError(f"{what} {text!r} is not a valid name (letters, digits and ._+- only, "
                         f"not starting with . or -)")
    return text  # type: ignore[return-value]


def check_choices(values: list[str], known: tuple[str, ...], what: str) -> list[str]:
    """`values` when each is one of `known`; otherwise ValueError naming the bad ones and the good ones."""
    bad = [v for v in values if v not in known]
    if bad:
        raise ValueError(f"unknown {what} {', '.join(map(repr, bad))}; known: {', '.join(known)}")
    return values
