"""The lookup index: `matrix/index.json` and `matrix/index-cells.jsonl`, written on publish.

`opsuite lookup` and `opsuite history` read these instead of every snapshot, so they answer in a
fraction of a second with nothing but the standard library, however many snapshots there are:
`index.json` is small (snapshots, every subject with the byte range of its line in the cells file, the
names table, aten op -> subjects) and a query then reads only the lines of the subjects it shows.
It is derived data (rebuilt from the snapshots by `opsuite reindex`), so it is checked for its format,
version and the cells file's identity, not schema-validated.
"""

from __future__ import annotations

import itertools
import json
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Iterator

from opsuite import names
from opsuite.matrix import MatrixError, notes
from opsuite.matrix.snapshot import Snapshot, split_id

FILE = "index.json"
CELLS_FILE = "index-cells.jsonl"
FORMAT = "opsuite-matrix-index"
VERSION = 2


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=False)


def build(snapshots: list[Snapshot]) -> dict[str, Any]:
    """The index of snapshots (given in backend, version order), in memory: as `load` reads it, except
    that `subjects` is a plain dict and `dispatched[subject][aten op]` lists the cells that dispatched it.

    `subjects[kind/name][snapshot number][dtype/direction]` is [status, short note, file:line, run id].
    """
    cells: dict[str, dict[str, dict[str, list[str]]]] = defaultdict(lambda: defaultdict(dict))
    # Lists, not sets (a set costs four times a short list): a large matrix has a hundred thousand of them.
    dispatched: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    op_names: dict[str, set[str]] = defaultdict(set)
    keys: dict[tuple[str, str], str] = {}  # one `dtype/direction` string for all the cells that have it
    entries = []
    for number, snap in enumerate(snapshots):
        data = snap.data
        entries.append({k: data[k] for k in ("id", "backend", "key", "label", "versions", "started_at",
                                              "published_at", "summary")})
        if snap.caveats:
            entries[-1]["caveats"] = snap.caveats
        for run in data["runs"]:
            for term, targets in (run.get("catalog") or {}).get("op_names", {}).items():
                op_names[term].update(targets)
        for case_id, cell in snap.cells.items():
            kind, name, dtype, direction = split_id(case_id)
            key = keys.setdefault((dtype, direction), f"{dtype}/{direction}")
            subject = f"{kind}/{name}"
            src = cell["source"]
            cells[subject][str(number)][key] = \
                [cell["status"], notes.short(cell), f"{src['file']}:{src['line']}", src["run_id"]]
            for op in cell.get("aten_ops", ()):
                dispatched[subject][op].append(key)
    aten: dict[str, list[str]] = defaultdict(list)
    for subject in sorted(dispatched):
        for op, op_keys in dispatched[subject].items():
            aten[op].append(subject)
            dispatched[subject][op] = sorted(set(op_keys))
    return {
        "format": FORMAT,
        "schema_version": VERSION,
        "snapshots": entries,
        "subjects": {subject: dict(per_snapshot) for subject, per_snapshot in sorted(cells.items())},
        "names": {term: sorted(targets) for term, targets in sorted(op_names.items())},
        "aten": dict(sorted(aten.items())),
        "dispatched": {subject: dict(sorted(ops.items())) for subject, ops in dispatched.items()},
    }


def files(built: dict[str, Any]) -> dict[str, str | Iterator[str]]:
    """The index's two files (name -> text) of a `build` result; the cells file's text line by line.

    A line of the cells file is `[subject, {snapshot number: {dtype/direction: [status, short note,
    file:line, run id]}}, {aten op: [dtype/direction, ...]}]`; the last maps each aten op the subject's
    CPU run dispatched to the cells that dispatched it. `index.json` holds the rest, and each subject's
    byte range in the cells file.
    """
    import hashlib  # here: a reader of the index need not import it

    def lines() -> Iterator[str]:
        for subject, per_snapshot in built["subjects"].items():
            yield _compact([subject, per_snapshot, built["dispatched"].get(subject, {})]) + "\n"

    # Two passes over the lines, not a list of them: the first gives each one's place and the file's
    # build id (its header line comes first), the second writes them. A large matrix's are tens of MB.
    offsets, position, body = {}, 0, hashlib.sha256()
    for subject, line in zip(built["subjects"], lines()):
        encoded = line.encode()
        body.update(encoded)
        offsets[subject] = [position, len(encoded)]
        position += len(encoded)
    build_id = body.hexdigest()[:16]
    header = _compact({"format": FORMAT + "-cells", "build": build_id}) + "\n"
    skip = len(header.encode())
    index = {"format": FORMAT, "schema_version": VERSION, "build": build_id, "snapshots": built["snapshots"],
             "subjects": {s: [start + skip, length] for s, (start, length) in offsets.items()},
             "names": built["names"], "aten": built["aten"]}
    return {FILE: _compact(index) + "\n", CELLS_FILE: itertools.chain([header], lines())}


class Cells(Mapping):
    """subject -> {snapshot number: {dtype/direction: [status, note, source, run id]}}, each subject's
    line read from the cells file when it is first asked for (so a query parses only what it shows)."""

    def __init__(self, path: Path, offsets: dict[str, list[int]]):
        self.path = path
        self.offsets = offsets
        self._lines: dict[str, list[Any]] = {}

    def line(self, subject: str) -> list[Any]:
        """[subject, cells, aten ops] of one subject."""
        if subject not in self._lines:
            start, length = self.offsets[subject]
            with open(self.path, "rb") as f:
                f.seek(start)
                raw = f.read(length)
            try:
                line = json.loads(raw)
            except ValueError:
                line = None
            if not isinstance(line, list) or not line or line[0] != subject:
                raise MatrixError(f"{self.path}: does not match {FILE} at {subject!r}; rebuild it with `opsuite reindex`")
            self._lines[subject] = line
        return self._lines[subject]

    def __getitem__(self, subject: str) -> dict[str, dict[str, list[str]]]:
        return self.line(subject)[1]

    def __contains__(self, subject: object) -> bool:
        return subject in self.offsets

    def __iter__(self) -> Iterator[str]:
        return iter(self.offsets)

    def __len__(self) -> int:
        return len(self.offsets)


def load(matrix: Path) -> dict[str, Any]:
    """Read the lookup index; `subjects` is a Cells mapping. Raises MatrixError when there is none, it is
    of another version, or its cells file is not the one written with it."""
    file = matrix / FILE
    try:
        data = json.loads(file.read_text())
    except FileNotFoundError:
        raise MatrixError(f"no published matrix at {matrix} (no {FILE}); publish results with "
                          f"`opsuite publish RESULTS...` or point --matrix at one") from None
    except (OSError, ValueError) as exc:
        raise MatrixError(f"{file}: cannot read the lookup index ({exc}); rebuild it with `opsuite reindex`") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("schema_version") != VERSION:
        raise MatrixError(f"{file}: not a version {VERSION} lookup index; rebuild it with `opsuite reindex`")
    cells = matrix / CELLS_FILE
    try:
        with open(cells, "rb") as f:
            header = json.loads(f.readline())
    except (OSError, ValueError):
        header = None
    if not isinstance(header, dict) or header.get("build") != data.get("build"):
        raise MatrixError(f"{cells} is missing or not the one written with {file}; rebuild it with `opsuite reindex`")
    data["subjects"] = Cells(cells, data["subjects"])
    return data


def resolver(data: dict[str, Any]) -> names.Resolver:
    """A names resolver over the index's subjects and the union of its snapshots' alias tables."""
    return names.Resolver(data["subjects"], data["names"])


def search_terms(data: dict[str, Any]) -> dict[str, list[str]]:
    """Per subject of the index, the other names a user may search it by (`F.softmax` for
    `ops/softmax`): for page filters, which should find what `opsuite lookup` finds."""
    found = resolver(data)
    return {subject: found.terms(subject) for subject in data["subjects"]}
