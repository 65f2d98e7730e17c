"""The results store: one JSON Lines file per run, a header line then one line per finished case.

Lines are appended whole, each with one `write` on an O_APPEND descriptor under an exclusive lock, so
parallel pytest-xdist workers can share one file and a killed run loses nothing it had finished; a write
that fails part-way (a full disk) is cut back off, so the file never holds a torn line of ours. A file
belongs to one run: a second run never appends to it (`opsuite run --resume` continues the same run).

The format is versioned (`SCHEMA_VERSION` is the major version, `SCHEMA_MINOR` the minor one; see
docs/results-schema.md) and validated on load against `schemas/results-v<N>.json`. The reader forgives
what can be forgiven and says so in `Run.warnings`: a torn last line (a killed writer) is dropped, a newer
minor version's extra fields are ignored. Everything else is refused with the file, the line and why.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import gc
import gzip
import json
import os
import sys
import zlib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

from opsuite.record import CaseRecord
from opsuite.schema_check import Validator

SCHEMA_VERSION = 1  # major: a reader refuses a file of a newer major version
SCHEMA_MINOR = 2    # minor: only adds optional fields, which older readers of the same major version ignore
GZIP_MAGIC = b"\x1f\x8b"
_OP_LISTS = ("fallback_ops", "host_syncs", "aten_ops")
_NUMERICS_WORDS = ("reference_dtype", "worst_output")  # a handful of values, in every case's line


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector paused (and resumed after, if it ran before).

    Records, cells and pages are acyclic: reference counting frees them all. But the collector walks
    every live container again and again while a large file's hundreds of thousands are made, which costs
    a quarter to a third of reading or publishing one.
    """
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


class ResultsError(Exception):
    """A results file that cannot be read or written: the message says which file, which line and why."""


@functools.cache
def _validators() -> tuple[Validator, Validator]:
    text = resources.files("opsuite").joinpath(f"schemas/results-v{SCHEMA_VERSION}.json").read_text()
    schema = json.loads(text)
    header, case = ({**schema["$defs"][part], "$defs": schema["$defs"]} for part in ("header", "case"))
    return Validator(header), Validator(case)


@dataclass
class Run:
    """A loaded results file: its header and its case records, in the order they finished."""

    path: Path
    header: dict[str, Any]
    records: list[CaseRecord] = field(default_factory=list)
    lines: dict[str, int] = field(default_factory=dict)  # case id -> line number of every case read
    warnings: list[str] = field(default_factory=list)    # what the reader forgave, one line each
    torn_at: int | None = None  # byte offset of a dropped torn last line

    @property
    def backend(self) -> str:
        return self.header["backend"]


class ResultsWriter:
    """Appends case records to one run's results file; the first writer to append also writes the header.

    Every pytest process of a run has its own writer on the same file. A writer refuses a file that holds
    another run (`run_id`), so a second run never appends under the first one's header.
    """

    def __init__(self, path: Path, header_factory: Callable[[], dict[str, Any]]):
        self.path = Path(path)
        self._header_factory = header_factory
        self._checked = False  # whether this writer has seen that the file is its run's

    def append(self, record: CaseRecord, run_id: str) -> None:
        """Write one case line whole (and the run header first, if the file is still empty).

        Raises ResultsError (one line) when the file holds another run or cannot be written (a full disk);
        the file then holds exactly the lines written before.
        """
        line = json.dumps({"kind": "case", "run_id": run_id, **record.to_json()}, allow_nan=False,
                          default=str) + "\n"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ResultsError(f"{self.path}: cannot write results: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            data = line.encode()
            size = os.fstat(fd).st_size
            if size == 0:
                header = {"kind": "header", "schema_version": SCHEMA_VERSION, "schema_minor": SCHEMA_MINOR,
                          **self._header_factory()}
                data = (json.dumps(header, allow_nan=False, default=str) + "\n").encode() + data
            elif not self._checked:
                self._check_run(fd, run_id)
            self._checked = True
            _write_whole(fd, data, size, self.path)
        finally:
            os.close(fd)  # closing releases the lock

    def _check_run(self, fd: int, run_id: str) -> None:
        first = os.pread(fd, 65536, 0).split(b"\n", 1)[0]
        try:
            found = json.loads(first).get("run_id")
        except (ValueError, AttributeError):
            found = None
        if found != run_id:
            raise ResultsError(f"{self.path}: holds run {found!r}, not this run {run_id!r}; a results file is "
                               f"never appended to by a second run (give a new file, or --resume it)")


def _write_whole(fd: int, data: bytes, size: int, path: Path) -> None:
    """Write `data` at the end of a file of `size` bytes, all or nothing (a partial write is cut off)."""
    done = 0
    try:
        while done < len(data):
            done += os.write(fd, data[done:])
    except OSError as exc:
        try:
            os.ftruncate(fd, size)
        except OSError:
            pass
        raise ResultsError(f"{path}: cannot write results: {exc.strerror}; the cases recorded before "
                           f"are kept") from None


class _NonFinite(ValueError):
    """NaN or an infinity in a line (Python's json reads them; JSON has no such numbers)."""


class _Torn(Exception):
    """The last line of a file, without its newline and not parseable: a write that was cut short."""


def _refuse_constant(name: str) -> Any:
    raise _NonFinite(name)


_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)  # one for every line: making one costs


def _open(path: Path) -> BinaryIO:
    """The file's bytes, read as they are or through gzip (told by its first two bytes)."""
    try:
        handle = open(path, "rb")
        if handle.read(2) == GZIP_MAGIC:
            handle.seek(0)
            return gzip.GzipFile(fileobj=handle, mode="rb")  # type: ignore[return-value]
        handle.seek(0)
        return handle
    except OSError as exc:
        raise ResultsError(f"{path}: cannot read results file: {exc.strerror}") from None


def _check_header(path: Path, number: int, obj: dict[str, Any], warnings: list[str]) -> None:
    if obj.get("kind") != "header":
        raise ResultsError(f"{path}:{number}: the first line must be the run header (kind=header)")
    version, minor = obj.get("schema_version"), obj.get("schema_minor", 0)
    if isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION:
        raise ResultsError(f"{path}: written with results schema version {version} by a newer opsuite; this "
                           f"opsuite reads version {SCHEMA_VERSION} (upgrade opsuite to read it)")
    if version != SCHEMA_VERSION:
        raise ResultsError(f"{path}: schema version {version!r} is not supported "
                           f"(this opsuite reads version {SCHEMA_VERSION})")
    problem = _validators()[0].problem(obj)
    if problem:
        raise ResultsError(f"{path}:{number}: bad header: {problem}")
    if minor > SCHEMA_MINOR:
        warnings.append(f"{path}: written with results schema {version}.{minor}, newer than the "
                        f"{SCHEMA_VERSION}.{SCHEMA_MINOR} this opsuite knows: fields it does not know are ignored")


def _read_line(path: Path, number: int, chunk: bytes, run: Run | None, warnings: list[str],
               case_validator: Validator, on_record: Callable[[Run, CaseRecord, int], None] | None) -> Run | None:
    """Take line `number` into the run (made from the header line); returns the run.

    Raises _Torn for a last line without its newline (a writer killed mid-line) that does not parse.
    """
    if not chunk.strip():
        return run
    try:
        obj = _DECODER.decode(chunk.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        if not chunk.endswith(b"\n"):  # the last line, cut short
            raise _Torn from None
        if isinstance(exc, UnicodeDecodeError):
            raise ResultsError(f"{path}:{number}: not UTF-8 text (byte 0x{chunk[exc.start]:02x} at column "
                               f"{exc.start + 1}); the file is corrupt") from None
        raise ResultsError(f"{path}:{number}: not valid JSON ({exc.msg}); the file is corrupt") from None
    except _NonFinite as exc:
        raise ResultsError(f"{path}:{number}: {exc} is not a number a results file may hold "
                           f"(finite numbers or null)") from None
    if not isinstance(obj, dict):
        raise ResultsError(f"{path}:{number}: expected a JSON object")
    if run is None:
        _check_header(path, number, obj, warnings)
        return Run(path=path, header=obj, warnings=warnings)
    problem = case_validator.problem(obj)
    if problem:
        raise ResultsError(f"{path}:{number}: bad case record: {problem}")
    if obj["run_id"] != run.header["run_id"]:
        raise ResultsError(f"{path}:{number}: case belongs to run {obj['run_id']!r}, "
                           f"not to this file's run {run.header['run_id']!r}")
    if obj["backend"] != run.backend:
        raise ResultsError(f"{path}:{number}: a case of backend {obj['backend']!r} under a header of "
                           f"backend {run.backend!r}")
    case_id = obj["case_id"]
    if case_id in run.lines:
        raise ResultsError(f"{path}:{number}: case {case_id} is recorded twice (first at line "
                           f"{run.lines[case_id]})")
    for name in _OP_LISTS:  # the same few thousand op names recur in every line: keep one copy of each
        obj[name] = [sys.intern(op) for op in obj.get(name, ())]
    if obj.get("worst_sample"):  # so do its keys, and a few words of the numerics
        obj["worst_sample"] = {sys.intern(key): value for key, value in obj["worst_sample"].items()}
    numerics = obj.get("numerics") or {}
    for name in _NUMERICS_WORDS:
        if type(numerics.get(name)) is str:
            numerics[name] = sys.intern(numerics[name])
    record = CaseRecord.from_json(obj)
    if on_record is None:
        run.records.append(record)
    else:
        on_record(run, record, number)
    run.lines[case_id] = number
    return run


def load(path: str | Path, on_record: Callable[[Run, CaseRecord, int], None] | None = None) -> Run:
    """Read and validate a results file, plain or gzip; raises ResultsError with the file, line and reason.

    A torn last line is dropped with a warning in `Run.warnings` (the cases before it load). With
    `on_record`, each record is handed to it (with its run and line number) as it is read instead of being
    kept in `Run.records`, so that a large file's records need not all be in memory at once.
    """
    path = Path(path)
    case_validator = _validators()[1]
    warnings: list[str] = []
    run: Run | None = None
    offset = 0  # of the line being read
    with _open(path) as handle, collector_paused():
        try:
            for number, chunk in enumerate(handle, start=1):
                try:
                    run = _read_line(path, number, chunk, run, warnings, case_validator, on_record)
                except _Torn:
                    warnings.append(f"{path}:{number}: torn last line dropped (an interrupted write); "
                                    f"{len(run.lines) if run else 0} finished cases before it are loaded")
                    if run is not None:
                        run.torn_at = offset
                offset += len(chunk)
        except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
            raise ResultsError(f"{path}: a damaged gzip file ({exc})") from None
        except OSError as exc:
            raise ResultsError(f"{path}: cannot read results file: {exc.strerror}") from None
    if run is None:
        raise ResultsError(f"{path}: empty results file (no complete header)")
    return run


def load_for_resume(path: str | Path) -> Run:
    """The run of a results file to continue: loaded, with a torn last line cut off the file so that new
    lines follow whole ones. Raises ResultsError for a compressed (published) file."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            if handle.read(2) == GZIP_MAGIC:
                raise ResultsError(f"{path}: a compressed results file cannot be resumed; resume the .jsonl "
                                   f"file the run wrote")
    except OSError as exc:
        raise ResultsError(f"{path}: cannot read results file: {exc.strerror}") from None
    run = load(path)
    if run.torn_at is not None:
        os.truncate(path, run.torn_at)
    return run
