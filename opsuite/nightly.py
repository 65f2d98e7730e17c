"""`opsuite nightly`: the one command a scheduled job runs in a release's environment.

Run the suite with the matrix profile, publish the run as its stack's snapshot, compare it with the
previous snapshot of the same backend (the same release's last nightly when its stack is already
published, else the newest older release), write the release notes next to the matrix, and leave a
Markdown report for the job's summary. Exit 1 on a regression or a case that the run selected but did
not record; 2 on bad input; the run's own code when the run itself failed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from opsuite.matrix import MATRIX_ENV, MatrixError, find_matrix

EXIT_OK, EXIT_FAILED = 0, 1
REPORT = "nightly-report.md"
def profile_options(results: Path) -> list[str]:
    """The `opsuite run` options of a nightly: the matrix profile (the options published snapshots are
    run with, `opsuite/profiles.py`), writing `results`, or continuing the interrupted run in it."""
    return ["--profile", "matrix", "--resume" if results.exists() else "--results", str(results)]


def _add(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", help="backend under test (default: a Neuron device if present, else xla)")
    parser.add_argument("--matrix", type=Path, default=None,
                        help=f"the matrix to publish into and compare with (default: ${MATRIX_ENV}, else the "
                             f"matrix/ of the current checkout)")
    parser.add_argument("--work", type=Path, default=Path("nightly"),
                        help="where the results file and the report go (default: ./nightly)")
    parser.add_argument("--results", type=Path,
                        help="results file of this night (default: <work>/<backend>-nightly-<time>.jsonl); an "
                             "existing one is resumed (`opsuite run --resume`)")
    parser.add_argument("-n", dest="workers", help="parallel workers (pytest-xdist): a number or 'auto'")
    parser.add_argument("-k", dest="keyword", help="only the cases this pytest -k expression selects (a subset: "
                                                   "for trying the job out, not for a published matrix)")
    parser.add_argument("--case-timeout", type=float, help="seconds before a case is killed")
    parser.add_argument("--summary", type=Path,
                        help="also append the report to this file (default: $GITHUB_STEP_SUMMARY when set)")


def run_suite(args: argparse.Namespace, backend: str, results: Path) -> int:
    """`opsuite run` with the nightly's options, in a subprocess (its own pytest session); its exit code."""
    argv = [sys.executable, "-m", "opsuite.cli", "run", "--backend", backend, *profile_options(results)]
    for flag, value in (("-n", args.workers), ("-k", args.keyword), ("--case-timeout", args.case_timeout)):
        if value is not None:
            argv += [flag, str(value)]
    print("$ " + " ".join(argv), flush=True)
    return subprocess.run(argv, check=False).returncode


def previous_snapshot(matrix: Path, header: dict[str, Any]):
    """The snapshot a night is compared with: this stack's own (the last nightly of the same release),
    else the newest of the same backend with an older stack version; None for a first night."""
    from opsuite.matrix import snapshot, stack

    if not (matrix / header["backend"]).is_dir():
        return None
    same_backend = [s for s in snapshot.load_all(matrix) if s.backend == header["backend"]]
    new_id = f"{header['backend']}/{stack.key(header)}"
    for snap in same_backend:
        if snap.id == new_id:
            return snap
    new_order = stack.order_key(header["backend"], stack.versions(header), header["started_at"])
    older = [s for s in same_backend if s.order_key < new_order]
    return older[-1] if older else None


def report(outcome: dict[str, Any]) -> str:
    """The Markdown summary of a night: what ran, what was published, the notes' headline and breakage."""
    out = [f"# opsuite nightly: {outcome['backend']}", "",
           f"- results: `{outcome['results']}` ({outcome['recorded']} of {outcome['selected']} selected cases "
           f"recorded, run exit code {outcome['run_exit']})"]
    if outcome.get("missing"):
        out.append(f"- **{outcome['missing']} selected cases have no record**: the run did not finish "
                   f"(rerun to resume it); nothing was published")
    if outcome.get("publish_error"):
        out.append(f"- **not published**: {outcome['publish_error']}")
    if outcome.get("published"):
        out.append(f"- published `{outcome['published']}` into `{outcome['matrix']}`")
    notes = outcome.get("notes")
    if notes is None:
        out.append("- no earlier snapshot of this backend to compare with: a first night")
    else:
        out += [f"- compared with `{notes['a']['id']}`", "", f"**{notes['headline']}**", ""]
        from opsuite.matrix import release_notes

        out += ["| change | cases |", "|---|---:|"]
        out += [f"| {title} | {notes['counts'][key]} |" for key, title, _ in release_notes.SECTIONS]
        broken = notes["sections"]["newly_broken"]
        if broken:
            from opsuite.matrix import notes as cell_notes
            from opsuite.matrix.render_md import md

            out += ["", f"## Regressions ({len(broken)})", "", "| case | before | now |", "|---|---|---|"]
            out += [f"| `{e['case_id']}` | {md(cell_notes.one_line(e['before']))} | {md(cell_notes.one_line(e['after']))} |"
                    for e in broken]
        out += ["", "Release notes: " + ", ".join(f"`{p}`" for p in outcome.get("notes_files", []))]
    out += ["", f"Verdict: **{'FAILED' if outcome['exit'] else 'passed'}**"]
    return "\n".join(out) + "\n"


def nightly(args: argparse.Namespace) -> int:
    """Run, publish, compare, write the notes and the report; the night's exit code."""
    from opsuite import backends
    from opsuite.matrix import publish, release_notes, stack
    from opsuite.results import ResultsError, load

    backend = args.backend or backends.default()
    try:
        backends.check_available(backend)
    except backends.BackendError as exc:
        raise MatrixError(str(exc)) from None
    args.matrix = find_matrix(args.matrix, write=True)
    args.work.mkdir(parents=True, exist_ok=True)
    results = args.results or args.work / f"{backend}-nightly-{time.strftime('%Y%m%d-%H%M%S')}.jsonl"
    run_exit = run_suite(args, backend, results)
    if not results.exists():
        print(f"opsuite nightly: the run recorded nothing (exit code {run_exit})", file=sys.stderr)
        return run_exit or EXIT_FAILED
    try:
        run = load(results)
    except ResultsError as exc:
        raise MatrixError(str(exc)) from None
    selected = run.header["catalog"].get("cases", len(run.records))
    outcome: dict[str, Any] = {"backend": backend, "results": str(results), "recorded": len(run.records),
                               "selected": selected, "run_exit": run_exit, "matrix": str(args.matrix),
                               "missing": max(0, selected - len(run.records)), "notes": None}
    previous = previous_snapshot(args.matrix, run.header)
    same_release = previous is not None and previous.id == f"{backend}/{stack.key(run.header)}"
    new = None
    if not outcome["missing"]:
        try:
            new = publish.publish([results], args.matrix, replace=same_release)
            outcome["published"] = new.id
        except MatrixError as exc:  # e.g. replacing this release's snapshot would lose cases
            outcome["publish_error"] = str(exc)
    if previous is not None and new is not None:
        notes = release_notes.release_notes(previous, new)
        outcome["notes"] = notes
        outcome["notes_files"] = [str(p) for p in release_notes.write(notes, args.matrix)]
        publish.reindex(args.matrix, pages=False)  # the index links the new notes
    regressed = bool(outcome["notes"] and outcome["notes"]["counts"]["newly_broken"])
    failed = regressed or outcome["missing"] or "publish_error" in outcome or run_exit != 0
    outcome["exit"] = EXIT_FAILED if failed else EXIT_OK
    text = report(outcome)
    (args.work / REPORT).write_text(text)
    summary = args.summary or (Path(os.environ["GITHUB_STEP_SUMMARY"]) if os.environ.get("GITHUB_STEP_SUMMARY") else None)
    if summary is not None:
        with open(summary, "a") as out:
            out.write(text)
    print(text)
    return outcome["exit"]


def cmd_nightly(args: argparse.Namespace) -> int:
    """Run the matrix profile, publish, compare with the previous release, write notes and a report."""
    return nightly(args)


COMMANDS = {
    "nightly": (_add, cmd_nightly, "the scheduled job: run the matrix profile, publish, compare with the "
                                   "previous release, write release notes; exit 1 on regressions or lost cases"),
}
