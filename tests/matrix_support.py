"""Shared by tests/test_matrix_*.py: one real small cpu run per test process, and helpers.

Results files for the matrix tests come from real runs (`opsuite run --backend cpu`); the few variants a
test needs (another stack version, one case made to fail) are edited COPIES in tmp dirs, never under
matrix/.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
# Two ops, two directions, two dtypes, and one case the CPU reference cannot run (a real skip).
SELECTION = "ops/add/float32 or ops/add/bfloat16 or ops/softmax/float32 or ops/jiterator_unary/float32"


def opsuite(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the opsuite command as a user does, in a subprocess."""
    return subprocess.run([sys.executable, "-m", "opsuite.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


@functools.cache
def real_cpu_results() -> Path:
    """A results file of a real cpu run of SELECTION, made once per test process (read-only to tests)."""
    directory = Path(tempfile.mkdtemp(prefix="opsuite-matrix-tests-"))
    atexit.register(shutil.rmtree, directory, True)
    results = directory / "cpu-real.jsonl"
    done = opsuite("run", "--backend", "cpu", "-k", SELECTION, "--results", str(results), cwd=directory)
    assert done.returncode == 0, done.stdout + done.stderr
    return results


def edited_copy(source: Path, dest: Path, torch: str | None = None,
                case: Callable[[dict], Any] | None = None) -> Path:
    """A copy of a results file, as if run on another torch version (a new run id) and/or with each
    case object changed in place by `case`."""
    lines = []
    run_id = None
    for raw in source.read_text().splitlines():
        obj = json.loads(raw)
        if obj["kind"] == "header" and torch:
            obj["stack"]["torch"] = torch
            obj["run_id"] = run_id = f"{obj['run_id']}-torch-{torch}"
        elif obj["kind"] == "case":
            obj["run_id"] = run_id or obj["run_id"]
            if case:
                case(obj)
        lines.append(json.dumps(obj))
    dest.write_text("\n".join(lines) + "\n")
    return dest


def failing(case_id: str, message: str = "RuntimeError: made to fail for a test") -> Callable[[dict], None]:
    """A case edit: `case_id` ends in a runtime error with `message` (other cases untouched)."""
    def edit(case: dict) -> None:
        if case["case_id"] == case_id:
            case.update(status="runtime_error", stage="execute", numerics=None,
                        failure={"error_type": "RuntimeError", "message": message, "sample": None,
                                 "category": "test", "code": "T001"})
    return edit


def tree(path: Path) -> dict[str, str]:
    """Every file under `path` with the sha256 of its bytes (to prove nothing changed)."""
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}
