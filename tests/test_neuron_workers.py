"""One worker per NeuronCore: `-n auto` counts the cores neuron-ls reports, and each pytest-xdist worker
(and the process it spawns to run cases) is pinned to a core of its own. neuron-ls is the test double's."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from opsuite.backends import neuron_tools

pytestmark = pytest.mark.main

ROOT = Path(__file__).resolve().parent.parent
DOUBLE = ROOT / "tests" / "neuron_double"

# Run by each worker (`--dist each`): records the core of the worker and of a process it spawns, as the
# worker that runs cases is spawned.
PROBE = '''
import json, multiprocessing, os, pathlib


def visible_cores():
    return os.environ.get("NEURON_RT_VISIBLE_CORES")


def test_record_core():
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        spawned = pool.apply(visible_cores)
    out = pathlib.Path(os.environ["PROBE_OUT"]) / (os.environ["PYTEST_XDIST_WORKER"] + ".json")
    out.write_text(json.dumps({"worker": visible_cores(), "spawned": spawned}))
'''


def run_pytest(tmp_path, *args, visible=None):
    (tmp_path / "test_probe.py").write_text(PROBE)
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "PROBE_OUT": str(out), "PATH": f"{DOUBLE / 'bin'}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": os.pathsep.join([str(DOUBLE), str(ROOT), str(tmp_path)])}
    env.pop("NEURON_RT_VISIBLE_CORES", None)
    if visible:
        env["NEURON_RT_VISIBLE_CORES"] = visible
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "opsuite.pytest_plugin", "-p", "no:cacheprovider",
                           "--rootdir", str(tmp_path), "--backend", "neuron", "--dist", "each", *args,
                           str(tmp_path / "test_probe.py")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    return done, {p.stem: json.loads(p.read_text()) for p in out.glob("*.json")}


def test_auto_gives_each_core_its_own_worker(tmp_path):
    done, seen = run_pytest(tmp_path, "-n", "auto")
    assert done.returncode == 0, done.stdout + done.stderr
    # The double's neuron-ls reports two devices with three cores in all (this machine has two CPUs).
    assert seen == {f"gw{i}": {"worker": str(i), "spawned": str(i)} for i in range(3)}


def test_workers_share_out_the_visible_cores(tmp_path):
    done, seen = run_pytest(tmp_path, "-n", "auto", visible="4,6")
    assert done.returncode == 0, done.stdout + done.stderr
    assert {worker: cores["spawned"] for worker, cores in seen.items()} == {"gw0": "4", "gw1": "6"}


@pytest.mark.parametrize("value,cores", [("3", [3]), ("0-3", [0, 1, 2, 3]), ("0-1, 4", [0, 1, 4])])
def test_core_lists(value, cores):
    assert neuron_tools.parse_cores(value) == cores


def test_a_worker_without_a_core_is_refused():
    assert neuron_tools.core_for_worker(1, "8-9") == "9"
    with pytest.raises(ValueError, match="no NeuronCore of its own"):
        neuron_tools.core_for_worker(2, "8-9")
    with pytest.raises(ValueError, match="not a core list"):
        neuron_tools.parse_cores("all")
