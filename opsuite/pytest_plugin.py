"""The pytest wiring: options, one pytest item per case, one results line per item.

`cases/test_*.py` declare `CASE_KIND` and a test taking `case_id`; this plugin parametrises it over
the catalog, runs each case through an `IsolatedRunner` (a worker process per pytest process, so
pytest-xdist's `-n N` gives N workers), appends the record to the run's results file at once, and turns
the record into a pytest outcome with a copy-paste repro command. The controlling process (the only
one under plain pytest, the xdist master otherwise) names the run and prints the summary table.

The worker starts as soon as the first file of `cases/` is collected and builds the catalog itself: it
answers which case ids there are, so a pytest process that runs cases never imports torch (that would
cost seconds of start-up and a core that the worker needs).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import getpass
import math
import os
import platform
import secrets
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

import opsuite
from opsuite import backends, names, profiles, ray_executor, schedule, summary
from opsuite.backends import neuron_tools
from opsuite.isolation import CasesRequest, IsolatedRunner, WorkerConfig, WorkerStartError
from opsuite.matrix import MatrixError, check_writable, find_matrix, notes, publish, snapshot
from opsuite.matrix import baseline as regression
from opsuite.record import CaseRecord, Status
from opsuite.results import ResultsError, ResultsWriter, load, load_for_resume
from opsuite.vocabulary import DIRECTIONS, DTYPES, KINDS, check_choices, parse_case_id

RUN_KEY = pytest.StashKey[dict]()
BASELINE_KEY = pytest.StashKey[Any]()  # the baseline Snapshot of regression mode
_SESSION_KEY = pytest.StashKey["CaseSession"]()  # the case session of this pytest process, once it has one
_CATALOG_KEY = pytest.StashKey[dict]()  # what this process collected, for the run header
_FACTS_KEY = pytest.StashKey[dict]()  # the catalog facts the worker reported while collecting
_FINISHED_KEY = pytest.StashKey[set]()  # under --resume: the case ids the run had finished
_STARTED_KEY = pytest.StashKey[float]()  # xdist: when the controlling process started its workers
_SELECTION_KEY = pytest.StashKey[list]()  # under --shard: every case id of the whole run, before the split
_REFUSED_KEY = pytest.StashKey[str]()  # --executor ray: why the cluster cannot run the cases (said after collection)
DEFAULT_SAMPLES = 2
DEFAULT_CASE_TIMEOUT_S = 300.0
WORKER_FAILED_EXIT = 3  # the exit code when the backend's worker cannot start: no case can run
RESULTS_FAILED_EXIT = 6  # the exit code when the results file cannot be written (a full disk)
# A case that ran and did not pass is a failed test (so `--lf` reruns it) shown under its own status;
# a host fallback ran and matched, so it gets its own letter in the progress line.
PROGRESS_LETTER = {Status.FALLBACK: "h"}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("opsuite", "opsuite: operator coverage")
    group.addoption("--backend", default=None,
                    help=f"backend under test ({', '.join(backends.known())}); default: a Neuron device "
                         "if present, else xla")
    group.addoption("--profile", default=None,
                    help=f"named options ({', '.join(profiles.PROFILES)}; opsuite/profiles.py) for the samples, "
                         "dtypes and directions not given; the kinds are the files collected")
    group.addoption("--samples", default=None,
                    help=f"samples per case: a number, or 'all' (default {DEFAULT_SAMPLES})")
    group.addoption("--dtypes", default=None, help="comma-separated dtypes to run (default: all)")
    group.addoption("--directions", default=None, help="comma-separated directions (default: all)")
    group.addoption("--op", action="append", default=None, metavar="NAME",
                    help="only these subjects, named as `opsuite lookup` accepts them (F.softmax, "
                         "aten::index_put_, an OpInfo alias); repeatable or comma-separated")
    group.addoption("--results", default=None,
                    help="results file to write (default: results/<backend>/<run id>.jsonl)")
    group.addoption("--case-timeout", type=float, default=DEFAULT_CASE_TIMEOUT_S,
                    help="seconds a case may run before it is killed and recorded as timeout")
    group.addoption("--baseline", default=None, metavar="SNAPSHOT",
                    help="regression mode: a published snapshot (directory or id such as xla/<key>); a case "
                         "that passed there and fails now fails the run, one that failed there is xfail")
    group.addoption("--allow-missing", action="store_true", default=False,
                    help="with --baseline: baseline cases this run leaves out were deselected on purpose; "
                         "report them, do not fail")
    group.addoption("--update-baseline", action="store_true", default=False,
                    help="with --baseline: publish this run as a snapshot into the baseline's matrix")
    group.addoption("--resume", default=None, metavar="RESULTS",
                    help="continue the killed run of this results file: its finished cases are skipped, the "
                         "others appended under its header (give the run's own selection options)")
    group.addoption("--shard", default=None, metavar="K/N",
                    help="run only part K of N (1 <= K <= N), split by the case times of the backend's latest "
                         "snapshot so that every part takes about as long; `opsuite merge` joins the parts")
    group.addoption("--executor", default="local", choices=ray_executor.EXECUTORS,
                    help="where cases run: local (this process's case worker, or xdist's under -n) or ray (one "
                         "case worker per NeuronCore or CPU of a Ray cluster; pip install 'opsuite[ray]')")
    group.addoption("--address", default=None,
                    help="with --executor ray: the Ray cluster to join (host:port, or 'auto' on a node of a "
                         "cluster started with `ray start`); default: a local Ray instance on 127.0.0.1")


def _csv(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def parse_samples(value: str) -> int | None:
    """'all' -> None (every sample); otherwise a positive count."""
    if value == "all":
        return None
    if not str(value).isdigit() or int(value) < 1:
        raise ValueError(f"--samples must be a positive number or 'all', not {value!r}")
    return int(value)


def check_options(samples: str | None, dtypes: str | None, directions: str | None, case_timeout: float | None,
                  workers: Any) -> None:
    """Raise ValueError naming the first bad option value (and the good ones), before anything runs."""
    if samples is not None:
        parse_samples(samples)
    check_choices(_csv(dtypes) or [], DTYPES, "dtype")
    check_choices(_csv(directions) or [], DIRECTIONS, "direction")
    if case_timeout is not None and not (math.isfinite(case_timeout) and case_timeout > 0):
        raise ValueError(f"--case-timeout must be a positive number of seconds, not {case_timeout:g}")
    if workers is not None and str(workers) not in ("auto", "logical") and not str(workers).isdigit():
        raise ValueError(f"-n must be a number of workers or 'auto', not {workers!r}")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    # Every case carries its kind, dtype and direction as markers: `-m "ops and backward"`.
    for kind in KINDS:
        config.addinivalue_line("markers", f"{kind}: a case of kind {kind}")
    for dtype in DTYPES:
        config.addinivalue_line("markers", f"{dtype}: a case in dtype {dtype}")
    for direction in DIRECTIONS:
        config.addinivalue_line("markers", f"{direction}: a case of direction {direction}")
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:
        config.stash[RUN_KEY] = workerinput["opsuite_run"]
        config.stash[_FINISHED_KEY] = set(workerinput["opsuite_finished"])
        if config.stash[RUN_KEY]["backend"] in backends.NEURON_BACKENDS:
            _pin_neuron_core(workerinput["workerid"])
        _configure_baseline(config, workerinput["opsuite_run"]["backend"])
        return
    backend = config.getoption("backend") or backends.default()
    try:
        if config.getoption("backend"):  # the default is checked only once cases actually run
            backends.check_available(backend)
        chosen = _profile(config)
        if config.getoption("shard"):
            schedule.Shard.parse(config.getoption("shard"))
        check_options(chosen.samples, config.getoption("dtypes"), config.getoption("directions"),
                      config.getoption("case_timeout"), config.getoption("numprocesses", None))
        ray_executor.check_executor(config.getoption("executor"), config.getoption("address"),
                                    config.getoption("numprocesses", None))
    except (backends.BackendError, ValueError) as exc:
        raise pytest.UsageError(str(exc)) from None
    if config.pluginmanager.hasplugin("xdist") and config.getoption("maxschedchunk", None) is None:
        # xdist's load scheduling hands each worker a run of consecutive items at first (a quarter of its
        # share): in a longest-first order that piles the longest cases on one worker. One at a time, each
        # worker takes the longest case left whenever it is free.
        config.option.maxschedchunk = 1
    if config.getoption("resume"):
        config.stash[RUN_KEY] = _resumed_run(config, Path(config.getoption("resume")), _selection(config, chosen))
        _configure_baseline(config, config.stash[RUN_KEY]["backend"])
        return
    started = dt.datetime.now(dt.timezone.utc)
    run_id = f"{backend}-{started:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"
    results = config.getoption("results") or str(Path("results") / backend / f"{run_id}.jsonl")
    if Path(results).exists() and Path(results).stat().st_size:
        raise pytest.UsageError(f"{results} already holds a run; a results file is never appended to by a second "
                                f"run: give a new file, or continue that run with --resume {results}")
    config.stash[RUN_KEY] = {
        "run_id": run_id,
        "backend": backend,
        "started_at": started.isoformat(timespec="seconds"),
        "results": str(Path(results).resolve()),
        "opsuite": {"version": opsuite.__version__, "commit": _git_commit()},
        "options": {"profile": chosen.name, **_selection(config, chosen),
                    "case_timeout_s": config.getoption("case_timeout"),
                    "workers": config.getoption("numprocesses", None), "executor": config.getoption("executor")},
    }
    _configure_baseline(config, backend)


def _profile(config: pytest.Config) -> profiles.Profile:
    """The run's samples, dtypes and directions: those given, the rest from --profile (or the defaults:
    DEFAULT_SAMPLES, every dtype and direction). Its name is kept only when nothing overrode it."""
    name = config.getoption("profile")
    base = profiles.get(name) if name else profiles.Profile(None, (), None, None, str(DEFAULT_SAMPLES))
    return base.overridden(None, _csv(config.getoption("dtypes")), _csv(config.getoption("directions")),
                           config.getoption("samples"))


def _selection(config: pytest.Config, chosen: profiles.Profile) -> dict[str, Any]:
    """The options that select a run's cases and samples, as its header records them."""
    return {"samples": chosen.samples, "dtypes": list(chosen.dtypes) if chosen.dtypes else None,
            "directions": list(chosen.directions) if chosen.directions else None,
            "ops": _csv(",".join(config.getoption("op") or ())), "keyword": config.getoption("keyword") or None,
            "shard": str(schedule.Shard.parse(config.getoption("shard"))) if config.getoption("shard") else None}


def _resumed_run(config: pytest.Config, path: Path, selection: dict[str, Any]) -> dict[str, Any]:
    """The identity of a run to continue, from its results file; refuses a selection other than its own."""
    try:
        run = load_for_resume(path)
    except ResultsError as exc:
        raise pytest.UsageError(str(exc)) from None
    header, options = run.header, run.header["options"]
    given = {"backend": config.getoption("backend") or header["backend"], **selection}
    recorded = {"backend": header["backend"], **{name: options.get(name) for name in selection}}
    for name, value in given.items():
        if value != recorded[name]:
            raise pytest.UsageError(f"--resume {path}: the run was started with {name} {recorded[name]!r}, not "
                                    f"{value!r}; a resumed run keeps its own selection")
    config.stash[_FINISHED_KEY] = set(run.lines)
    return {"run_id": header["run_id"], "backend": header["backend"], "started_at": header["started_at"],
            "results": str(path.resolve()), "opsuite": header["opsuite"],
            "options": {**options, "case_timeout_s": config.getoption("case_timeout")}}


def _configure_baseline(config: pytest.Config, backend: str) -> None:
    """Regression mode: load the baseline snapshot (in every process: markers are set at collection)."""
    ref = config.getoption("baseline", None)
    if config.getoption("update_baseline", False) and not ref:
        raise pytest.UsageError("--update-baseline needs --baseline SNAPSHOT")
    if not ref:
        return
    try:
        config.stash[BASELINE_KEY] = regression.load(ref, backend)
    except MatrixError as exc:
        raise pytest.UsageError(str(exc)) from None


def _pin_neuron_core(worker_id: str) -> None:
    """Give this xdist worker a NeuronCore of its own, before any process of it starts the runtime.

    The worker process that runs cases is spawned from here and inherits the environment.
    """
    index = int(worker_id.removeprefix("gw"))
    try:
        core = neuron_tools.core_for_worker(index, os.environ.get(neuron_tools.VISIBLE_CORES))
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None
    os.environ[neuron_tools.VISIBLE_CORES] = core


@pytest.hookimpl(optionalhook=True, tryfirst=True)  # before xdist's own, which counts CPUs
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """xdist's `-n auto` on a Neuron backend: one worker per NeuronCore (None: xdist counts CPUs)."""
    backend = config.getoption("backend") or backends.default()
    if backend not in backends.NEURON_BACKENDS:
        return None
    return neuron_tools.worker_count(os.environ.get(neuron_tools.VISIBLE_CORES))


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist: hand the run's identity to every worker."""
    node.workerinput["opsuite_run"] = node.config.stash[RUN_KEY]
    node.workerinput["opsuite_finished"] = sorted(node.config.stash.get(_FINISHED_KEY, ()))


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> None:
    """Start the case worker when the suite's first file is collected: it opens its backend meanwhile."""
    if file_path.parent == opsuite.CASES_DIR and not parent.config.option.collectonly:
        _case_session(parent.config)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "case_id" not in metafunc.fixturenames:
        return
    kind = getattr(metafunc.module, "CASE_KIND")
    options = metafunc.config.stash[RUN_KEY]["options"]
    request = CasesRequest(kind, options["dtypes"], options["directions"])
    if metafunc.config.option.collectonly:  # listing only: no worker, build the catalog here
        from opsuite.catalog import build_catalog

        catalog = build_catalog([kind])
        ids = [c.id for c in catalog.select(request.dtypes, request.directions)]
        facts = catalog.facts()
    else:
        session = _case_session(metafunc.config)
        if _REFUSED_KEY in metafunc.config.stash:
            metafunc.parametrize("case_id", [])
            return
        try:
            ids, facts = session.runner.cases(request)
        except WorkerStartError as exc:
            if not session.on_ray:
                pytest.exit(str(exc), returncode=WORKER_FAILED_EXIT)
            # pytest shows an exit raised while collecting as a collection error, cut short: the reason (no
            # cluster, nodes of two stacks) is said whole once collection is over, before any case runs
            metafunc.config.stash[_REFUSED_KEY] = str(exc)
            metafunc.parametrize("case_id", [])
            return
        _say(metafunc.config, f"{len(ids)} {kind} cases, {time.monotonic() - session.started:.0f} s after the "
                              "case worker started")
    metafunc.config.stash.setdefault(_FACTS_KEY, {}).update(facts)
    metafunc.parametrize("case_id", [pytest.param(i, marks=_markers(i), id=i) for i in ids])


def _markers(case_id: str) -> list[pytest.MarkDecorator]:
    """A case's kind, dtype and direction as markers."""
    case = parse_case_id(case_id)
    return [getattr(pytest.mark, name) for name in (case.kind, case.dtype, case.direction)]


def _say(config: pytest.Config, text: str) -> None:
    """A progress line on the terminal at once (from the controlling process; an xdist worker has none)."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or getattr(config, "workerinput", None) is not None:
        return
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():  # not held back
        reporter.write_line(f"opsuite: {text}")
        reporter.flush()


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_setupnodes(config: pytest.Config, specs: list[Any]) -> None:
    """xdist: say what the silent start of each worker is (it collects once its case worker is up)."""
    config.stash[_STARTED_KEY] = time.monotonic()
    backend = config.stash[RUN_KEY]["backend"]
    _say(config, f"starting {len(specs)} workers; each starts a case worker that imports the {backend} stack "
                 "and builds the catalog (a minute or so)")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node: Any, ids: list[str]) -> None:
    """xdist: say when each worker is ready, and with how many cases."""
    config = node.config
    _say(config, f"[{node.gateway.id}] ready after {time.monotonic() - config.stash[_STARTED_KEY]:.0f} s: "
                 f"{len(ids)} cases")


def _case_session(config: pytest.Config) -> "CaseSession":
    """This process's case session, made (and its worker started) when it is first needed."""
    if _SESSION_KEY not in config.stash:
        session = config.stash[_SESSION_KEY] = CaseSession(config)
        workers = "case workers, one per slot of the Ray cluster" if session.on_ray else "case worker"
        _say(config, f"starting the {session.run['backend']} {workers}: each imports the stack and builds the "
                     "catalog (a minute or so)")
        if not session.on_ray:  # Ray's runner joins the cluster when first asked for cases, and fails there
            session.runner.start()
    return config.stash[_SESSION_KEY]


class CaseSession:
    """Per pytest process: the isolated runner and the results writer."""

    def __init__(self, config: pytest.Config):
        self.config = config
        self.run = config.stash[RUN_KEY]
        try:
            backends.check_available(self.run["backend"])
        except backends.BackendError as exc:
            pytest.exit(str(exc), returncode=pytest.ExitCode.USAGE_ERROR)
        worker = WorkerConfig(backend=self.run["backend"], samples=parse_samples(self.run["options"]["samples"]))
        timeout = self.run["options"]["case_timeout_s"]
        # Under Ray, records are written as they come back from the cluster, not when pytest reaches them.
        self.on_ray = config.getoption("executor") == "ray"
        self.runner = ray_executor.RayRunner(worker, timeout, config.getoption("address"), self._record) \
            if self.on_ray else IsolatedRunner(worker, case_timeout_s=timeout)
        self.writer = ResultsWriter(Path(self.run["results"]), self._header)
        self.baseline = config.stash.get(BASELINE_KEY, None)
        self.started = time.monotonic()
        self.outcomes: dict[str, Status] = {}  # case id -> its status, until its test report is made

    def _header(self) -> dict[str, Any]:
        hello = self.runner.handshake or {}
        return {
            "run_id": self.run["run_id"],
            "backend": self.run["backend"],
            "started_at": self.run["started_at"],
            "stack": hello.get("stack", {}),
            "env": hello.get("env", {}),
            **({"nodes": hello["nodes"]} if "nodes" in hello else {}),  # the Ray nodes, each with its stack
            "host": {"hostname": socket.gethostname(), "platform": platform.platform(),
                     "python": platform.python_version(), "cpus": os.cpu_count(), "user": getpass.getuser()},
            "opsuite": self.run["opsuite"],
            "catalog": self.config.stash.get(_CATALOG_KEY, {"op_db_size": 0}),
            "options": self.run["options"],
        }

    def _record(self, record: CaseRecord) -> None:
        """Append a finished case to the results file (a full disk stops the run)."""
        try:
            self.writer.append(record, self.run["run_id"])
        except ResultsError as exc:  # a full disk: stop; every case finished before is whole in the file
            pytest.exit(str(exc), returncode=RESULTS_FAILED_EXIT)

    def check(self, case_id: str) -> CaseRecord:
        """Run one case, record it, and turn it into a pytest outcome."""
        try:
            record = self.runner.run(case_id)
        except WorkerStartError as exc:
            pytest.exit(str(exc), returncode=WORKER_FAILED_EXIT)
        if not self.on_ray:
            self._record(record)
        if record.status is Status.PASS:
            return record
        reason = notes.short(record.to_json())
        if record.status is Status.SKIP:
            pytest.skip(f"not applicable: {reason}")
        regressed = ""
        if self.baseline is not None and regression.expected_to_pass(self.baseline, case_id):
            regressed = regression.regression_message(self.baseline, case_id, record.to_json()) + "\n"
        else:  # a regression stays a plain FAILED, with the message above
            self.outcomes[case_id] = record.status
        repro = notes.repro_command(case_id, self.run["backend"], record.to_json())
        pytest.fail(f"{regressed}{record.status.value} at stage {record.stage.value}: {reason}\nrepro: {repro}",
                    pytrace=False)
        return record


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Any:
    """Tag the report of a case that ran and did not pass with its status (it travels to xdist's controller)."""
    report = yield
    session = item.config.stash.get(_SESSION_KEY, None)
    case_id = getattr(item, "callspec", None) and item.callspec.params.get("case_id")
    if call.when == "call" and session is not None and case_id in session.outcomes:
        report.opsuite_status = session.outcomes.pop(case_id).value
    return report


def pytest_report_teststatus(report: pytest.TestReport, config: pytest.Config) -> tuple[str, str, str] | None:
    """A failed case is shown under its status (`fallback`, `mismatch`...), not as a bare FAILED."""
    status = getattr(report, "opsuite_status", None)
    if status is None or not report.failed:
        return None
    return status, PROGRESS_LETTER.get(Status(status), "F"), status.upper()


def pytest_collection_finish(session: pytest.Session) -> None:
    """Record what was selected, for the run header: kinds, case count, the catalog's facts (op_db size)."""
    if _REFUSED_KEY in session.config.stash:
        pytest.exit(session.config.stash[_REFUSED_KEY], returncode=WORKER_FAILED_EXIT)
    cases = [item for item in session.items if "case_id" in getattr(item, "fixturenames", ())]
    if not cases:
        return
    kinds = sorted({getattr(item.module, "CASE_KIND") for item in cases})
    session.config.stash[_CATALOG_KEY] = {"kinds": kinds, "cases": len(cases), "op_db_size": 0,
                                          **session.config.stash.get(_FACTS_KEY, {})}
    if _SELECTION_KEY in session.config.stash:  # a shard: `opsuite merge` checks the parts cover this
        session.config.stash[_CATALOG_KEY]["selection"] = session.config.stash[_SELECTION_KEY]
    case_session = session.config.stash.get(_SESSION_KEY, None)
    if case_session is not None and case_session.on_ray:  # the cluster starts on the cases in this order
        case_session.runner.plan([_case_id(item) for item in cases])


def _case_id(item: pytest.Item) -> str | None:
    callspec = getattr(item, "callspec", None)
    return callspec.params.get("case_id") if callspec else None


def _select_ops(config: pytest.Config, items: list[pytest.Item]) -> None:
    """--op: keep the cases of the subjects named (resolved as `opsuite lookup` does); refuse a name
    that names none, with the closest real ones."""
    wanted = [q for value in config.getoption("op") or () for q in _csv(value) or ()]
    if not wanted:
        return
    case_ids = {item: item.callspec.params["case_id"] for item in items
                if getattr(item, "callspec", None) and "case_id" in item.callspec.params}
    subjects = {item: parse_case_id(case_id).subject for item, case_id in case_ids.items()}
    resolver = names.Resolver(set(subjects.values()),
                              config.stash.get(_FACTS_KEY, {}).get("op_names"))
    chosen: set[str] = set()
    for query in wanted:
        found = resolver.resolve(query)
        if not found:
            close = resolver.suggest(query)
            raise pytest.UsageError(f"--op {query!r} names no case of this run" +
                                    (f"; did you mean: {', '.join(close)}?" if close else ""))
        chosen.update(found)
    kept = [item for item in items if item not in subjects or subjects[item] in chosen]
    config.hook.pytest_deselected(items=[item for item in items if item not in kept])
    items[:] = kept


def _schedule(config: pytest.Config, items: list[pytest.Item]) -> None:
    """--shard: keep this part's cases; then order the cases longest first by the times of the backend's
    latest snapshot (opsuite/schedule.py). Without a snapshot the collection order stays."""
    case_ids = {item: _case_id(item) for item in items if _case_id(item)}
    if not case_ids:
        return
    run = config.stash[RUN_KEY]
    try:
        times = schedule.expected_times(run["backend"], find_matrix(), parse_samples(run["options"]["samples"]))
    except MatrixError as exc:
        raise pytest.UsageError(f"{exc} (the case order reads the latest snapshot's case times; name another "
                                f"matrix with OPSUITE_MATRIX=DIR)") from None
    expected = schedule.estimate(list(case_ids.values()), times)
    if run["options"].get("shard"):
        shard = schedule.Shard.parse(run["options"]["shard"])
        config.stash[_SELECTION_KEY] = sorted(case_ids.values())
        mine = set(schedule.split(list(case_ids.values()), expected, shard.count)[shard.index - 1])
        config.hook.pytest_deselected(items=[item for item in case_ids if case_ids[item] not in mine])
        items[:] = [item for item in items if item not in case_ids or case_ids[item] in mine]
    if times:
        kept = {case_ids[item]: item for item in items if item in case_ids}
        items[:] = [item for item in items if item not in case_ids] + \
            [kept[case_id] for case_id in schedule.longest_first(list(kept), expected)]


@pytest.hookimpl(trylast=True)  # after -k and -m have deselected: a shard is a part of the final selection
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    _select_ops(config, items)
    _schedule(config, items)
    finished = config.stash.get(_FINISHED_KEY, set())
    if finished:  # --resume: what the run finished is recorded already
        done = [item for item in items if _case_id(item) in finished]
        config.hook.pytest_deselected(items=done)
        items[:] = [item for item in items if _case_id(item) not in finished]
    snap = config.stash.get(BASELINE_KEY, None)
    if snap is None:
        return
    # Expected failures: a case that did not pass in the baseline (or is new) may fail; passing is XPASS.
    for item in items:
        case_id = _case_id(item)
        if case_id and not regression.expected_to_pass(snap, case_id):
            item.add_marker(pytest.mark.xfail(reason=regression.xfail_reason(snap, case_id), strict=False))


@pytest.fixture(scope="session")
def opsuite_session(request: pytest.FixtureRequest):
    """The case session of this pytest process (made when its cases were collected)."""
    return request.config.stash[_SESSION_KEY]


def pytest_unconfigure(config: pytest.Config) -> None:
    if _SESSION_KEY in config.stash:
        config.stash[_SESSION_KEY].runner.close()


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    if getattr(config, "workerinput", None) is not None or RUN_KEY not in config.stash \
            or getattr(config.option, "opsuite_cli", False):  # `opsuite run` prints its own summary
        return
    path = Path(config.stash[RUN_KEY]["results"])
    if not path.exists():
        return
    try:
        run = load(path)
    except ResultsError as exc:
        terminalreporter.write_line(f"opsuite: {exc}", red=True)
        return
    terminalreporter.section("opsuite summary")
    terminalreporter.write_line(summary.run_report(run))
    terminalreporter.write_line(f"results: {path}")
    snap = config.stash.get(BASELINE_KEY, None)
    if snap is not None:
        cells = snapshot.run_cells(path)
        terminalreporter.section("opsuite regression mode")
        terminalreporter.write_line(regression.report(snap, cells, regression.compare(snap, cells),
                                                      regression.missing(snap, cells), config.getoption("allow_missing")))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Regression mode, in the controlling process: fail on baseline cases that did not run (unless
    --allow-missing); --update-baseline: publish this run into the baseline's matrix."""
    config = session.config
    snap = config.stash.get(BASELINE_KEY, None)
    if getattr(config, "workerinput", None) is not None or snap is None:
        return
    path = Path(config.stash[RUN_KEY]["results"])
    if not path.exists():
        return
    if not config.getoption("allow_missing") and regression.missing(snap, snapshot.run_cells(path)):
        session.exitstatus = session.exitstatus or pytest.ExitCode.TESTS_FAILED
    if not config.getoption("update_baseline"):
        return
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    try:
        published = publish.publish([path], check_writable(snap.path.parent.parent), replace=True)
    except MatrixError as exc:
        message = f"opsuite: --update-baseline did not publish: {exc}"
        session.exitstatus = session.exitstatus or pytest.ExitCode.TESTS_FAILED
    else:
        message = f"opsuite: published the new baseline {published.id} in {published.path}"
    if reporter is not None:
        reporter.write_line(message)


def _git_commit() -> str:
    """The checkout's commit (`-dirty` with changes); OPSUITE_COMMIT names it for a copy without .git."""
    if os.environ.get("OPSUITE_COMMIT"):
        return os.environ["OPSUITE_COMMIT"]
    root = Path(opsuite.__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        # --no-optional-locks: a status killed by the timeout must not leave index.lock behind in the
        # user's checkout (git status otherwise takes the lock to refresh the index).
        dirty = subprocess.run(["git", "--no-optional-locks", "-C", str(root), "status", "--porcelain",
                                "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
