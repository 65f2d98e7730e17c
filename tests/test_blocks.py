"""Transformer blocks and tiny models as cases: the catalog, and a few cases end to end on cpu and XLA:CPU."""

import importlib.util

import pytest
import torch
from torch.utils import _pytree as pytree

from opsuite import cli, execute
from opsuite.backends.cpu import CpuBackend
from opsuite.catalog import Case, build_catalog
from opsuite.isolation import IsolatedRunner, WorkerConfig
from opsuite.record import PASSING_VERDICTS, Status

FAMILIES = {"llama", "qwen3", "mistral", "mixtral", "gpt2", "bert", "t5"}



@pytest.fixture(scope="module")
def catalog():
    return build_catalog(["blocks", "models"])


def _run(catalog, case_id, backend, samples=2):
    case = catalog.get(case_id)
    return execute.run_case(case, catalog.source(case), backend, samples, tracebacks=True)


def _subjects(catalog, kind):
    return {case.name for case in catalog if case.kind == kind}


def test_catalog_has_the_blocks_and_families(catalog):
    blocks = _subjects(catalog, "blocks")
    assert len(blocks) >= 20
    for block in blocks:  # every block: float32 and bfloat16, forward and backward
        assert {(c.dtype, c.direction) for c in catalog if c.kind == "blocks" and c.name == block} == {
            (d, r) for d in ("float32", "bfloat16") for r in ("forward", "backward")}
    models = _subjects(catalog, "models")
    assert {name.split(".")[0] for name in models} == FAMILIES
    for family in FAMILIES:
        assert {f"{family}.layer", f"{family}.model"} <= models
        assert catalog.get(f"models/{family}.model/bfloat16/train")


def test_ids_are_stable_unique_and_parse(catalog):
    ids = [case.id for case in catalog]
    assert len(ids) == len(set(ids))
    assert ids == [case.id for case in build_catalog(["blocks", "models"])]
    assert all(Case.parse(case_id).id == case_id for case_id in ids)


def test_the_cli_finds_the_case_files():
    for kind in ("blocks", "models"):
        path = cli.CASES_DIR / f"test_{kind}.py"
        spec = importlib.util.spec_from_file_location(f"cases_{kind}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        assert module.CASE_KIND == kind


def test_samples_have_two_sequence_lengths_and_parameters_as_inputs(catalog):
    case = catalog.get("blocks/mlp.swiglu/bfloat16/backward")
    samples = catalog.source(case).samples(case, None)
    assert len(samples) == 2
    params = samples[0].args[0]
    assert set(params) == {"gate_proj.weight", "up_proj.weight", "down_proj.weight"}
    assert all(p.requires_grad and p.dtype == torch.bfloat16 for p in params.values())
    shapes = [s.args[2].shape for s in samples]  # (params, buffers, hidden)
    assert shapes[0][1] != shapes[1][1]
    forward = catalog.get("blocks/mlp.swiglu/bfloat16/forward")
    leaves = pytree.tree_leaves(catalog.source(forward).samples(forward, 1)[0].args)
    assert not any(t.requires_grad for t in leaves if isinstance(t, torch.Tensor))


@pytest.mark.parametrize("block_id,op", [
    ("blocks/attention.sdpa_gqa/bfloat16/backward", None),
    ("blocks/rope.rotate_half/float32/backward", "aten::cat"),
    ("blocks/moe.capacity_scatter/float32/backward", "aten::scatter.src"),
    ("blocks/kv_cache.index_copy/bfloat16/forward", "aten::index_copy_"),
    ("blocks/loss.cross_entropy/bfloat16/backward", "aten::nll_loss_backward"),
])
def test_block_passes_on_cpu_and_records_its_aten_ops(catalog, block_id, op):
    record = _run(catalog, block_id, CpuBackend())
    assert record.status is Status.PASS, record.failure
    assert record.samples_run == 2
    assert record.numerics.verdict in PASSING_VERDICTS
    assert record.aten_ops
    if op:
        assert op in record.aten_ops


def test_train_step_updates_every_parameter(catalog):
    case = catalog.get("models/llama.model/float32/train")
    sample = catalog.source(case).samples(case, 1)[0]
    params = sample.args[0]
    loss, updated = execute._call(sample, (sample.args, sample.kwargs), "train", 0, torch.device("cpu"))
    assert loss.ndim == 0 and bool(torch.isfinite(loss))
    assert set(updated) == set(params)
    for name, value in updated.items():
        assert value.shape == params[name].shape
        assert not torch.equal(value, params[name].detach()), name


def test_train_case_passes_on_cpu(catalog):
    record = _run(catalog, "models/gpt2.model/bfloat16/train", CpuBackend())
    assert record.status is Status.PASS, record.failure
    assert record.samples_run == 2
    assert "aten::sqrt" in record.aten_ops  # the optimizer step ran as part of the case


@pytest.fixture(scope="module")
def xla(tmp_path_factory):
    # In a worker process, as `opsuite run` does: torch-xla's device must be open before the first
    # backward of a process (the autograd engine sizes its device queues then), and this pytest
    # process has already run CPU backwards.
    with IsolatedRunner(WorkerConfig("xla", 2, ("blocks", "models")), case_timeout_s=300,
                        log_dir=tmp_path_factory.mktemp("xla-worker")) as runner:
        yield runner


@pytest.mark.xla
def test_a_second_sequence_length_recompiles_on_xla(xla):
    record = xla.run("blocks/mlp.gelu_tanh/float32/forward")
    assert record.status is Status.PASS, record.failure
    assert record.compiles == 2  # one graph per sequence length, in a fresh worker
    again = xla.run("blocks/mlp.gelu_tanh/float32/forward")
    assert again.compiles == 0  # the same shapes reuse both graphs


@pytest.mark.xla
def test_a_decoder_layer_runs_backward_on_xla(xla):
    record = xla.run("models/llama.layer/float32/backward")
    assert record.status is Status.PASS, record.failure
    assert record.samples_run == 2 and record.compiles >= 2
    assert "aten::rsqrt" in record.aten_ops
