"""Process-wide setup for the tests of opsuite itself."""

import importlib.util
import os


def pytest_configure(config):
    # The autograd engine sizes its per-device queues at its first backward pass: an XLA device opened
    # after some test ran a CPU backward trips an internal assert (engine.cpp) in every XLA backward.
    # opsuite's workers open their backend before any case; tests that run cases in-process need the
    # same order, so the XLA device is opened first wherever torch-xla is installed.
    if importlib.util.find_spec("torch_xla") is not None:
        os.environ.setdefault("PJRT_DEVICE", "CPU")
        import torch_xla

        torch_xla.device()
