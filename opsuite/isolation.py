"""Run cases in a worker process, so that a case that kills its process is a record, not a lost run.

The pytest process (or the CLI) imports neither torch nor a device stack. It owns an `IsolatedRunner`,
which keeps one worker process with the backend open, asks it which cases its catalog holds (so the
catalog is built once, in the worker) and sends it case ids over a pipe. A worker that dies is a
`crash` record (with the signal and the last line it wrote to stderr) and is restarted for the next
case; a case over its time budget is killed and recorded as `timeout`. After a failed case the worker
checks that the runtime is still sound (`Backend.recover`) and, if not, exits to be replaced.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import signal
import tempfile
import time
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Sequence

from opsuite.record import CaseRecord, Failure, Stage, Status
from opsuite.vocabulary import KINDS, parse_case_id

STARTUP_TIMEOUT_S = 600.0
STDERR_TAIL_LINES = 20
_STAGES = list(Stage)
_FAILED = {Status.COMPILE_ERROR, Status.RUNTIME_ERROR, Status.MISMATCH}


class WorkerStartError(Exception):
    """The worker could not open the backend (no device, a missing package): no case can run."""


@dataclass(frozen=True)
class WorkerConfig:
    """What a worker process needs to open its backend and build its catalogs."""

    backend: str
    samples: int | None      # samples per case; None for all
    kinds: tuple[str, ...] = ()  # catalogs built while the worker starts; any other kind when first needed


@dataclass(frozen=True)
class CasesRequest:
    """Ask the worker for the ids of its catalog's cases of one kind, with the given dtypes and directions."""

    kind: str
    dtypes: Sequence[str] | None = None      # None: every dtype
    directions: Sequence[str] | None = None  # None: every direction


# ---------------------------------------------------------------- the worker process

def _reply(conn: Connection, message: dict[str, Any]) -> None:
    """Send `message` to the parent as JSON text: a pickled value could hold a torch object (a version
    string is a `torch.torch_version.TorchVersion`), and unpickling it would import torch in the parent."""
    conn.send_bytes(json.dumps(message).encode())


def _receive(conn: Connection) -> dict[str, Any]:
    """A message the worker sent with `_reply`."""
    return json.loads(conn.recv_bytes())


def _worker_main(conn: Connection, config: WorkerConfig, log_path: str, stage_value: Any,
                 sample_path: str = os.devnull, budget_s: float | None = None) -> None:
    """Entry point of the worker process: open the backend, then run cases until told to stop.

    Before each sample the worker writes which sample it is about to run, and the results of those
    before it, to `sample_path` (see `_announce`): the file outlives a worker that the sample kills.
    """
    # Everything the stack prints goes to a log: on a crash its last line names the cause.
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    from opsuite import backends
    from opsuite.catalog import build_catalog
    from opsuite.execute import first_line, run_case

    try:
        backend = backends.open_backend(config.backend)
        catalogs = {kind: build_catalog([kind]) for kind in config.kinds}
        _reply(conn, {"ready": True, "stack": backend.stack(), "env": backend.env()})
    except BaseException as exc:  # report any failure to open the backend, then stop
        _reply(conn, {"ready": False, "error": "".join(traceback.format_exception_only(type(exc), exc)).strip()})
        return

    def on_stage(stage: Stage) -> None:
        stage_value.value = _STAGES.index(stage)

    def on_sample(index: int, label: str, done: list[dict[str, Any]], available: int | None) -> None:
        _announce(sample_path, {"case_id": case_id, "index": index, "label": label, "done": done,
                                "available": available})

    def catalog_of(kind: str) -> Any:
        if kind not in catalogs:
            catalogs[kind] = build_catalog([kind])
        return catalogs[kind]

    while True:
        try:
            request = conn.recv()
        except EOFError:
            return
        if request is None:
            return
        if isinstance(request, CasesRequest):
            try:
                catalog = catalog_of(request.kind)
                _reply(conn, {"cases": [c.id for c in catalog.select(request.dtypes, request.directions)],
                           "facts": catalog.facts()})
            except Exception as exc:  # an unknown kind, a catalog that cannot be built: the caller says so
                _reply(conn, {"error": "".join(traceback.format_exception_only(type(exc), exc)).strip()})
            continue
        case_id = request
        catalog = catalog_of(parse_case_id(case_id).kind)
        case = catalog.get(case_id)
        try:
            record = run_case(case, catalog.source(case), backend, config.samples, on_stage,
                              on_sample=on_sample, budget_s=budget_s)
        except Exception as exc:  # a bug of opsuite's own: say so in the record, keep the worker
            stage = _STAGES[stage_value.value]
            record = CaseRecord(case_id=case_id, status=Status.RUNTIME_ERROR, stage=stage, backend=config.backend,
                                failure=Failure(error_type=f"opsuite internal error: {type(exc).__name__}",
                                                message=first_line(exc)))
        healthy = backend.recover() if record.status in _FAILED else True
        _reply(conn, {"record": record.to_json(), "healthy": healthy})
        if not healthy:
            return


def _announce(path: str, note: dict[str, Any]) -> None:
    """Write `note` to `path` whole (a reader never sees half of it): replaced, not appended."""
    partial = f"{path}.partial"
    with open(partial, "w") as handle:
        json.dump(note, handle)
    os.replace(partial, path)


def _announced(path: Path | None, case_id: str) -> dict[str, Any] | None:
    """The sample the worker last said it was running for `case_id`, or None."""
    try:
        note = json.loads(path.read_text()) if path is not None else None
    except (OSError, ValueError):
        return None
    return note if isinstance(note, dict) and note.get("case_id") == case_id else None


# ---------------------------------------------------------------- the parent side

class IsolatedRunner:
    """Runs cases one at a time in a worker process, restarting it after a crash or a timeout."""

    def __init__(self, config: WorkerConfig, case_timeout_s: float, log_dir: Path | None = None):
        self.config = config
        self.case_timeout_s = case_timeout_s
        self.log_dir = Path(log_dir or tempfile.mkdtemp(prefix="opsuite-worker-"))
        self.handshake: dict[str, Any] | None = None  # the stack facts the first worker reported
        self.starts = 0
        self._ctx = multiprocessing.get_context("spawn")
        self._proc: Any = None
        self._conn: Connection | None = None
        self._stage: Any = None
        self._log: Path | None = None
        self._sample_file: Path | None = None  # where the worker says which sample it runs
        self._ready = False  # the running worker has reported that its backend is open
        self._kinds = dict.fromkeys(config.kinds)  # every kind asked for: a restarted worker builds them first

    def run(self, case_id: str) -> CaseRecord:
        """Run one case and return its record, whatever happens to the worker."""
        kind = parse_case_id(case_id).kind
        if kind in KINDS:
            self._kinds.setdefault(kind)
        self._ensure_worker()  # a restart and its catalogs are not part of this case's budget
        assert self._conn is not None
        started = time.perf_counter()
        self._stage.value = _STAGES.index(Stage.PREPARE)
        log_offset = self._log.stat().st_size if self._log and self._log.exists() else 0
        self._conn.send(case_id)
        if self._conn.poll(self.case_timeout_s):
            try:
                reply = _receive(self._conn)
            except (EOFError, ConnectionResetError):
                return self._crashed(case_id, started, log_offset)
            record = CaseRecord.from_json(reply["record"])
            if not reply["healthy"]:
                record.extra["runtime_restarted"] = True
                self._stop_worker()
            return record
        if not self._proc.is_alive():
            return self._crashed(case_id, started, log_offset)
        stage = _STAGES[self._stage.value]
        self._kill_worker()
        record = CaseRecord(case_id=case_id, status=Status.TIMEOUT, stage=stage, backend=self.config.backend,
                            wall_s=round(time.perf_counter() - started, 3),
                            failure=Failure(error_type="Timeout",
                                            message=f"case ran past its {self.case_timeout_s:g} s budget "
                                                    f"in stage {stage.value}; the worker was killed"))
        return self._name_sample(record)

    def cases(self, request: CasesRequest) -> tuple[list[str], dict[str, Any]]:
        """The ids of the cases the worker's catalog holds for `request`, and the catalog's facts.

        Raises WorkerStartError when the worker cannot start or cannot build that catalog.
        """
        self._ensure_worker()
        assert self._conn is not None
        self._conn.send(request)
        reply = self._await_reply(f"build the {request.kind!r} catalog", f"building the {request.kind!r} catalog")
        if "error" in reply:
            raise WorkerStartError(f"the {request.kind!r} catalog cannot be built: {reply['error']}")
        self._kinds.setdefault(request.kind)
        return reply["cases"], reply["facts"]

    def __enter__(self) -> "IsolatedRunner":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def close(self) -> None:
        """Stop the worker process."""
        if self._conn is not None:
            try:
                self._conn.send(None)
            except (BrokenPipeError, OSError):
                pass
        self._stop_worker()

    # -- worker lifecycle

    def start(self) -> None:
        """Start a worker process unless one is running; returns at once (it opens the backend meanwhile).

        Starting early lets the worker import its stack while the caller still collects cases.
        """
        if self._proc is not None and self._proc.is_alive():
            return
        self._stop_worker()
        self.starts += 1
        parent, child = self._ctx.Pipe()
        self._stage = self._ctx.Value("i", 0, lock=False)
        self._log = self.log_dir / f"worker-{os.getpid()}-{self.starts}.log"
        self._sample_file = self.log_dir / f"worker-{os.getpid()}-{self.starts}.sample.json"
        # The kinds asked for so far are built before the worker reports ready: outside any case's budget.
        config = dataclasses.replace(self.config, kinds=tuple(self._kinds))
        self._proc = self._ctx.Process(target=_worker_main,
                                       args=(child, config, str(self._log), self._stage,
                                             str(self._sample_file), self.case_timeout_s),
                                       daemon=True, name=f"opsuite-{self.config.backend}")
        self._proc.start()
        child.close()
        self._conn = parent
        self._ready = False

    def _ensure_worker(self) -> None:
        """A running worker that has opened its backend (raises WorkerStartError if it cannot)."""
        self.start()
        if self._ready:
            return
        hello = self._await_reply("start", "starting")
        if not hello["ready"]:
            self._stop_worker()
            raise WorkerStartError(f"backend {self.config.backend!r} cannot start: {hello['error']}")
        self._ready = True
        if self.handshake is None:
            self.handshake = hello

    def _await_reply(self, to_do: str, doing: str) -> dict[str, Any]:
        """The worker's reply to what it was asked to do; WorkerStartError if it dies or takes too long."""
        assert self._conn is not None
        if not self._conn.poll(STARTUP_TIMEOUT_S):
            self._kill_worker()
            raise WorkerStartError(f"backend {self.config.backend!r}: the worker did not {to_do} within "
                                   f"{STARTUP_TIMEOUT_S:g} s (log: {self._log})")
        try:
            return _receive(self._conn)
        except (EOFError, ConnectionResetError):
            tail = _tail(self._log, 0)
            self._stop_worker()
            raise WorkerStartError(f"backend {self.config.backend!r}: the worker died while {doing}"
                                   f"{': ' + tail[-1] if tail else ''} (log: {self._log})") from None

    def _crashed(self, case_id: str, started: float, log_offset: int) -> CaseRecord:
        stage = _STAGES[self._stage.value]
        self._proc.join(timeout=10)
        code = self._proc.exitcode
        tail = _tail(self._log, log_offset)
        self._stop_worker()
        if code is not None and code < 0:
            try:
                cause = f"killed by {signal.Signals(-code).name}"
            except ValueError:
                cause = f"killed by signal {-code}"
        else:
            cause = f"exited with code {code}"
        from opsuite import classify

        text = "\n".join(tail)
        category, code_found = classify.classify(text)
        message = f"worker process {cause} in stage {stage.value}"
        if tail:
            message += f"; last output: {tail[-1][:300]}"
        record = CaseRecord(case_id=case_id, status=Status.CRASH, stage=stage, backend=self.config.backend,
                            wall_s=round(time.perf_counter() - started, 3),
                            failure=Failure(error_type="Crash", message=message, category=category,
                                            code=code_found),
                            extra={"stderr_tail": tail})
        return self._name_sample(record)

    def _name_sample(self, record: CaseRecord) -> CaseRecord:
        """A crash or timeout record with the sample the worker was running and the results before it."""
        note = _announced(self._sample_file, record.case_id)
        if note is None:
            return record
        record.samples = [*note["done"], {"index": note["index"], "status": record.status.value,
                                          "stage": record.stage.value}]
        record.samples_run = sum(1 for s in record.samples if s["status"] != Status.SKIP.value)
        record.samples_available = note["available"]
        record.worst_sample = {"index": note["index"], "label": note["label"]}
        if record.failure is not None:
            record.failure.sample = note["label"]
        return record

    def _kill_worker(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            self._proc.kill()
        self._stop_worker()

    def _stop_worker(self) -> None:
        if self._proc is not None:
            self._proc.join(timeout=30)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join()
        if self._conn is not None:
            self._conn.close()
        self._proc, self._conn = None, None


def _tail(path: Path | None, offset: int) -> list[str]:
    """The last non-empty lines a worker wrote since `offset`."""
    if path is None or not path.exists():
        return []
    with open(path, "rb") as handle:
        handle.seek(offset)
        data = handle.read()[-16384:]
    lines = [line.strip() for line in data.decode(errors="replace").splitlines() if line.strip()]
    return lines[-STDERR_TAIL_LINES:]

