"""The results store: one JSON Lines file per run, a header line then one line per finished case.

Lines are appended with a single `write` on an O_APPEND descriptor under an exclusive lock, so parallel
pytest-xdist workers can share one file and a killed run loses nothing it had finished. The format is
versioned (`SCHEMA_VERSION`) and validated on load against `schemas/results-v<N>.json`.
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import jsonschema

from opsuite.record import CaseRecord

SCHEMA_VERSION = 1


class ResultsError(Exception):
    """A results file that cannot be read: the message says which file, which line and why."""


@functools.cache
def _validators() -> tuple[jsonschema.protocols.Validator, jsonschema.protocols.Validator]:
    text = resources.files("opsuite").joinpath(f"schemas/results-v{SCHEMA_VERSION}.json").read_text()
    schema = json.loads(text)
    header = {**schema["$defs"]["header"], "$defs": schema["$defs"]}
    case = {**schema["$defs"]["case"], "$defs": schema["$defs"]}
    cls = jsonschema.validators.validator_for(schema)
    return cls(header), cls(case)


def _error_text(validator: jsonschema.protocols.Validator, obj: Any) -> str | None:
    error = jsonschema.exceptions.best_match(validator.iter_errors(obj))
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
    return f"{where}: {error.message}"


@dataclass
class Run:
    """A loaded results file: its header and its case records, in the order they finished."""

    path: Path
    header: dict[str, Any]
    records: list[CaseRecord] = field(default_factory=list)
    lines: dict[str, int] = field(default_factory=dict)  # case id -> line number, for tracing cells

    @property
    def backend(self) -> str:
        return self.header["backend"]


class ResultsWriter:
    """Appends case records to one results file; the first writer to append also writes the header."""

    def __init__(self, path: Path, header_factory: Callable[[], dict[str, Any]]):
        self.path = Path(path)
        self._header_factory = header_factory

    def append(self, record: CaseRecord, run_id: str) -> None:
        """Write one case line at once (and the run header first, if the file is still empty)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"kind": "case", "run_id": run_id, **record.to_json()}, allow_nan=False,
                          default=str) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.fstat(fd).st_size == 0:
                header = {"kind": "header", "schema_version": SCHEMA_VERSION, **self._header_factory()}
                os.write(fd, (json.dumps(header, default=str) + "\n").encode())
            os.write(fd, line.encode())
        finally:
            os.close(fd)  # closing releases the lock


def load(path: str | Path) -> Run:
    """Read and validate a results file; raises ResultsError with the file, line and reason."""
    path = Path(path)
    header_validator, case_validator = _validators()
    try:
        text = path.read_text()
    except OSError as exc:
        raise ResultsError(f"{path}: cannot read results file: {exc.strerror}") from None
    run: Run | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ResultsError(f"{path}:{number}: not valid JSON ({exc.msg}); the file is corrupt") from None
        if not isinstance(obj, dict):
            raise ResultsError(f"{path}:{number}: expected a JSON object")
        if run is None:
            if obj.get("kind") != "header":
                raise ResultsError(f"{path}:{number}: the first line must be the run header (kind=header)")
            version = obj.get("schema_version")
            if version != SCHEMA_VERSION:
                raise ResultsError(f"{path}: schema version {version!r} is not supported "
                                   f"(this opsuite reads version {SCHEMA_VERSION})")
            problem = _error_text(header_validator, obj)
            if problem:
                raise ResultsError(f"{path}:{number}: bad header: {problem}")
            run = Run(path=path, header=obj)
            continue
        problem = _error_text(case_validator, obj)
        if problem:
            raise ResultsError(f"{path}:{number}: bad case record: {problem}")
        if obj["run_id"] != run.header["run_id"]:
            raise ResultsError(f"{path}:{number}: case belongs to run {obj['run_id']!r}, "
                               f"not to this file's run {run.header['run_id']!r}")
        record = CaseRecord.from_json(obj)
        run.records.append(record)
        run.lines[record.case_id] = number
    if run is None:
        raise ResultsError(f"{path}: empty results file (no header)")
    return run
