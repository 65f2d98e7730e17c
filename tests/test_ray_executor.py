"""The Ray executor's refusals and records, without a cluster (these run in every environment)."""

import os
import subprocess
import sys

import pytest

from opsuite import ray_executor
from opsuite.isolation import WorkerConfig, WorkerStartError
from opsuite.record import Status
from opsuite.results import load

NODES = [{"node_id": "a1" * 28, "hostname": "trn-a", "address": "10.0.0.1", "slots": 32,
          "stack": {"torch": "2.13.0", "neuronx_cc": "2.28", "instance_type": "trn2.48xlarge"}},
         {"node_id": "b2" * 28, "hostname": "trn-b", "address": "10.0.0.2", "slots": 32,
          "stack": {"torch": "2.13.0", "neuronx_cc": "2.27", "instance_type": "trn2.48xlarge"}}]


def _opsuite_run(*args, hide_ray=False):
    """`opsuite run` in a fresh interpreter; with hide_ray, as where Ray is not installed."""
    hide = "import sys; sys.modules['ray'] = None; " if hide_ray else ""
    code = f"{hide}import sys; from opsuite.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, "run", "--backend", "cpu", *args], capture_output=True,
                          text=True, timeout=120)


def test_without_ray_the_executor_names_the_extra_to_install(tmp_path):
    done = _opsuite_run("--executor", "ray", "--results", str(tmp_path / "r.jsonl"), hide_ray=True)
    assert (done.returncode, done.stderr.splitlines()) == (2, [f"opsuite: {ray_executor.RAY_MISSING}"])
    assert "pip install 'opsuite[ray]'" in ray_executor.RAY_MISSING
    assert not (tmp_path / "r.jsonl").exists()


@pytest.mark.parametrize("args,message", [
    (["--executor", "ray", "-n", "2"], "--executor ray runs one case worker per slot of the Ray cluster; -n "
                                       "(pytest-xdist) cannot be given with it"),
    (["--address", "auto"], "--address names a Ray cluster: it needs --executor ray"),
    (["--executor", "dask"], "--executor must be one of local, ray, not 'dask'"),
])
def test_what_cannot_run_is_refused_in_one_line(args, message, tmp_path):
    done = _opsuite_run(*args, "--results", str(tmp_path / "r.jsonl"))
    assert (done.returncode, done.stderr.splitlines()) == (2, [f"opsuite: {message}"])


@pytest.mark.main
def test_without_an_address_a_ray_instance_of_its_own_on_loopback_runs_the_cases(tmp_path):
    results = tmp_path / "r.jsonl"
    done = _opsuite_run("--executor", "ray", "--kinds", "ops", "--dtypes", "float32", "--directions", "forward",
                        "-k", "ops/add/ or ops/sub/", "--results", str(results))
    assert done.returncode == 0, done.stdout + done.stderr
    run = load(results)
    assert {r.case_id: r.status.value for r in run.records} == {"ops/add/float32/forward": "pass",
                                                              "ops/sub/float32/forward": "pass"}
    [node] = run.header["nodes"]
    assert (node["address"], node["slots"]) == ("127.0.0.1", os.cpu_count())  # one case worker per CPU


@pytest.mark.main
def test_no_cluster_at_the_address_is_said_in_one_line_before_any_case(tmp_path):
    done = _opsuite_run("--executor", "ray", "--address", "auto", "--results", str(tmp_path / "r.jsonl"))
    assert done.returncode == 3, done.stdout + done.stderr
    said = [line for line in (done.stdout + done.stderr).splitlines() if "cannot join" in line]
    assert len(said) == 1 and "cannot join the Ray cluster at auto: " in said[0], done.stdout + done.stderr
    assert not (tmp_path / "r.jsonl").exists()


def test_nodes_that_disagree_name_each_differing_field():
    assert ray_executor.stack_differences(NODES) == [
        "neuronx_cc: '2.28' on trn-a 10.0.0.1 (node a1a1a1a1), '2.27' on trn-b 10.0.0.2 (node b2b2b2b2)"]
    assert ray_executor.stack_differences([NODES[0], {**NODES[1], "stack": NODES[0]["stack"]}]) == []
    missing = {**NODES[1], "stack": {"torch": "2.13.0", "neuronx_cc": "2.28"}}
    assert ray_executor.stack_differences([NODES[0], missing]) == [
        "instance_type: 'trn2.48xlarge' on trn-a 10.0.0.1 (node a1a1a1a1), None on trn-b 10.0.0.2 (node b2b2b2b2)"]


def test_a_case_lost_with_two_nodes_is_a_crash_naming_both():
    record = ray_executor.lost_twice("ops/add/float32/forward", "neuron", NODES)
    assert record.status is Status.CRASH
    assert record.failure.error_type == "NodeLost"
    assert record.failure.message == ("the Ray node running it died, twice: trn-a 10.0.0.1 (node a1a1a1a1) and "
                                      "trn-b 10.0.0.2 (node b2b2b2b2)")
    assert record.extra == {"lost_on": ["a1a1a1a1", "b2b2b2b2"]}


def test_a_slot_is_a_neuron_core_on_neuron_backends_and_a_cpu_elsewhere():
    for backend in ("neuron", "neuron-compile", "neuron-xla"):
        assert ray_executor.slot_options(backend) == {"num_cpus": 0, "resources": {"neuron_cores": 1}}
    assert ray_executor.slot_options("xla") == ray_executor.slot_options("cpu") == {"num_cpus": 1}


def test_a_run_on_nodes_of_two_stacks_is_refused_before_any_case(tmp_path):
    recorded = []
    runner = ray_executor.RayRunner(WorkerConfig("neuron", 2), 60, "auto", recorded.append)
    runner._slots = [ray_executor._Slot(actor=None, node={**node, "env": {}}) for node in NODES for _ in range(2)]
    with pytest.raises(WorkerStartError) as refused:
        runner._check_one_stack()
    assert str(refused.value) == ("the Ray nodes disagree on the stack, and a run covers one stack: neuronx_cc: "
                                  "'2.28' on trn-a 10.0.0.1 (node a1a1a1a1), '2.27' on trn-b 10.0.0.2 (node b2b2b2b2)")
    assert runner.handshake is None and recorded == []
    runner._slots = [ray_executor._Slot(actor=None, node={**NODES[0], "env": {"NEURON_RT_VISIBLE_CORES": str(i)}})
                     for i in range(3)]
    runner._check_one_stack()
    assert runner.handshake["stack"] == NODES[0]["stack"]
    assert runner.handshake["nodes"] == [{**NODES[0], "node_id": "a1a1a1a1", "slots": 3,
                                          "env": {"NEURON_RT_VISIBLE_CORES": "0"}}]


class _Ref:
    """A case handed to a fake slot: it comes back as a record, or as its actor's death."""

    def __init__(self, case_id, node, dies):
        self.case_id, self.node, self.dies = case_id, node, dies


class _Actor:
    def __init__(self, node, deaths, alive):
        self.node, self.deaths, self.alive = node, deaths, alive
        self.run = self  # `actor.run.remote(case_id)`

    def remote(self, case_id):
        dies = (self.node, case_id) in self.deaths or self.node not in self.alive
        if dies:
            self.alive.discard(self.node)  # a node that dies under one case takes its every slot with it
        return _Ref(case_id, self.node, dies)


@pytest.mark.main
def test_a_lost_node_s_cases_run_once_more_elsewhere_and_a_case_lost_twice_is_a_crash(monkeypatch):
    import ray

    alive = {"a", "b", "c"}
    # Node c dies running y; y goes to the first free slot on another node, a's, and a dies under it too.
    deaths = {("c", "ops/y/float32/forward"), ("a", "ops/y/float32/forward")}
    nodes = {name: {"node_id": name * 56, "hostname": f"trn-{name}", "address": f"10.0.0.{i}", "stack": {}, "env": {}}
             for i, name in enumerate("abc", start=1)}

    def get(ref):
        if ref.dies:
            raise ray.exceptions.ActorDiedError()
        return {"case_id": ref.case_id, "status": "pass", "stage": "done", "backend": "neuron"}

    monkeypatch.setattr(ray, "wait", lambda refs, num_returns: (refs[:1], refs[1:]))
    monkeypatch.setattr(ray, "get", get)
    monkeypatch.setattr(ray, "nodes", lambda: [{"NodeID": n["node_id"], "Alive": name in alive}
                                               for name, n in nodes.items()])
    recorded = []
    runner = ray_executor.RayRunner(WorkerConfig("neuron", 2), 60, "auto", recorded.append)
    runner._slots = [ray_executor._Slot(_Actor(name, deaths, alive), nodes[name]) for name in "bca"]
    cases = [f"ops/{name}/float32/forward" for name in "xyzw"]
    runner.plan(cases)
    records = {case_id: runner.run(case_id) for case_id in cases}

    assert sorted(r.case_id for r in recorded) == sorted(cases)  # each written once, as it came back
    lost = records["ops/y/float32/forward"]
    assert (lost.status.value, lost.failure.message) == ("crash", "the Ray node running it died, twice: trn-c "
                                                         "10.0.0.3 (node cccccccc) and trn-a 10.0.0.1 (node aaaaaaaa)")
    assert {case_id: r.extra.get("ray_node") for case_id, r in records.items() if r.status.value == "pass"} == {
        "ops/x/float32/forward": "bbbbbbbb", "ops/z/float32/forward": "aaaaaaaa", "ops/w/float32/forward": "bbbbbbbb"}
    alive.clear()  # the last node dies too
    runner.plan(["ops/v/float32/forward"])
    with pytest.raises(WorkerStartError, match="every Ray case worker of the run is lost"):
        runner.run("ops/v/float32/forward")
