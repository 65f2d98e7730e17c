"""A snapshot: one stack's results as matrix cells, in a versioned, validated JSON file.

`build` makes the snapshot's JSON object from loaded results files (refusing to mix stacks or to hold
one case twice); `load` reads and validates `snapshot.json`; `resolve` turns what a user typed (a
directory, a file, or an id such as `xla/<key>`) into a snapshot directory.
"""

from __future__ import annotations

import datetime as dt
import functools
import glob
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opsuite import names, vocabulary
from opsuite.matrix import MatrixError, stack

if TYPE_CHECKING:
    from opsuite.record import CaseRecord
    from opsuite.results import Run

SCHEMA_VERSION = 1
FILE = "snapshot.json"
# Per-case facts left in the results file only: long and of no use in a table.
_BULKY_EXTRA = ("stderr_tail", "traceback")


@dataclass
class Snapshot:
    """A loaded snapshot: its directory, its validated JSON object and its maintainer's caveats
    (`caveats.py`; they go with the directory, so a re-run published in its place has none)."""

    path: Path
    data: dict[str, Any]
    caveats: list[dict[str, Any]] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.data["id"]

    @property
    def backend(self) -> str:
        return self.data["backend"]

    @property
    def cells(self) -> dict[str, dict[str, Any]]:
        return self.data["cells"]

    @property
    def samples(self) -> str:
        """Samples per case its runs were given (`--samples`): "all", a count, or each value its runs
        differ by ("2, all"), so an index row says what a pass % covers."""
        values = {str(run.get("options", {}).get("samples", "unknown")) for run in self.data["runs"]}
        return ", ".join(sorted(values, key=lambda v: (v == "all", v.zfill(8))))

    @property
    def order_key(self) -> tuple:
        """Where this snapshot sorts among its backend's (by stack version, then run start)."""
        return stack.order_key(self.backend, self.data["versions"], self.data["started_at"])


def split_id(case_id: str) -> tuple[str, str, str, str]:
    """`ops/nn.functional.softmax/float32/forward` -> (kind, name, dtype, direction)."""
    return vocabulary.parse_case_id(case_id)


def category(case_id: str) -> str:
    """The summary row of a case: its kind, and for ops the OpInfo name's namespace (`linalg`, `fft`...)."""
    kind, name, _, _ = split_id(case_id)
    if kind != "ops":
        return kind
    # Not simply the text before the last dot: OpInfo names end in a variant (`softmax.with_dtype`).
    return f"ops: {names.namespace(name) or 'torch'}"


def summarise(cells: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Case count, count per status, and pass % of the applicable (not skipped) cases."""
    counts = Counter(cell["status"] for cell in cells.values())
    applicable = len(cells) - counts.get(vocabulary.NOT_APPLICABLE, 0)
    working = sum(counts.get(s, 0) for s in vocabulary.WORKING)
    pct = round(100.0 * working / applicable, 2) if applicable else None
    return {"cases": len(cells), "counts": dict(sorted(counts.items())), "pass_pct": pct}


def stack_difference(a: "Run", b: "Run") -> tuple[str, str] | None:
    """Why two runs are not one stack, as ("backends" or "stacks", what differs); None when they are."""
    if a.backend != b.backend:
        return "backends", f"{a.path.name} is {a.backend}, {b.path.name} is {b.backend}"
    if stack.identity(a.header) != stack.identity(b.header):
        return "stacks", f"{a.path.name} and {b.path.name} differ in {_difference(a, b)}"
    return None


def _difference(a: "Run", b: "Run") -> str:
    """The identity fields where two runs differ, e.g. `stack.torch_xla '2.9.0' vs '2.10.0'`."""
    ia, ib = stack.identity(a.header), stack.identity(b.header)
    fields = [f"{part}.{name} {ia[part].get(name)!r} vs {ib[part].get(name)!r}"
              for part in ("stack", "env") for name in sorted(ia[part].keys() | ib[part].keys())
              if ia[part].get(name) != ib[part].get(name)]
    return ", ".join(fields)


def _check_same_stack(first: "Run", run: "Run") -> None:
    """Raise MatrixError unless two runs are of the same backend and stack (one snapshot holds one stack)."""
    different = stack_difference(first, run)
    if different:
        raise MatrixError(f"cannot publish results of different {different[0]} together: {different[1]}; "
                          f"publish them separately")


def read_cells(paths: list[Path], files: list[str]) -> tuple[list["Run"], dict[str, dict[str, Any]]]:
    """Load results files as matrix cells, each traced to `file` (the file's name for readers) and line;
    one per case. Each record becomes its cell as it is read, so that a large file's records are never all
    in memory at once: the runs come back with their headers, warnings and line numbers, no records.
    Raises MatrixError for a file that cannot be read, has no case, or repeats another's case."""
    from opsuite.results import ResultsError
    from opsuite.results import load as load_results

    cells: dict[str, dict[str, Any]] = {}
    runs: list["Run"] = []

    def take(run: "Run", record: "CaseRecord", line: int) -> None:
        if not runs or runs[-1] is not run:  # the first record of a file: its stack, before its cases
            if runs:
                _check_same_stack(runs[0], run)
            runs.append(run)
        if record.case_id in cells:
            other = next(r.path for r in runs if record.case_id in r.lines)
            raise MatrixError(f"case {record.case_id} is recorded twice ({other} and {run.path}); "
                              f"publish one result per case")
        record.samples = []  # each sample's result stays in the results file: too long for a table
        cell = record.to_json()
        del cell["case_id"], cell["backend"], cell["samples"]
        cell["extra"] = {k: v for k, v in cell["extra"].items() if k not in _BULKY_EXTRA}
        cell["source"] = {"file": files[len(runs) - 1], "line": line, "run_id": run.header["run_id"]}
        cells[record.case_id] = cell

    for path in paths:
        try:
            run = load_results(path, on_record=take)
        except ResultsError as exc:
            raise MatrixError(str(exc)) from None
        if not run.lines:
            raise MatrixError(f"{run.path}: no case records (only a header); nothing to publish")
    return runs, dict(sorted(cells.items()))


def run_cells(results: Path) -> dict[str, dict[str, Any]]:
    """The cells of a results file, traced to its path."""
    return read_cells([results], [str(results)])[1]


def build(runs: list["Run"], cells: dict[str, dict[str, Any]], files: list[str],
          sha256s: list[str]) -> dict[str, Any]:
    """The snapshot object of results files of one stack (`read_cells`: their runs and cells); `files`
    are their names inside the snapshot."""
    first = runs[0]
    header = first.header
    key = stack.key(header)
    return {
        "format": "opsuite-snapshot",
        "schema_version": SCHEMA_VERSION,
        "id": f"{first.backend}/{key}",
        "backend": first.backend,
        "key": key,
        "label": stack.label(header),
        "versions": stack.versions(header),
        "stack": header["stack"],
        "env": header["env"],
        "started_at": min(run.header["started_at"] for run in runs),
        "published_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "runs": [{"run_id": run.header["run_id"], "file": file, "source_name": run.path.name,
                  "started_at": run.header["started_at"], "cases": len(run.lines), "sha256": digest,
                  "opsuite": run.header["opsuite"], "options": run.header["options"],
                  "host": run.header["host"], "catalog": run.header["catalog"]}
                 for run, file, digest in zip(runs, files, sha256s)],
        "summary": summarise(cells),
        "cells": cells,
    }


@functools.cache
def _validator():
    from importlib import resources

    from opsuite.schema_check import Validator

    return Validator(json.loads(resources.files("opsuite").joinpath(f"schemas/snapshot-v{SCHEMA_VERSION}.json").read_text()))


def validate(data: Any, where: str) -> None:
    """Raise MatrixError unless `data` is a snapshot of the version this opsuite reads."""
    if not isinstance(data, dict) or data.get("format") != "opsuite-snapshot":
        raise MatrixError(f"{where}: not an opsuite snapshot")
    if data.get("schema_version") != SCHEMA_VERSION:
        raise MatrixError(f"{where}: snapshot schema version {data.get('schema_version')!r} is not supported "
                          f"(this opsuite reads version {SCHEMA_VERSION})")
    problem = _validator().problem(data)
    if problem:
        raise MatrixError(f"{where}: bad snapshot: {problem}")


def load(path: str | Path) -> Snapshot:
    """Read and validate a snapshot directory (or its snapshot.json)."""
    path = Path(path)
    directory = path.parent if path.name == FILE else path
    file = directory / FILE
    try:
        data = json.loads(file.read_text())
    except OSError as exc:
        raise MatrixError(f"{file}: cannot read snapshot: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise MatrixError(f"{file}: not valid JSON ({exc.msg} at line {exc.lineno}); the file is corrupt") from None
    validate(data, str(file))
    from opsuite.matrix import caveats

    return Snapshot(directory, data, caveats.load(directory, data["cells"]))


def resolve(ref: str, matrix: Path) -> Path:
    """The snapshot directory a user meant: a path to it or its snapshot.json, or an id (or the start
    of one, when only one snapshot's id starts so) under `matrix`."""
    for candidate in (Path(ref), matrix / ref):
        directory = candidate.parent if candidate.name == FILE else candidate
        if (directory / FILE).is_file():
            return directory
    backend, _, start = ref.partition("/")
    found = sorted(p.parent for p in (matrix / backend).glob(f"{glob.escape(start)}*/{FILE}")) \
        if backend and start and "/" not in start else []
    if len(found) == 1:
        return found[0]
    if found:
        raise MatrixError(f"{ref!r} names {len(found)} snapshots: "
                          f"{', '.join(str(p.relative_to(matrix)) for p in found)}; give more of the id")
    raise MatrixError(f"no snapshot {ref!r}: give a snapshot directory, its {FILE}, or an id such as "
                      f"xla/<key> under {matrix} ({matrix / 'README.md'} lists them)")


def load_all(matrix: Path) -> list[Snapshot]:
    """Every snapshot under a matrix directory, by backend then stack version."""
    files = [f for f in sorted(matrix.glob(f"*/*/{FILE}"))
             if not any(part.startswith(".") for part in f.relative_to(matrix).parts)]  # staging dirs
    snapshots = [load(file.parent) for file in files]
    return sorted(snapshots, key=lambda s: (s.backend, s.order_key))

