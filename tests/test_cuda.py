"""The cuda backend where there is no GPU: one clear line, not a traceback from a worker."""

import pytest
import torch

from opsuite import backends, cli

pytestmark = pytest.mark.main


def test_availability_follows_the_gpu():
    if torch.cuda.is_available():
        backends.check_available("cuda")
    else:
        with pytest.raises(backends.BackendError, match=r"torch\.cuda\.is_available\(\) is False"):
            backends.check_available("cuda")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_run_without_a_gpu_is_refused_before_anything_runs(tmp_path, capsys):
    results = tmp_path / "cuda.jsonl"
    assert cli.main(["run", "--backend", "cuda", "--results", str(results)]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("opsuite: backend 'cuda' cannot run here") and "GPU" in line
    assert not results.exists()


def test_verdicts_run_without_tf32():
    from opsuite.backends import cuda

    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.get_float32_matmul_precision())
    try:
        torch.backends.disable_global_flags()  # as importing OpInfo does in a case worker
        torch.backends.cuda.matmul.allow_tf32 = True
        torch._C._set_cudnn_allow_tf32(True)
        cuda.full_float32_precision()
        assert torch.backends.cuda.matmul.allow_tf32 is False and torch.backends.cudnn.allow_tf32 is False
        assert torch.get_float32_matmul_precision() == "highest"
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved[0]
        torch._C._set_cudnn_allow_tf32(saved[1])
        torch.set_float32_matmul_precision(saved[2])


def test_a_numerics_flag_alone_makes_another_snapshot():
    """Two cuda runs that differ only in TF32 for cuDNN: same versions, two stack keys."""
    from opsuite.matrix import stack

    facts = {"torch": "2.11.0+cu130", "cuda": "13.0", "gpu": "NVIDIA H200", "devices": 8,
             "cublas_allow_tf32": False, "cudnn_allow_tf32": False}
    strict = {"backend": "cuda", "stack": facts, "env": {"NVIDIA_TF32_OVERRIDE": None}}
    tf32 = {**strict, "stack": {**facts, "cudnn_allow_tf32": True}}
    assert stack.label(strict) == stack.label(tf32)
    assert stack.key(strict) != stack.key(tf32)
    # Where the run was (how many GPUs it saw) does not split a stack.
    assert stack.key(strict) == stack.key({**strict, "stack": {**facts, "devices": 1}})
