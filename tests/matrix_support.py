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
    done = opsuite("run", "--backend", "cpu", "--kinds", "ops", "-k", SELECTION, "--results", str(results),
                   cwd=directory)
    assert done.returncode == 0, done.stdout + done.stderr
    return results


def edited_copy(source: Path, dest: Path, torch: str | None = None,
                case: Callable[[dict], Any] | None = None, keep: Callable[[dict], bool] | None = None) -> Path:
    """A copy of a results file, as if run on another torch version (a new run id), with each case
    object changed in place by `case`, keeping only the cases `keep` accepts."""
    lines = []
    run_id = None
    for raw in source.read_text().splitlines():
        obj = json.loads(raw)
        if obj["kind"] == "header" and torch:
            obj["stack"]["torch"] = torch
            obj["run_id"] = run_id = f"{obj['run_id']}-torch-{torch}"
        elif obj["kind"] == "case":
            if keep and not keep(obj):
                continue
            obj["run_id"] = run_id or obj["run_id"]
            if case:
                case(obj)
        lines.append(json.dumps(obj))
    dest.write_text("\n".join(lines) + "\n")
    return dest


def failing(*case_ids: str, message: str = "made to fail for a test", code: str = "T001") -> Callable[[dict], None]:
    """A case edit: the named cases end in a runtime error with `message` and `code` (others untouched),
    naming no failing sample, as a record from before `worst_sample` (the notes' words stay short)."""
    def edit(case: dict) -> None:
        if case["case_id"] in case_ids:
            case.update(status="runtime_error", stage="execute", numerics=None,
                        failure={"error_type": "RuntimeError", "message": message, "sample": None,
                                 "category": "test", "code": code})
            case.pop("worst_sample", None)
    return edit


def renamed(old_prefix: str, new_prefix: str) -> Callable[[dict], None]:
    """A case edit: case ids starting with `old_prefix` start with `new_prefix` instead."""
    def edit(case: dict) -> None:
        if case["case_id"].startswith(old_prefix):
            case["case_id"] = new_prefix + case["case_id"][len(old_prefix):]
    return edit


ADD = "ops/add/float32/forward"
SOFTMAX_BACKWARD = "ops/softmax/float32/backward"
BLOCK = "tiny_attention"


@functools.cache
def three_version_matrix() -> tuple[Path, dict[str, str]]:
    """A matrix (read-only to tests) of three cpu snapshots, published out of order, and their ids by torch.

    The real run, then copies as if on torch 2.14.0 (ADD and SOFTMAX_BACKWARD fail, code T001) and
    2.15.0 (ADD passes again, SOFTMAX_BACKWARD fails with code T002, the skipped jiterator cases are gone,
    and a block's cases are new: the real softmax records under `blocks/tiny_attention/`).
    """
    from opsuite.matrix import publish

    real = real_cpu_results()
    work = real.parent / "three-versions"
    work.mkdir()
    v214 = edited_copy(real, work / "v214.jsonl", torch="2.14.0", case=failing(ADD, SOFTMAX_BACKWARD))
    v215 = edited_copy(real, work / "v215.jsonl", torch="2.15.0",
                       case=failing(SOFTMAX_BACKWARD, message="another failure", code="T002"),
                       keep=lambda c: "jiterator" not in c["case_id"])
    blocks = edited_copy(v215, work / "v215-blocks.jsonl", case=renamed("ops/softmax/", f"blocks/{BLOCK}/"),
                         keep=lambda c: c["case_id"].startswith("ops/softmax/"))
    _give_run_id(blocks, "v215-blocks")
    matrix = work / "matrix"
    ids = {}
    for name, files in (("2.15.0", [v215, blocks]), ("real", [real]), ("2.14.0", [v214])):
        ids[name] = publish.publish(files, matrix).id
    return matrix, ids


def _give_run_id(path: Path, run_id: str) -> None:
    """Make a results file a run of its own (a second results file of the same stack)."""
    objs = [json.loads(raw) for raw in path.read_text().splitlines()]
    for obj in objs:
        obj["run_id"] = run_id
    path.write_text("".join(json.dumps(obj) + "\n" for obj in objs))


def tree(path: Path) -> dict[str, str]:
    """Every file under `path` with the sha256 of its bytes (to prove nothing changed)."""
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}
