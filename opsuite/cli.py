"""The `opsuite` command: run the suite, rerun one case, and the matrix commands.

Each subcommand is a function taking parsed arguments and returning an exit code; `COMMANDS` maps
names to (adder of arguments, function). Errors meant for the user are raised as `UserError` and
printed as one line with exit code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Callable

from opsuite import CASES_DIR
from opsuite.audit.command import COMMANDS as AUDIT_COMMANDS
from opsuite.matrix import MatrixError
from opsuite.matrix.commands import COMMANDS as MATRIX_COMMANDS
from opsuite.nightly import COMMANDS as NIGHTLY_COMMANDS
from opsuite.vocabulary import KINDS, NOT_APPLICABLE, WORKING, check_choices, parse_case_id


class UserError(Exception):
    """Bad input from the user: printed as one clear line, exit code 2."""


# ---------------------------------------------------------------- opsuite run

def _add_run(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", help="backend under test (default: a Neuron device if present, else xla)")
    parser.add_argument("-k", dest="keyword", help="pytest -k expression selecting cases, e.g. 'softmax and bfloat16'")
    parser.add_argument("-n", dest="workers", help="parallel workers (pytest-xdist), a number or 'auto'")
    parser.add_argument("--executor", default="local",
                        help="where cases run: local (default; -n N for N workers) or ray (one case worker per "
                             "NeuronCore or CPU of a Ray cluster; pip install 'opsuite[ray]')")
    parser.add_argument("--address", help="with --executor ray: the Ray cluster (host:port, or 'auto' on a node "
                                          "started with `ray start`); default: a local Ray instance")
    parser.add_argument("--profile", help="named options (opsuite/profiles.py): quick (the default: ops, blocks, "
                                          "models; float32, bfloat16; 2 samples) or matrix (the same, every "
                                          "sample: what published snapshots run); with --baseline, the "
                                          "baseline's own options are the default")
    parser.add_argument("--op", action="append", metavar="NAME",
                        help="only these subjects, named as lookup accepts them (F.softmax, aten::index_put_, "
                             "an OpInfo alias, a block); repeatable or comma-separated")
    parser.add_argument("--samples", help="samples per case, or 'all' (overrides the profile)")
    parser.add_argument("--dtypes", help="comma-separated dtypes (overrides the profile)")
    parser.add_argument("--directions", help="comma-separated directions (overrides the profile)")
    parser.add_argument("--kinds", help="comma-separated case kinds: ops, blocks, models (overrides the profile)")
    parser.add_argument("--results", help="results file (default: results/<backend>/<run id>.jsonl)")
    parser.add_argument("--case-timeout", type=float, help="seconds before a case is killed (default 300)")
    parser.add_argument("--baseline", metavar="SNAPSHOT",
                        help="regression mode: compare with a published snapshot (directory or id); exit 1 "
                             "when a case that passed there does not pass now, or one of its cases did not run")
    parser.add_argument("--allow-missing", action="store_true",
                        help="with --baseline: baseline cases this run leaves out were deselected on purpose; "
                             "report them, do not fail")
    parser.add_argument("--update-baseline", action="store_true",
                        help="with --baseline: publish this run as a snapshot into the baseline's matrix")
    parser.add_argument("--resume", metavar="RESULTS",
                        help="continue a killed run: skip the cases its results file holds, append the others to it "
                             "(backend, kinds, samples, dtypes, directions and -k are the run's own)")
    parser.add_argument("--shard", metavar="K/N",
                        help="run part K of N (1 <= K <= N) of the selection, balanced by the case times of the "
                             "backend's latest snapshot: one part per CI job, Indexed Job pod or array task; "
                             "`opsuite merge` joins the parts' results")
    for flag, what in _RERUN_FLAGS.items():
        parser.add_argument(flag, action="store_true", help=f"pytest's {flag}: {what}")
    parser.add_argument("pytest_args", nargs="*", help="further pytest arguments, after --, e.g. -- -m 'blocks and backward'")


# pytest's cache-provider options, passed on. They remember the cases that did not pass (every status but
# pass and skip) in .pytest_cache next to the results file: results/<backend>/ by default.
_RERUN_FLAGS = {"--lf": "rerun only the cases that did not pass in the last run",
                "--ff": "run the cases that did not pass last time first",
                "--sw": "stop at the first case that does not pass; the next --sw run starts from it"}


def cmd_run(args: argparse.Namespace) -> int:
    """Run the suite through pytest, then print the status summary and where the results are.

    Exit codes: 0 when the run finished (whatever the cases' statuses), 1 on regressions against
    --baseline or baseline cases it did not run (unless --allow-missing), 2 on bad input, 5 when no case
    was selected, pytest's own code when pytest failed.
    """
    import pytest

    from opsuite import backends, pytest_plugin, ray_executor, summary
    from opsuite.pytest_plugin import RESULTS_FAILED_EXIT, WORKER_FAILED_EXIT, check_options
    from opsuite.results import load
    from opsuite.schedule import Shard

    if args.resume:
        _take_resumed_options(args)
    backend = args.backend or backends.default()
    try:
        backends.check_available(backend)
        check_options(args.samples, args.dtypes, args.directions, args.case_timeout, args.workers)
        if args.shard:
            Shard.parse(args.shard)
        check_choices(_csv(args.kinds or ""), KINDS, "case kind")
        ray_executor.check_executor(args.executor, args.address, args.workers)
    except (backends.BackendError, ValueError) as exc:
        raise UserError(str(exc)) from None
    if args.update_baseline and not args.baseline:
        raise UserError("--update-baseline needs --baseline SNAPSHOT")
    snap = None
    if args.baseline:  # refuse a bad baseline before the run, not after it
        from opsuite.matrix import baseline, snapshot

        snap = baseline.load(args.baseline, backend)
    chosen = _run_profile(args, snap)
    results = Path(args.resume or args.results or
                   Path("results") / backend / f"{backend}-{time.strftime('%Y%m%d-%H%M%S')}.jsonl")
    if results.exists() and not args.resume:
        raise UserError(f"{results} already exists; results files are never overwritten (continue a killed run "
                        f"with --resume {results})")
    files = [str(CASES_DIR / f"test_{kind}.py") for kind in chosen.kinds]
    argv = [*files, "--backend", backend, "--samples", chosen.samples,
            *(["--resume", str(results)] if args.resume else ["--results", str(results)]),
            "-q", "--tb=no", "-o", f"cache_dir={results.resolve().parent / '.pytest_cache'}",
            "--rootdir", str(CASES_DIR.parent)]
    for flag, value in (("-k", args.keyword), ("-n", args.workers), ("--profile", chosen.name),
                        ("--executor", args.executor), ("--address", args.address),
                        ("--dtypes", ",".join(chosen.dtypes or ()) or None),
                        ("--directions", ",".join(chosen.directions or ()) or None),
                        ("--op", ",".join(args.op or ()) or None),
                        ("--case-timeout", args.case_timeout), ("--baseline", args.baseline),
                        ("--shard", args.shard)):
        if value is not None:
            argv += [flag, str(value)]
    for flag in ("update_baseline", "allow_missing"):
        if getattr(args, flag):
            argv.append("--" + flag.replace("_", "-"))
    argv += [flag for flag in _RERUN_FLAGS if getattr(args, flag[2:])]
    argv += args.pytest_args
    # The plugin, imported above, is handed to pytest as the module it is: conftest.py naming it again
    # would have pytest try to rewrite its asserts and warn that it cannot (already imported).
    code = pytest.main(argv, plugins=[_SummaryOnly(), pytest_plugin])
    if code == RESULTS_FAILED_EXIT:
        print(f"opsuite: the run stopped: {results} could not be written; the cases finished before are "
              f"kept (continue with --resume {results} once there is room)", file=sys.stderr)
    if code in (pytest.ExitCode.INTERRUPTED, pytest.ExitCode.INTERNAL_ERROR, pytest.ExitCode.USAGE_ERROR,
                WORKER_FAILED_EXIT, RESULTS_FAILED_EXIT):
        return int(code)
    if not results.exists():
        print("opsuite: no case was selected; nothing recorded", file=sys.stderr)
        return 5
    run = load(results)
    _warn(run.warnings)
    print()
    print(summary.run_report(run))
    print(f"\n{len(run.records)} cases recorded in {results}")
    if args.baseline:
        cells = snapshot.run_cells(results)
        changes = baseline.compare(snap, cells)
        absent = baseline.missing(snap, cells)
        print()
        print(baseline.report(snap, cells, changes, absent, args.allow_missing))
        return 1 if baseline.failed(changes, absent, args.allow_missing) else 0
    return 0


def _take_resumed_options(args: argparse.Namespace) -> None:
    """`--resume FILE`: the run's backend and selection, from its header (a conflicting option is refused)."""
    from opsuite.results import ResultsError, load_for_resume

    if args.results:
        raise UserError("--resume appends to the results file it names; --results cannot be given with it")
    try:
        header = load_for_resume(args.resume).header
    except ResultsError as exc:
        raise UserError(str(exc)) from None
    options, kinds = header["options"], header["catalog"].get("kinds", ())
    recorded = {"backend": header["backend"], "keyword": options.get("keyword"), "profile": options.get("profile"),
                "samples": options.get("samples"), "shard": options.get("shard"),
                "kinds": ",".join(k for k in KINDS if k in kinds) or None,
                **{name: ",".join(options[name]) if options.get(name) else None
                   for name in ("dtypes", "directions")}}
    for name, value in recorded.items():
        if getattr(args, name) not in (None, value):
            raise UserError(f"--resume {args.resume}: the run was started with {name} {value!r}, not "
                            f"{getattr(args, name)!r}; a resumed run keeps its own selection")
        setattr(args, name, value)
    if args.op:
        raise UserError(f"--resume {args.resume}: a resumed run keeps its own selection; --op cannot be given")
    args.op = [",".join(options["ops"])] if options.get("ops") else None


def _run_profile(args: argparse.Namespace, snap) -> "profiles.Profile":
    """The run's options: the named profile, else the baseline's, else the default; explicit options win."""
    from opsuite import profiles

    if args.allow_missing and not args.baseline:
        raise UserError("--allow-missing needs --baseline SNAPSHOT")
    try:
        if args.profile or snap is None:
            chosen = profiles.get(args.profile or profiles.DEFAULT)
        else:
            from opsuite.matrix import baseline

            chosen = baseline.profile(snap)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    kinds, dtypes, directions = (_csv(v) if v else None for v in (args.kinds, args.dtypes, args.directions))
    return chosen.overridden(kinds, dtypes, directions, args.samples)


class _SummaryOnly:
    """Under `opsuite run` the summary is printed by the CLI, not by pytest's terminal reporter."""

    def pytest_configure(self, config) -> None:
        config.option.opsuite_cli = True


# ---------------------------------------------------------------- opsuite repro

def _add_repro(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("case_id", help="a case id, e.g. ops/softmax/bfloat16/backward; its name may be spelled "
                                        "as lookup accepts it (ops/F.softmax/bfloat16/backward)")
    parser.add_argument("--backend", help="backend (default: a Neuron device if present, else xla)")
    parser.add_argument("--samples", default="2", help="samples, or 'all' (default 2)")
    parser.add_argument("--sample", type=int, metavar="N",
                        help="run sample N alone (its index in the record's samples, as a crash names it)")


def cmd_repro(args: argparse.Namespace) -> int:
    """Run one case in this process (no isolation), print its record and the full traceback of a failure."""
    from opsuite import backends
    from opsuite.catalog import Case, build_catalog
    from opsuite.execute import run_case
    from opsuite.pytest_plugin import parse_samples

    try:
        case = Case.parse(args.case_id)
        backend_name = args.backend or backends.default()
        backends.check_available(backend_name)
        catalog = build_catalog([case.kind])
        case = catalog.get(_case_named(case.id, catalog))
    except (ValueError, KeyError, backends.BackendError) as exc:
        raise UserError(str(exc).strip('"')) from None
    backend = backends.open_backend(backend_name)
    try:
        record = run_case(case, catalog.source(case), backend, parse_samples(args.samples), tracebacks=True,
                          only_sample=args.sample)
    except IndexError as exc:
        raise UserError(str(exc)) from None
    trace = record.extra.pop("traceback", None)
    print(json.dumps(record.to_json(), indent=2))
    if trace:
        print(trace, file=sys.stderr)
    return 0 if record.status.value in WORKING | {NOT_APPLICABLE} else 1


def _case_named(case_id: str, catalog) -> str:
    """The catalog's id of a case id whose name is spelled as a user may (`ops/F.softmax/...`)."""
    from opsuite.names import Resolver

    if case_id in catalog:
        return case_id
    subjects = {parse_case_id(c.id).subject for c in catalog}
    found = Resolver(subjects, catalog.facts().get("op_names")).resolve_case(case_id)
    if len(found) > 1:
        raise UserError(f"{case_id} means {len(found)} cases: {', '.join(found)}; name one")
    if found:
        print(f"opsuite: {case_id} is {found[0]}", file=sys.stderr)
    return found[0] if found else case_id


# ---------------------------------------------------------------- opsuite summary

def _add_summary(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", nargs="+", help="results files (.jsonl)")


def cmd_summary(args: argparse.Namespace) -> int:
    """Validate results files and print each one's status table."""
    from opsuite import summary
    from opsuite.results import ResultsError, load

    for path in args.results:
        try:
            run = load(path)
        except ResultsError as exc:
            raise UserError(str(exc)) from None
        _warn(run.warnings)
        print(f"{path}: run {run.header['run_id']}, backend {run.backend}, {len(run.records)} cases")
        print(summary.status_table(run.records))
    return 0


# ---------------------------------------------------------------- opsuite merge

def _add_merge(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", type=Path, help="the merged results file to write (.jsonl; must not exist)")
    parser.add_argument("shards", nargs="+", type=Path, help="the results files of the parts (--shard K/N runs)")
    parser.add_argument("--allow-missing", action="store_true",
                        help="write the merge even when the parts leave cases of the run out (they are listed)")


def cmd_merge(args: argparse.Namespace) -> int:
    """Merge the parts of a sharded run into one results file that publishes like a single run."""
    from opsuite.merge import merge

    merged, missing = merge(args.out, args.shards, args.allow_missing)
    _warn(merged.warnings)
    if missing:
        print(f"opsuite: warning: {len(missing)} cases of the run are in no part: {', '.join(missing)}",
              file=sys.stderr)
    print(f"merged {len(args.shards)} parts: {len(merged.records)} cases of run {merged.header['run_id']} in "
          f"{args.out}")
    return 0


# ---------------------------------------------------------------- entry point

COMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int], str]] = {
    "run": (_add_run, cmd_run, "run the suite on a backend and record every case"),
    "repro": (_add_repro, cmd_repro, "rerun one case in-process with its traceback"),
    "summary": (_add_summary, cmd_summary, "validate results files and print their status tables"),
    **MATRIX_COMMANDS,
    "merge": (_add_merge, cmd_merge, "join the results files of a run's --shard parts into one"),
    **AUDIT_COMMANDS,
    **NIGHTLY_COMMANDS,
}


def _warn(warnings: list[str]) -> None:
    """Say what a reader forgave (a torn last line, a newer minor version), one line each."""
    for warning in warnings:
        print(f"opsuite: warning: {warning}", file=sys.stderr)


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="opsuite", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (add, _, help_text) in COMMANDS.items():
        add(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `opsuite` command."""
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command][1](args)
    except (UserError, MatrixError) as exc:
        print(f"opsuite: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `opsuite lookup x | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
