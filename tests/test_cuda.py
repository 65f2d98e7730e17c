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
