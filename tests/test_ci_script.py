"""`.ci/run`'s refusals before it installs anything: what is wrong with the machine, said in one line."""

import os
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.main  # a shell script: one environment is enough

ROOT = Path(__file__).resolve().parents[1]


def _ci(tmp_path: Path, free_kib: int, tox_dir: Path) -> subprocess.CompletedProcess:
    """`.ci/run` with `df` answering that `free_kib` KiB are free, and `python3` and `tox` that only
    fail: a script that got past its refusals fails at once instead of building 9 GB of environments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    commands = {"df": "echo 'Filesystem 1024-blocks Used Available Capacity Mounted on'\n"
                      f"echo 'fake 999999999 0 {free_kib} 0% /'",
                "python3": "echo 'ci test: not refused' >&2; exit 97", "tox": "exit 97"}
    for name, body in commands.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "OPSUITE_TOX_DIR": str(tox_dir)}
    return subprocess.run(["bash", str(ROOT / ".ci" / "run")], env=env, capture_output=True, text=True, timeout=60)


def test_ci_refuses_a_disk_too_small_for_the_environments(tmp_path):
    tox_dir = tmp_path / "tox"
    tox_dir.mkdir()
    result = _ci(tmp_path, 5 * 1024 * 1024 + 10, tox_dir)
    assert result.returncode == 2
    assert result.stderr.startswith(f"ci: 5 GiB free on the disk of OPSUITE_TOX_DIR ({tox_dir})")
    assert "need about 12 GiB" in result.stderr
    assert result.stdout == "" and list(tox_dir.iterdir()) == []  # nothing installed, nothing run


def test_ci_refuses_an_environment_directory_that_is_not_empty(tmp_path):
    tox_dir = tmp_path / "tox"
    (tox_dir / "xla").mkdir(parents=True)
    result = _ci(tmp_path, 100 * 1024 * 1024, tox_dir)
    assert result.returncode == 2
    assert "is not empty; the README's commands must set up from nothing" in result.stderr
    assert [p.name for p in tox_dir.iterdir()] == ["xla"]
