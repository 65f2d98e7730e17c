"""`opsuite run --executor ray` on a real Ray cluster of two nodes on this machine, on 127.0.0.1 only.

Each node has one NeuronCore (Ray's `neuron_cores` resource, one unit) and runs the `neuron` backends of
the test double (tests/neuron_double), put on every Ray process's path as on a Neuron host. The cluster
is Ray's own test cluster (`ray.cluster_utils.Cluster`), its processes children of this one. The tests
run in file order: the node-loss test removes a node, so it comes last.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from opsuite.results import load

pytestmark = pytest.mark.main

ROOT = Path(__file__).resolve().parent.parent
DOUBLE = ROOT / "tests" / "neuron_double"
LOOPBACK = {"127.0.0.1", "::ffff:127.0.0.1", "::1"}
# For every Ray process of the cluster, and the drivers: Ray takes the machine's outward address for a
# node unless RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER is 0 (then every server listens on 127.0.0.1, and
# `ray.init("127.0.0.1:port")` is not turned into the outward address, where nothing listens: a hang).
ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0",
       "PYTHONPATH": os.pathsep.join([str(DOUBLE), str(ROOT)]),
       "PATH": f"{DOUBLE / 'bin'}{os.pathsep}{os.environ['PATH']}",
       "OPSUITE_DOUBLE_CRASH": "aten::exp.out",  # exp's case kills its case worker
       "OPSUITE_DOUBLE_COMPILE_S": "1"}  # neuron-compile's graphs compile for a second, as neuronx-cc takes its time
# Given to the driver only: the executor hands it to every case worker of the cluster.
SHARED_CACHE = {"NEURON_COMPILE_CACHE_URL": "/tmp/opsuite-test-shared-neuron-cache"}
NODE = {"node_ip_address": "127.0.0.1", "include_dashboard": False, "num_cpus": 1, "resources": {"neuron_cores": 1},
        "object_store_memory": 80 * 1024 * 1024}
# A lost node is noticed within a second or two (Ray's default is half a minute).
FAST_HEALTH_CHECKS = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 300,
                      "health_check_timeout_ms": 300, "health_check_failure_threshold": 3}
# pass, fallback, compile_error, runtime_error and a crash, in the double's neuron backend
EAGER = ["--backend", "neuron", "--kinds", "ops", "--dtypes", "float32",
         "-k", "ops/sin/ or ops/cos/ or ops/tan/ or ops/atan/ or ops/exp/float32/forward or ops/mul/"]
COMPILED = ["--backend", "neuron-compile", "--kinds", "ops", "--dtypes", "float32", "--directions", "forward",
            "-k", "ops/sin/ or ops/cos/ or ops/neg/ or ops/add/ or ops/mul/ or ops/sub/ or ops/atan2/"]


@pytest.fixture(scope="module")
def cluster():
    """A head node and a worker node, each with one NeuronCore, on 127.0.0.1."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in ENV.items():
            patch.setenv(name, value)
        import ray
        from ray.cluster_utils import Cluster

        assert not ray._private.ray_constants.ENABLE_RAY_CLUSTER, "ray was imported before its loopback setting"
        cluster = Cluster(initialize_head=True, head_node_args={**NODE, "_system_config": FAST_HEALTH_CHECKS})
        cluster.add_node(**NODE)
        try:
            yield cluster
        finally:
            cluster.shutdown()


def _opsuite(*args, cwd):
    return subprocess.run([sys.executable, "-m", "opsuite.cli", "run", *args], cwd=cwd, env={**os.environ, **ENV},
                          capture_output=True, text=True, timeout=600)


def _statuses(run):
    return {r.case_id: r.status.value for r in run.records}


def _node_ids(cluster):
    return [cluster.head_node.node_id[:8], *(node.node_id[:8] for node in cluster.worker_nodes)]


def test_a_cluster_run_killed_and_resumed_records_what_a_single_process_run_does(cluster, tmp_path):
    alone, on_ray = tmp_path / "alone.jsonl", tmp_path / "ray.jsonl"
    ray = ["--executor", "ray", "--address", cluster.address]
    done = _opsuite(*EAGER, "--results", str(alone), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    single = load(alone)
    # The driver is killed once two cases are back: what came back is in the file, and --resume finishes it.
    proc = subprocess.Popen([sys.executable, "-m", "opsuite.cli", "run", *EAGER, *ray, "--results", str(on_ray)],
                            cwd=tmp_path, env={**os.environ, **ENV}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and (not on_ray.exists() or on_ray.read_bytes().count(b"\n") < 3):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver, and nothing of the cluster
    proc.wait()
    before = load(on_ray)
    assert 2 <= len(before.records) < len(single.records)
    done = _opsuite("--resume", str(on_ray), *ray, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    distributed = load(on_ray)
    assert distributed.header == before.header
    assert distributed.records[:len(before.records)] == before.records

    assert _statuses(distributed) == _statuses(single)
    assert set(_statuses(single).values()) >= {"pass", "fallback", "compile_error", "runtime_error", "crash"}
    # The case that kills its case worker is a crash record on its node; the run went on.
    crash = next(r for r in distributed.records if r.case_id == "ops/exp/float32/forward")
    assert crash.status.value == "crash" and "SIGSEGV" in crash.failure.message
    # One header, listing both nodes with the stack each one's case worker reported: the same one.
    nodes = distributed.header["nodes"]
    assert sorted(node["node_id"] for node in nodes) == sorted(_node_ids(cluster))
    assert all(node["slots"] == 1 and node["address"] == "127.0.0.1" for node in nodes)
    assert all(node["stack"] == single.header["stack"] for node in nodes)
    assert distributed.header["stack"] == single.header["stack"]
    assert distributed.header["options"]["executor"] == "ray"
    # Both nodes ran cases; each NeuronCore slot was given its core by Ray.
    assert {r.extra["ray_node"] for r in distributed.records} == set(_node_ids(cluster))
    assert all(node["env"]["NEURON_RT_VISIBLE_CORES"] == "0" for node in nodes)


def test_the_cluster_listens_on_loopback_only(cluster):
    import psutil  # Ray's own copy (ray/thirdparty_files), on the path once ray is imported

    nodes = cluster.list_all_nodes()
    assert len(nodes) == 2
    assert {node.node_ip_address for node in nodes} == {"127.0.0.1"}
    assert cluster.address.startswith("127.0.0.1:")
    listening = {}
    for process in psutil.Process().children(recursive=True):  # every process the nodes started
        try:
            for conn in process.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN:
                    listening.setdefault(conn.laddr.ip, []).append(f"{process.name()}:{conn.laddr.port}")
        except psutil.NoSuchProcess:
            continue
    assert any("gcs_server" in where for sockets in listening.values() for where in sockets)  # it sees them
    assert set(listening) <= LOOPBACK, listening


def test_a_node_lost_mid_run_has_its_cases_retried_on_the_other(cluster, tmp_path):
    results = tmp_path / "lost.jsonl"
    head, worker = _node_ids(cluster)
    proc = subprocess.Popen([sys.executable, "-m", "opsuite.cli", "run", *COMPILED, "--executor", "ray",
                             "--address", cluster.address, "--results", str(results)],
                            cwd=tmp_path, env={**os.environ, **ENV, **SHARED_CACHE}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    # When the worker node's first case is written, the driver has already given it its next one.
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not any(
            json.loads(line).get("extra", {}).get("ray_node") == worker
            for line in (results.read_text().splitlines()[1:] if results.exists() else ())):
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()[0]
    cluster.remove_node(next(iter(cluster.worker_nodes)), allow_graceful=False)
    output = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, output

    run = load(results)
    assert len(run.records) == run.header["catalog"]["cases"] == 7  # every case, once
    retried = [r for r in run.records if r.extra.get("lost_on")]
    assert retried and all(r.extra == {**r.extra, "lost_on": [worker], "ray_node": head} for r in retried)
    assert all(r.extra["ray_node"] == head for r in run.records[run.records.index(retried[0]):])
    assert not [r for r in run.records if r.status.value == "crash"]
    assert {node["node_id"] for node in run.header["nodes"]} == {head, worker}
    # The driver's compile cache (set for the driver only, not in the cluster's processes) reached every
    # node's case worker: the hosts of a run share one cache.
    assert all(node["env"]["NEURON_COMPILE_CACHE_URL"] == SHARED_CACHE["NEURON_COMPILE_CACHE_URL"]
               for node in run.header["nodes"])
