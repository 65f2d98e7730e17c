"""Isolation: a case that kills or hangs its worker is recorded, and the run goes on."""

from importlib import metadata

import pytest

from opsuite.isolation import CasesRequest, IsolatedRunner, WorkerConfig, WorkerStartError, _announce
from opsuite.record import CaseRecord, Failure, Stage, Status


def test_timeout_is_recorded_and_the_next_case_runs(tmp_path):
    with IsolatedRunner(WorkerConfig("cpu", 2, ("ops",)), case_timeout_s=0.001, log_dir=tmp_path) as runner:
        record = runner.run("ops/linalg.svd/float32/backward")
        assert record.status is Status.TIMEOUT
        assert "budget" in record.failure.message
        runner.case_timeout_s = 120
        after = runner.run("ops/add/float32/forward")
        assert after.status is Status.PASS
        assert runner.starts == 2  # the hung worker was replaced
        assert runner.handshake["stack"]["torch"]


def test_worker_lists_its_catalog_and_refuses_an_unknown_kind(tmp_path):
    with IsolatedRunner(WorkerConfig("cpu", 2), case_timeout_s=120, log_dir=tmp_path) as runner:
        ids, facts = runner.cases(CasesRequest("ops", ("float32",), ("forward",)))
        assert "ops/add/float32/forward" in ids
        assert all(i.endswith("/float32/forward") for i in ids)
        assert facts["op_db_size"] > 600
        every, _ = runner.cases(CasesRequest("ops"))
        assert set(ids) < set(every) and "ops/add/bfloat16/backward" in every
        blocks, block_facts = runner.cases(CasesRequest("blocks", ("bfloat16",)))
        assert "blocks/norm.rmsnorm/bfloat16/backward" in blocks
        assert block_facts["transformers"] == metadata.version("transformers")
        with pytest.raises(WorkerStartError, match="'nope' catalog cannot be built: KeyError"):
            runner.cases(CasesRequest("nope"))
        assert runner.run("ops/add/float32/forward").status is Status.PASS  # the same worker goes on
        assert runner.starts == 1


def test_unknown_backend_fails_to_start(tmp_path):
    runner = IsolatedRunner(WorkerConfig("no-such-backend", 2, ("ops",)), case_timeout_s=60, log_dir=tmp_path)
    with pytest.raises(WorkerStartError, match="unknown backend"):
        runner.run("ops/add/float32/forward")


@pytest.mark.xla
def test_crashing_case_is_recorded_and_the_run_goes_on(tmp_path):
    # On XLA:CPU, torch.roll's first OpInfo sample (an empty tensor) dies of SIGFPE inside the runtime.
    with IsolatedRunner(WorkerConfig("xla", 2, ("ops",)), case_timeout_s=300, log_dir=tmp_path) as runner:
        crashed = runner.run("ops/roll/float32/forward")
        assert crashed.status is Status.CRASH
        assert "SIGFPE" in crashed.failure.message
        assert crashed.stage is Stage.EXECUTE
        # The worker said which sample it was about to run: the crash names it.
        assert crashed.worst_sample == {"index": 0, "label": crashed.failure.sample}
        assert crashed.failure.sample == "(Tensor[0, 0, 0]:float32, 0, 0)"  # an empty tensor
        assert crashed.samples == [{"index": 0, "status": "crash", "stage": "execute"}]
        after = runner.run("ops/add/float32/forward")
        assert after.status is Status.PASS
        assert after.compiles and after.compiles > 0
        assert runner.starts == 2


def test_a_crash_record_names_the_sample_the_worker_announced(tmp_path):
    runner = IsolatedRunner(WorkerConfig("cpu", None), case_timeout_s=60, log_dir=tmp_path)
    runner._sample_file = tmp_path / "sample.json"
    done = [{"index": 0, "status": "pass", "verdict": "close", "max_abs_err": 0.0, "ratio": 1.0}]
    _announce(str(runner._sample_file), {"case_id": "ops/x/float32/forward", "index": 1, "label": "(Tensor[3])",
                                         "done": done, "available": 5})

    def crash(case_id):
        return CaseRecord(case_id=case_id, status=Status.CRASH, stage=Stage.EXECUTE, backend="cpu",
                          failure=Failure(error_type="Crash", message="worker process killed by SIGSEGV"))

    named = runner._name_sample(crash("ops/x/float32/forward"))
    assert named.failure.sample == "(Tensor[3])" and named.worst_sample == {"index": 1, "label": "(Tensor[3])"}
    assert named.samples == [*done, {"index": 1, "status": "crash", "stage": "execute"}]
    assert (named.samples_run, named.samples_available) == (2, 5)
    # A note left by an earlier case names nothing.
    other = runner._name_sample(crash("ops/y/float32/forward"))
    assert other.failure.sample is None and other.samples == []


def test_a_restarted_worker_rebuilds_its_catalog_outside_the_next_case_budget(tmp_path):
    # The pytest plugin's runner knows no kinds when it starts: the catalog comes from the first case's kind.
    with IsolatedRunner(WorkerConfig("cpu", 2), case_timeout_s=300, log_dir=tmp_path) as runner:
        assert runner.run("ops/add/float32/forward").status is Status.PASS
        # The worker dies (as in a crash); building the ops catalog again takes seconds, the next cases
        # far less: with a short budget, they must still run, not time out in stage prepare.
        runner._proc.kill()
        runner._proc.join()
        runner.case_timeout_s = 2.0
        records = [runner.run(case_id) for case_id in ("ops/add/float32/forward", "ops/sub/float32/forward")]
        assert [(r.status, r.stage) for r in records] == [(Status.PASS, Stage.DONE)] * 2, \
            [r.failure for r in records]
        assert runner.starts == 2
