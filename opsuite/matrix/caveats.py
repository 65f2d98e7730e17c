"""Caveats: what a maintainer knows about a published snapshot's cells that its run could not.

A snapshot that cannot be re-run yet (no GPU lent, no Neuron host at hand) may hold cells judged by a
comparison rule or a harness that has since changed. `caveats.json`, beside its `snapshot.json`, says
which cells (case-id patterns) and why; pages, the index and `opsuite lookup` show the reason next to
those cells. The cells themselves are never changed: a caveat is words about a result, not a result.
"""

from __future__ import annotations

import fnmatch
import functools
import json
from pathlib import Path
from typing import Any

from opsuite.matrix import MatrixError

FILE = "caveats.json"


@functools.cache
def _validator():
    from importlib import resources

    import jsonschema

    schema = json.loads(resources.files("opsuite").joinpath("schemas/caveats-v1.json").read_text())
    return jsonschema.Draft202012Validator(schema)


def load(directory: Path, case_ids: set[str] | dict[str, Any]) -> list[dict[str, Any]]:
    """The caveats of the snapshot in `directory` ([] when it has none), checked against its schema and
    its cells: a pattern that matches no cell is refused (a typo would silently say nothing)."""
    file = directory / FILE
    try:
        data = json.loads(file.read_text())
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise MatrixError(f"{file}: cannot read caveats: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise MatrixError(f"{file}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    error = next(iter(sorted(_validator().iter_errors(data), key=lambda e: list(e.absolute_path))), None)
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "top level"
        raise MatrixError(f"{file}: bad caveats at {where}: {error.message}")
    for caveat in data["caveats"]:
        for pattern in caveat["cases"]:
            if not any(fnmatch.fnmatchcase(case_id, pattern) for case_id in case_ids):
                raise MatrixError(f"{file}: the pattern {pattern!r} matches no cell of the snapshot")
    return data["caveats"]


def covers(caveat: dict[str, Any], case_id: str) -> bool:
    """Whether one of the caveat's patterns matches `case_id`."""
    return any(fnmatch.fnmatchcase(case_id, pattern) for pattern in caveat["cases"])


def numbered(caveats: list[dict[str, Any]], case_id: str) -> list[tuple[int, str]]:
    """(number from 1 in file order, reason) of each caveat that covers `case_id`: pages mark cells so."""
    return [(n, c["reason"]) for n, c in enumerate(caveats, start=1) if covers(c, case_id)]


def reasons(caveats: list[dict[str, Any]], case_id: str) -> list[str]:
    """The reasons of the caveats that cover `case_id`, in file order."""
    return [reason for _, reason in numbered(caveats, case_id)]


def matched(caveats: list[dict[str, Any]], case_ids) -> list[tuple[dict[str, Any], list[str]]]:
    """Each caveat with the sorted case ids it covers."""
    return [(c, sorted(i for i in case_ids if covers(c, i))) for c in caveats]
