"""`opsuite merge OUT SHARD...`: the results files of a run's `--shard K/N` parts -> one results file.

The parts must be one stack (backend, stack and env as a snapshot keys them) and one selection (the same
options apart from the shard and the worker count, the same catalog), hold no case twice, and together
cover the selection every part recorded (`catalog.selection`); cases no part ran are listed by id and
refused unless `--allow-missing`. The merged file is one run: a header naming the parts it came from
(`merged_from`), then every part's case lines under its run id. It is written beside OUT, checked by
the results reader, and only then renamed into place: bad input writes nothing.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import tempfile
from pathlib import Path
from typing import Any

from opsuite.matrix import MatrixError
from opsuite.matrix.snapshot import stack_difference
from opsuite.results import SCHEMA_MINOR, SCHEMA_VERSION, ResultsError, Run, load
from opsuite.schedule import Shard

# Options that say how a part ran, not what it ran: they may differ between parts.
PER_PART_OPTIONS = ("shard", "workers")
MISSING_SHOWN = 20  # missing case ids named in the refusal; the count says how many more


def _part(run: Run) -> Shard:
    """The shard a results file ran, from its header; refuses a file that is not one."""
    text = run.header["options"].get("shard")
    if not text:
        raise MatrixError(f"{run.path}: not a shard (its header records no --shard K/N); merge joins the parts "
                          f"of one sharded run")
    return Shard.parse(text)


def check(runs: list[Run]) -> list[str]:
    """Raise MatrixError (one line) unless the runs are parts of one sharded run with no case twice;
    return the selection's case ids that no part recorded, sorted."""
    first = runs[0]
    parts = {run.path: _part(run) for run in runs}
    same = {name: value for name, value in first.header["options"].items() if name not in PER_PART_OPTIONS}
    seen: dict[str, Path] = {}
    for run in runs:
        different = stack_difference(first, run)
        if different:
            raise MatrixError(f"cannot merge parts of different {different[0]}: {different[1]}; merge the parts of "
                              f"one run")
        options = {name: value for name, value in run.header["options"].items() if name not in PER_PART_OPTIONS}
        if options != same:
            name = next(n for n in sorted(options.keys() | same.keys()) if options.get(n) != same.get(n))
            raise MatrixError(f"{first.path} and {run.path} ran different selections (option {name}: "
                              f"{same.get(name)!r} vs {options.get(name)!r}); merge the parts of one run")
        if parts[run.path].count != parts[first.path].count:
            raise MatrixError(f"{first.path} is shard {parts[first.path]} and {run.path} shard {parts[run.path]}: "
                              f"parts of different splits")
        twin = next((other.path for other in runs if other is not run and parts[other.path] == parts[run.path]), None)
        if twin is not None:
            raise MatrixError(f"{twin} and {run.path} are both shard {parts[run.path]}: overlapping shards")
        if run.header["catalog"].get("selection") != first.header["catalog"].get("selection"):
            raise MatrixError(f"{first.path} and {run.path} split different selections of cases (another "
                              f"catalog or -k); merge the parts of one run")
        for record in run.records:
            if record.case_id in seen:
                raise MatrixError(f"case {record.case_id} is in both {seen[record.case_id]} and {run.path}: "
                                  f"overlapping shards")
            seen[record.case_id] = run.path
    return sorted(set(first.header["catalog"].get("selection") or ()) - seen.keys())


def header(runs: list[Run], run_id: str) -> dict[str, Any]:
    """The merged run's header: the first part's stack, selection options (no shard) and catalog, the
    parts' cases counted, and each part named in `merged_from`."""
    first = runs[0].header
    catalog = {name: value for name, value in first["catalog"].items() if name != "selection"}
    catalog["cases"] = sum(len(run.records) for run in runs)
    return {
        "kind": "header", "schema_version": SCHEMA_VERSION, "schema_minor": SCHEMA_MINOR,
        "run_id": run_id, "backend": first["backend"],
        "started_at": min(run.header["started_at"] for run in runs),
        "stack": first["stack"], "env": first["env"], "host": first["host"], "opsuite": first["opsuite"],
        "catalog": catalog,
        "options": {**first["options"], "shard": None},
        "merged_from": [{"run_id": run.header["run_id"], "shard": run.header["options"]["shard"],
                         "hostname": run.header["host"].get("hostname"), "started_at": run.header["started_at"],
                         "cases": len(run.records), "opsuite": run.header["opsuite"]} for run in runs],
    }


def merge(out: Path, paths: list[Path], allow_missing: bool = False) -> tuple[Run, list[str]]:
    """Write the parts' merged results file at `out` (which must not exist); its loaded run (with what the
    reader forgave in the parts as its warnings) and the cases missing (allowed only with `allow_missing`).
    Raises MatrixError, writing nothing, on bad input."""
    if out.exists():
        raise MatrixError(f"{out} already exists; results files are never overwritten (give a new file)")
    try:
        runs = sorted((load(path) for path in paths), key=lambda run: _part(run).index)
    except ResultsError as exc:
        raise MatrixError(str(exc)) from None
    missing = check(runs)
    if missing and not allow_missing:
        shown = ", ".join(missing[:MISSING_SHOWN]) + (f" and {len(missing) - MISSING_SHOWN} more"
                                                      if len(missing) > MISSING_SHOWN else "")
        raise MatrixError(f"the parts do not cover the run: they miss {len(missing)} of its cases ({shown}); merge "
                          f"every part, or --allow-missing")
    started = dt.datetime.now(dt.timezone.utc)
    run_id = f"{runs[0].backend}-{started:%Y%m%d-%H%M%S}-merged-{secrets.token_hex(3)}"
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, staged = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps(header(runs, run_id), allow_nan=False, default=str) + "\n")
            for run in runs:
                for record in run.records:
                    handle.write(json.dumps({"kind": "case", "run_id": run_id, **record.to_json()},
                                            allow_nan=False, default=str) + "\n")
        merged = load(staged)
        os.link(staged, out)  # fails, rather than replaces, when OUT appeared meanwhile
    except ResultsError as exc:
        raise MatrixError(f"the merged file did not read back: {exc}") from None
    except FileExistsError:
        raise MatrixError(f"{out} already exists; results files are never overwritten (give a new file)") from None
    finally:
        os.unlink(staged)
    merged.path = out
    merged.warnings = [warning for run in runs for warning in run.warnings]  # e.g. a killed part's torn line
    return merged, missing

