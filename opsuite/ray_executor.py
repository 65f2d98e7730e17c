"""Run the suite's cases on a Ray cluster (`--executor ray`): one case worker per NeuronCore or CPU of it.

The pytest process stays the driver: it collects, reports and writes the results file as today. What
changes is where cases run. `RayRunner` has `IsolatedRunner`'s interface (start, cases, run, handshake,
close); behind it, one Ray actor per slot of the cluster (a `neuron_cores` unit on Neuron backends, a CPU
elsewhere), each holding an `IsolatedRunner` of its own, so a case that kills its process is a crash record
on that node exactly as in a local run. The driver keeps every slot busy with the next case in collection
order and appends each record to the results file the moment it comes back (`on_record`), whatever case
pytest is waiting for: a killed driver loses nothing finished, and `--resume` continues it.

A node that dies takes its actors and their running cases with it: each such case goes back to the front
of the queue, to be run once more on another node; a case lost twice is recorded as a `crash` naming both
nodes. Before any case runs, every actor reports its case worker's stack: they must agree (one run, one
stack), and the run header lists each node's.

Ray is imported only here, and only when a `RayRunner` starts: it is an optional extra.
"""

from __future__ import annotations

import collections
import importlib.util
import logging
import os
import socket
import sys
from dataclasses import dataclass
from typing import Any, Callable

from opsuite.backends import NEURON_BACKENDS
from opsuite.isolation import STARTUP_TIMEOUT_S, CasesRequest, IsolatedRunner, WorkerConfig, WorkerStartError
from opsuite.record import CaseRecord, Failure, Stage, Status

EXECUTORS = ("local", "ray")  # local: this pytest process's case worker (and xdist's, under -n)
NEURON_RESOURCE = "neuron_cores"  # Ray's own name: it sets NEURON_RT_VISIBLE_CORES for whoever holds one
RAY_MISSING = "--executor ray needs Ray, which is not installed here: pip install 'opsuite[ray]'"
LOST_TWICE_ERROR = "NodeLost"
# Ray takes the machine's outward address for a node unless this is "0" (read when ray is imported); with
# it, every process of a local instance listens on 127.0.0.1 and `ray.init` does not turn a loopback
# address it is given into the outward one. Its name is Ray's (it was made for laptops).
RAY_LOOPBACK = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
# The driver environment a case depends on, given to every case worker (forwarded_env).
FORWARDED_PREFIXES = ("NEURON_", "XLA_", "PJRT_", "OPSUITE_")
NOT_FORWARDED = frozenset({"NEURON_RT_VISIBLE_CORES"})


def check_executor(executor: str, address: str | None, workers: Any) -> None:
    """Raise ValueError (one line) for an executor that cannot run: Ray missing, -n given with it."""
    if executor not in EXECUTORS:
        raise ValueError(f"--executor must be one of {', '.join(EXECUTORS)}, not {executor!r}")
    if executor != "ray":
        if address:
            raise ValueError("--address names a Ray cluster: it needs --executor ray")
        return
    if workers not in (None, 0, "0"):
        raise ValueError("--executor ray runs one case worker per slot of the Ray cluster; -n (pytest-xdist) "
                         "cannot be given with it")
    if importlib.util.find_spec("ray") is None:  # not imported: a local instance sets its loopback first
        raise ValueError(RAY_MISSING)


def slot_options(backend: str) -> dict[str, Any]:
    """What one case worker asks of Ray: a NeuronCore on Neuron backends, a CPU elsewhere."""
    if backend in NEURON_BACKENDS:
        return {"num_cpus": 0, "resources": {NEURON_RESOURCE: 1}}
    return {"num_cpus": 1}


def forwarded_env() -> dict[str, str]:
    """The driver's settings that a case depends on, given to every node's case workers so that the whole
    cluster runs one configuration (the stack check then compares like with like): the Neuron compiler's
    flags and its shared compile cache (`NEURON_COMPILE_CACHE_URL`), XLA's and PJRT's, opsuite's own.
    Not the cores a worker sees: Ray sets `NEURON_RT_VISIBLE_CORES` per actor."""
    return {name: value for name, value in os.environ.items()
            if name.startswith(FORWARDED_PREFIXES) and name not in NOT_FORWARDED}


class CaseActor:
    """One slot of the cluster, as a Ray actor: a case worker (isolation.py) on one node."""

    def __init__(self, config: WorkerConfig, case_timeout_s: float):
        self.runner = IsolatedRunner(config, case_timeout_s)
        self.runner.start()  # it imports the stack while the driver still collects

    def cases(self, request: CasesRequest) -> tuple[list[str], dict[str, Any], dict[str, Any]]:
        """The case ids and catalog facts for `request`, and this slot's node with its worker's stack."""
        import ray

        ids, facts = self.runner.cases(request)
        hello = self.runner.handshake or {}
        node = {"node_id": ray.get_runtime_context().get_node_id(), "hostname": socket.gethostname(),
                "stack": hello.get("stack", {}), "env": hello.get("env", {})}
        return ids, facts, node

    def run(self, case_id: str) -> dict[str, Any]:
        """One case's record, as JSON."""
        return self.runner.run(case_id).to_json()

    def close(self) -> None:
        """Stop the case worker."""
        self.runner.close()


@dataclass(eq=False)
class _Slot:
    actor: Any
    node: dict[str, Any] | None = None  # filled in by the actor's first `cases` answer
    alive: bool = True


def node_label(node: dict[str, Any]) -> str:
    """A node as a person finds it: host, address and Ray's node id (shortened)."""
    return f"{node['hostname']} {node['address']} (node {node['node_id'][:8]})"


def stack_differences(nodes: list[dict[str, Any]]) -> list[str]:
    """The stack fields on which `nodes` disagree, each with its values and where (empty: one stack)."""
    differences = []
    for name in sorted({name for node in nodes for name in node["stack"]}):
        values: dict[str, list[str]] = {}
        for node in nodes:
            values.setdefault(repr(node["stack"].get(name)), []).append(node_label(node))
        if len(values) > 1:
            differences.append(f"{name}: " + ", ".join(f"{value} on {' and '.join(where)}"
                                                        for value, where in values.items()))
    return differences


def lost_twice(case_id: str, backend: str, nodes: list[dict[str, Any]]) -> CaseRecord:
    """The record of a case whose node died under it twice: a crash naming both nodes."""
    return CaseRecord(case_id=case_id, status=Status.CRASH, stage=Stage.PREPARE, backend=backend,
                      failure=Failure(error_type=LOST_TWICE_ERROR,
                                      message="the Ray node running it died, twice: "
                                              + " and ".join(node_label(n) for n in nodes)),
                      extra={"lost_on": [n["node_id"][:8] for n in nodes]})


class RayRunner:
    """Runs cases on the slots of a Ray cluster, in the order planned, and hands each record back as it
    arrives (`on_record`, the results writer) and again to `run` when pytest asks for its case."""

    def __init__(self, config: WorkerConfig, case_timeout_s: float, address: str | None,
                 on_record: Callable[[CaseRecord], None]):
        self.config = config
        self.case_timeout_s = case_timeout_s
        self.address = address
        self.on_record = on_record
        self.handshake: dict[str, Any] | None = None  # the first slot's stack and env, and every node's
        self._slots: list[_Slot] = []
        self._queue: collections.deque[str] = collections.deque()
        self._running: dict[Any, tuple[str, _Slot]] = {}  # Ray object ref -> the case and its slot
        self._done: dict[str, CaseRecord] = {}  # recorded, until pytest asks for them
        self._lost: dict[str, list[dict[str, Any]]] = {}  # case id -> the nodes that died running it

    # -- the interface of IsolatedRunner

    def start(self) -> None:
        """Connect to the cluster (or start a local one) and start one case actor per slot; returns at once."""
        if self._slots:
            return
        if not self.address:  # a Ray instance of this run alone, on this machine, reachable from it only
            if "ray" in sys.modules and os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") != "0":
                raise WorkerStartError("a local Ray instance must be set to listen on 127.0.0.1 before ray is "
                                       "imported: set RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 or give --address")
            os.environ.update(RAY_LOOPBACK)
        import ray

        if not ray.is_initialized():
            try:
                if self.address:
                    ray.init(address=self.address, log_to_driver=False, logging_level=logging.ERROR)
                else:
                    ray.init(address="local", include_dashboard=False, log_to_driver=False,
                             logging_level=logging.ERROR)
            except ConnectionError as exc:  # no cluster at that address
                raise WorkerStartError(f"cannot join the Ray cluster at {self.address}: {exc}") from None
        options = slot_options(self.config.backend)
        unit = next(iter(options.get("resources", {"CPU": 1})))
        count = int(ray.cluster_resources().get(unit, 0))
        if count < 1:
            raise WorkerStartError(f"the Ray cluster has no {unit} resource to run {self.config.backend} cases on"
                                   + (f" (start each node with --resources '{{\"{NEURON_RESOURCE}\": N}}', "
                                      "N NeuronCores)" if unit == NEURON_RESOURCE else ""))
        actor = ray.remote(CaseActor).options(max_restarts=0, max_task_retries=0,
                                              runtime_env={"env_vars": forwarded_env()}, **options)
        self._slots = [_Slot(actor.remote(self.config, self.case_timeout_s)) for _ in range(count)]

    def cases(self, request: CasesRequest) -> tuple[list[str], dict[str, Any]]:
        """The case ids for `request`, asked of every slot (each builds that catalog before its first case).

        The first call checks that every slot runs the same stack; WorkerStartError when they do not, or
        when a slot cannot start.
        """
        self.start()  # first: a local instance's loopback setting must precede the import of ray
        import ray

        refs = [slot.actor.cases.remote(request) for slot in self._slots]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=STARTUP_TIMEOUT_S)
        if len(ready) < len(refs):
            raise WorkerStartError(f"{len(refs) - len(ready)} of the {len(refs)} Ray case workers did not start "
                                   f"within {STARTUP_TIMEOUT_S:g} s (is a {self.config.backend} slot held elsewhere?)")
        try:
            replies = ray.get(refs)
        except ray.exceptions.RayError as exc:  # a case worker that cannot open its backend, an actor that died
            cause = str(getattr(exc, "cause", None) or exc).strip().splitlines()
            raise WorkerStartError(f"a Ray case worker could not start: {cause[0] if cause else type(exc).__name__}") \
                from None
        if self.handshake is None:
            addresses = {node["NodeID"]: node["NodeManagerAddress"] for node in ray.nodes()}
            for slot, (_, _, node) in zip(self._slots, replies):
                slot.node = {**node, "address": addresses.get(node["node_id"])}
            self._check_one_stack()
        ids, facts, _ = replies[0]
        return ids, facts

    def plan(self, case_ids: list[str]) -> None:
        """The cases to run, in this order (the collection's); they start at once on the free slots."""
        self._queue.extend(case_ids)
        self._dispatch()

    def run(self, case_id: str) -> CaseRecord:
        """The record of `case_id`, once it is back (recording every other one that comes back meanwhile)."""
        import ray

        if case_id not in self._done and case_id not in self._queue \
                and case_id not in {case for case, _ in self._running.values()}:
            self._queue.appendleft(case_id)  # not planned: run it next
        while case_id not in self._done:
            self._dispatch()
            if not self._running:
                raise WorkerStartError("every Ray case worker of the run is lost (their nodes died); the cases "
                                       "finished are recorded: continue the run with --resume")
            ready, _ = ray.wait(list(self._running), num_returns=1)
            self._collect(ready[0])
        return self._done.pop(case_id)

    def close(self) -> None:
        """Stop the case actors and leave the cluster (a local instance stops with it)."""
        if not self._slots:
            return
        import ray

        alive = [slot.actor for slot in self._slots if slot.alive]
        ray.wait([actor.close.remote() for actor in alive], num_returns=len(alive), timeout=30)
        for actor in alive:
            ray.kill(actor)
        self._slots = []
        ray.shutdown()

    # -- scheduling

    def _check_one_stack(self) -> None:
        nodes: dict[str, dict[str, Any]] = {}
        for slot in self._slots:
            nodes.setdefault(slot.node["node_id"], {**slot.node, "slots": 0})["slots"] += 1
        differences = stack_differences(list(nodes.values()))
        if differences:
            raise WorkerStartError("the Ray nodes disagree on the stack, and a run covers one stack: "
                                   + "; ".join(differences))
        first = self._slots[0].node
        self.handshake = {"stack": first["stack"], "env": first["env"],
                          "nodes": [{**node, "node_id": node["node_id"][:8]} for node in nodes.values()]}

    def _dispatch(self) -> None:
        """Give each idle slot the first queued case it may run."""
        busy = {id(slot) for _, slot in self._running.values()}
        for slot in self._slots:
            if not slot.alive or id(slot) in busy or not self._queue:
                continue
            case_id = self._next_for(slot)
            if case_id is not None:
                self._running[slot.actor.run.remote(case_id)] = (case_id, slot)

    def _next_for(self, slot: _Slot) -> str | None:
        """The first queued case not lost on `slot`'s node (unless no live slot is on another node)."""
        nodes_alive = {s.node["node_id"] for s in self._slots if s.alive}
        for case_id in self._queue:
            lost_on = {n["node_id"] for n in self._lost.get(case_id, ())}
            if slot.node["node_id"] not in lost_on or nodes_alive <= lost_on:
                self._queue.remove(case_id)
                return case_id
        return None

    def _collect(self, ref: Any) -> None:
        """Take one finished (or lost) case: record it, or queue it again after its node died."""
        import ray

        case_id, slot = self._running.pop(ref)
        try:
            record = CaseRecord.from_json(ray.get(ref))
        except ray.exceptions.RayActorError:
            self._bury(slot)
            lost = self._lost.setdefault(case_id, [])
            lost.append(slot.node)
            if len(lost) < 2:
                self._queue.appendleft(case_id)
                return
            record = lost_twice(case_id, self.config.backend, lost)
        except ray.exceptions.RayTaskError as exc:  # the slot's case worker cannot start again
            raise WorkerStartError(f"{node_label(slot.node)}: {exc.cause}") from None
        else:
            record.extra["ray_node"] = slot.node["node_id"][:8]
            if case_id in self._lost:
                record.extra["lost_on"] = [n["node_id"][:8] for n in self._lost[case_id]]
        self._dispatch()  # the freed slot starts its next case before this one is written
        self.on_record(record)
        self._done[case_id] = record

    def _bury(self, slot: _Slot) -> None:
        """A slot's actor died: mark it, and every slot on a node Ray no longer counts alive, as gone."""
        import ray

        slot.alive = False
        alive = {node["NodeID"] for node in ray.nodes() if node["Alive"]}
        for other in self._slots:
            if other.node["node_id"] not in alive:
                other.alive = False
