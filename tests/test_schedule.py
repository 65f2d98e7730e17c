"""The schedule: expected case times from the latest snapshot, longest-first order, balanced shards."""

import os
import random
import subprocess
import sys
from types import SimpleNamespace

import pytest

from opsuite import pytest_plugin, schedule
from opsuite.matrix import MATRIX_ENV
from shard_support import matrix_with, write_results

ROOT = pytest_plugin.opsuite.CASES_DIR.parent
# Four real cpu cases (a -k of case ids, as matrix_support.SELECTION does).
FOUR = ["ops/add/float32/forward", "ops/softmax/float32/forward", "ops/abs/float32/forward",
        "ops/sub/float32/forward"]


def test_shard_parse():
    assert schedule.Shard.parse("2/8") == schedule.Shard(2, 8)
    assert str(schedule.Shard.parse("1/1")) == "1/1"
    for bad in ("0/2", "3/2", "2", "a/b", "-1/2", "1/0", ""):
        with pytest.raises(ValueError, match="--shard must be K/N"):
            schedule.Shard.parse(bad)


def test_expected_times_come_from_the_latest_snapshot_of_the_backend(tmp_path):
    matrix = matrix_with(tmp_path, ("2.12.0", {"ops/add/float32/forward": 9.0}),
                         ("2.13.0", {"ops/add/float32/forward": 2.5, "models/tiny_llama/float32/forward": 40.0}))
    assert schedule.expected_times("cpu", matrix) == {"ops/add/float32/forward": 2.5,
                                                      "models/tiny_llama/float32/forward": 40.0}
    assert schedule.expected_times("xla", matrix) == {}  # no snapshot of that backend
    assert schedule.expected_times("cpu", tmp_path / "nowhere") == {}


def test_expected_times_count_the_samples_a_run_takes(tmp_path):
    matrix = matrix_with(tmp_path, ("2.13.0", {"ops/add/float32/forward": 10.0}), samples_run=10)
    assert schedule.expected_times("cpu", matrix) == {"ops/add/float32/forward": 10.0}
    assert schedule.expected_times("cpu", matrix, samples=2) == {"ops/add/float32/forward": 2.0}
    assert schedule.expected_times("cpu", matrix, samples=20) == {"ops/add/float32/forward": 10.0}


def test_unknown_cases_get_their_kind_median():
    times = {"ops/a/float32/forward": 1.0, "ops/b/float32/forward": 3.0, "ops/c/float32/forward": 8.0,
             "models/m/float32/forward": 50.0}
    expected = schedule.estimate(["ops/a/float32/forward", "ops/new/float32/forward", "models/n/float32/train",
                                  "blocks/x/float32/forward"], times)
    assert expected == {"ops/a/float32/forward": 1.0, "ops/new/float32/forward": 3.0,  # median of ops
                        "models/n/float32/train": 50.0,
                        "blocks/x/float32/forward": 5.5}  # no blocks known: the median of every case
    assert set(schedule.estimate(["ops/a/float32/forward"], {}).values()) == {1.0}


def _random_times(count=500, seed=7):
    rng = random.Random(seed)
    kinds = ["ops"] * 8 + ["blocks", "models"]
    return {f"{rng.choice(kinds)}/case{i}/float32/forward": round(rng.lognormvariate(0, 1.5), 3) for i in range(count)}


@pytest.mark.parametrize("count", [1, 2, 7, 64])
def test_shards_are_disjoint_cover_everything_and_are_balanced(count):
    times = _random_times()
    shards = schedule.split(list(times), times, count)
    assert len(shards) == count
    flat = [case for shard in shards for case in shard]
    assert len(flat) == len(set(flat)) and set(flat) == set(times)
    loads = [sum(times[case] for case in shard) for shard in shards]
    # Greedy onto the least-loaded part: no part exceeds another by more than one case's time.
    assert max(loads) - min(loads) <= max(times.values()) + 1e-9
    assert max(loads) <= 1.05 * max(sum(loads) / count, max(times.values()))
    for shard in shards:
        assert shard == schedule.longest_first(shard, times)


def test_shards_are_deterministic_whatever_the_input_order():
    times = _random_times()
    ids = list(times)
    first = schedule.split(ids, times, 5)
    random.Random(1).shuffle(ids)
    assert schedule.split(ids, times, 5) == first
    equal = dict.fromkeys(times, 1.0)  # ties everywhere: broken by case id
    assert schedule.split(list(reversed(ids)), equal, 3) == schedule.split(sorted(ids), equal, 3)


class _Item:
    """A pytest item as the plugin reads it: hashable, with its parameters."""

    def __init__(self, case_id):
        self.callspec = SimpleNamespace(params={"case_id": case_id})


def _fake_session(case_ids, shard=None):
    """A config and items as pytest hands them to the plugin's ordering."""
    config = SimpleNamespace(stash=pytest.Stash(), hook=SimpleNamespace(pytest_deselected=lambda items: None))
    config.stash[pytest_plugin.RUN_KEY] = {"backend": "cpu", "options": {"shard": shard, "samples": "2"}}
    return config, [_Item(case_id) for case_id in case_ids]


def _ids(items):
    return [item.callspec.params["case_id"] for item in items]


def test_without_a_snapshot_the_collection_order_stays(tmp_path, monkeypatch):
    monkeypatch.setenv(MATRIX_ENV, str(tmp_path / "empty"))
    config, items = _fake_session(FOUR)
    pytest_plugin._schedule(config, items)
    assert _ids(items) == FOUR


def test_with_a_snapshot_cases_run_longest_first_and_shards_split_the_run(tmp_path, monkeypatch):
    matrix = matrix_with(tmp_path, ("2.13.0", {"ops/add/float32/forward": 1.0, "ops/softmax/float32/forward": 5.0,
                                               "ops/abs/float32/forward": 3.0, "blocks/mlp/float32/forward": 9.0}))
    monkeypatch.setenv(MATRIX_ENV, str(matrix))
    config, items = _fake_session(FOUR)
    pytest_plugin._schedule(config, items)
    # sub is unknown: the ops median (3.0), after abs on the tie (by case id)
    assert _ids(items) == ["ops/softmax/float32/forward", "ops/abs/float32/forward", "ops/sub/float32/forward",
                           "ops/add/float32/forward"]
    parts = []
    for k in (1, 2):
        config, items = _fake_session(FOUR, shard=f"{k}/2")
        pytest_plugin._schedule(config, items)
        parts.append(_ids(items))
        assert config.stash[pytest_plugin._SELECTION_KEY] == sorted(FOUR)
    assert parts == [["ops/softmax/float32/forward", "ops/add/float32/forward"],  # 5 + 1
                     ["ops/abs/float32/forward", "ops/sub/float32/forward"]]      # 3 + 3


def test_pytest_collects_longest_first_from_the_snapshot(tmp_path):
    """The order reaches pytest's collection (what -n N, --shard and the Ray executor all consume)."""
    matrix = matrix_with(tmp_path, ("2.13.0", {"ops/add/float32/forward": 1.0, "ops/softmax/float32/forward": 5.0,
                                               "ops/abs/float32/forward": 3.0}))
    done = subprocess.run([sys.executable, "-m", "pytest", "cases/test_ops.py", "--backend", "cpu", "--collect-only",
                           "-q", "-p", "no:cacheprovider", "-k", " or ".join(FOUR)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, MATRIX_ENV: str(matrix)})
    assert done.returncode == 0, done.stdout + done.stderr
    collected = [line.split("[", 1)[1].rstrip("]") for line in done.stdout.splitlines() if "::test_case[" in line]
    assert collected == ["ops/softmax/float32/forward", "ops/abs/float32/forward", "ops/sub/float32/forward",
                         "ops/add/float32/forward"]


def test_a_corrupt_snapshot_is_one_clear_error(tmp_path, monkeypatch):
    matrix = matrix_with(tmp_path, ("2.13.0", {"ops/add/float32/forward": 1.0}))
    next(matrix.glob("cpu/*/snapshot.json")).write_text("{not json")
    monkeypatch.setenv(MATRIX_ENV, str(matrix))
    config, items = _fake_session(FOUR)
    with pytest.raises(pytest.UsageError, match="snapshot.json: not valid JSON.*OPSUITE_MATRIX"):
        pytest_plugin._schedule(config, items)



# 32 real cpu cases: enough that xdist's first hand-out would be runs of 4 consecutive items.
THIRTY_TWO = [f"ops/{name}/float32/forward" for name in (
    "addmm addmm.decomposed addmv addbmm baddbmm dot vdot bmm mv addr addcmul addcdiv asin asinh atan atan2 atanh "
    "allclose broadcast_to broadcast_shapes "
    "broadcast_tensors block_diag combinations cartesian_prod cdist ceil cholesky cholesky_inverse "
    "cholesky_solve chunk unsafe_chunk clone").split()]


@pytest.mark.main
def test_xdist_workers_take_the_longest_cases_first(tmp_path):
    """Under -n 2 each worker starts with the longest cases: xdist's load scheduling would hand the first
    worker a run of consecutive items (here the 4 longest) and the second the next 4; the plugin makes it
    hand them out two at a time, so the second worker's first case is the 3rd or 4th longest."""
    times = {case_id: float(number) for number, case_id in enumerate(THIRTY_TWO, start=1)}
    matrix = matrix_with(tmp_path, ("2.13.0", times))
    longest = schedule.longest_first(THIRTY_TWO, times)
    done = subprocess.run([sys.executable, "-m", "pytest", "cases/test_ops.py", "--backend", "cpu", "-n", "2", "-v",
                           "-p", "no:cacheprovider", "-k", " or ".join(THIRTY_TWO),
                           "--results", str(tmp_path / "run.jsonl")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, MATRIX_ENV: str(matrix)})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ran: dict[str, list[str]] = {}
    for line in done.stdout.splitlines():  # "[gw1] [ 4%] PASSED cases/test_ops.py::test_case[ops/...]"
        if line.startswith("[gw") and "::test_case[" in line:
            ran.setdefault(line[1:4], []).append(line.split("::test_case[", 1)[1].split("]", 1)[0])
    assert sorted(case for cases in ran.values() for case in cases) == sorted(THIRTY_TWO)
    assert {cases[0] for cases in ran.values()} <= set(longest[:4])
    assert {cases[0] for cases in ran.values()} & set(longest[2:4])  # not both workers start in the top chunk
