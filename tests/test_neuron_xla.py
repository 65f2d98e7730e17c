"""The neuron-xla adapter's Neuron-specific parts, against faked Neuron tools (no Neuron hardware here)."""

import os
import stat

import pytest

from opsuite.backends import neuron_tools
from opsuite.backends.neuron_xla import (CACHE_HIT_LOGGER, RETRY_FLAG, CacheHitCounter, NeuronXlaBackend,
                                         configure_compile_cache)

NEURON_LS_JSON = '[{"neuron_device": 0, "nc_count": 2}, {"neuron_device": 1, "nc_count": 2}]'
NEURON_LS_TEXT = "instance-type: trn1.32xlarge\ninstance-id: i-0123\n+--------+\n"


@pytest.fixture
def fake_tools(tmp_path, monkeypatch):
    """`neuronx-cc` and `neuron-ls` stand-ins on PATH, printing what the real tools print."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scripts = {
        "neuronx-cc": 'echo "NeuronX Compiler version 2.14.227.0+2d4f85be"; echo "Python version 3.10"',
        "neuron-ls": f"if [ \"$1\" = -j ]; then echo '{NEURON_LS_JSON}'; else printf '{NEURON_LS_TEXT}'; fi",
    }
    for name, body in scripts.items():
        path = bin_dir / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(neuron_tools, "DMI_PRODUCT_NAME", tmp_path / "no-dmi")
    return bin_dir


def test_versions_and_cores_from_the_tools(fake_tools):
    assert neuron_tools.compiler_version() == "2.14.227.0+2d4f85be"
    assert neuron_tools.core_count() == 4
    assert neuron_tools.instance_type() == "trn1.32xlarge"


def test_instance_type_prefers_dmi(fake_tools, tmp_path, monkeypatch):
    dmi = tmp_path / "product_name"
    dmi.write_text("trn2.48xlarge\n")
    monkeypatch.setattr(neuron_tools, "DMI_PRODUCT_NAME", dmi)
    assert neuron_tools.instance_type() == "trn2.48xlarge"


def test_missing_tools_give_none(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(neuron_tools, "DMI_PRODUCT_NAME", tmp_path / "no-dmi")
    assert neuron_tools.core_count() is None
    assert neuron_tools.instance_type() is None
    assert neuron_tools.runtime_version() is None


def test_compile_cache_per_compiler_version_and_failed_compiles_retried():
    env = {"NEURON_CC_FLAGS": "--model-type=transformer"}
    configure_compile_cache(env, "2.28.7631.0")
    assert env["NEURON_COMPILE_CACHE_URL"] == "/var/tmp/neuron-compile-cache/neuronx-cc-2.28.7631.0"
    assert env["NEURON_CC_FLAGS"] == f"--model-type=transformer {RETRY_FLAG}"
    configure_compile_cache(env, "2.28.7631.0")  # idempotent: a second worker start changes nothing
    assert env["NEURON_COMPILE_CACHE_URL"] == "/var/tmp/neuron-compile-cache/neuronx-cc-2.28.7631.0"
    assert env["NEURON_CC_FLAGS"].split().count(RETRY_FLAG) == 1
    other = {"NEURON_COMPILE_CACHE_URL": "s3://bucket/cache"}
    configure_compile_cache(other, "2.29.0")
    assert other["NEURON_COMPILE_CACHE_URL"] == "s3://bucket/cache"


def test_configure_env_sets_the_neuron_device(fake_tools, monkeypatch):
    monkeypatch.delenv("NEURON_COMPILE_CACHE_URL", raising=False)
    monkeypatch.delenv("NEURON_CC_FLAGS", raising=False)
    monkeypatch.setenv("PJRT_DEVICE", "CPU")
    NeuronXlaBackend().configure_env()
    assert os.environ["PJRT_DEVICE"] == "NEURON"
    assert os.environ["NEURON_COMPILE_CACHE_URL"].endswith("neuronx-cc-2.14.227.0+2d4f85be")
    assert RETRY_FLAG in os.environ["NEURON_CC_FLAGS"]


def test_neuron_device_detection(tmp_path):
    assert not neuron_tools.has_neuron_device(tmp_path)
    (tmp_path / "neuron0").touch()
    assert neuron_tools.has_neuron_device(tmp_path)


@pytest.mark.parametrize("flags, compiler, expected", [
    ("", "2.28.7631.0", {"auto_cast": "none", "auto_cast_type": None, "native_int64": False}),
    ("", "2.14.227.0+2d4f85be", {"auto_cast": "matmult", "auto_cast_type": None, "native_int64": False}),
    ("", None, {"auto_cast": None, "auto_cast_type": None, "native_int64": False}),
    ("--auto-cast all --auto-cast-type=fp8_e4m3 --native-int64", "2.28.7631.0",
     {"auto_cast": "all", "auto_cast_type": "fp8_e4m3", "native_int64": True}),
])
def test_numerics_flags_are_the_effective_compiler_settings(flags, compiler, expected):
    env = {"NEURON_CC_FLAGS": flags, "NEURON_RT_STOCHASTIC_ROUNDING_EN": "0"}
    facts = neuron_tools.numerics_flags(env, compiler)
    assert {k: facts[k] for k in expected} == expected
    assert (facts["stochastic_rounding"], facts["neuron_cc_flags"]) == ("0", flags)


@pytest.fixture
def cache_hits():
    """A cache-hit counter installed as the neuron-xla backend installs it; removed afterwards."""
    import logging

    counter = CacheHitCounter().install()
    yield counter
    for logger in (logging.getLogger(CACHE_HIT_LOGGER), logging.getLogger()):
        logger.removeHandler(counter)


def test_compile_cache_hits_are_counted_from_the_wrapper_log(cache_hits, monkeypatch):
    import logging

    from opsuite.backends.base import Counters
    from opsuite.backends.xla import XlaBackend

    wrapper = logging.getLogger(CACHE_HIT_LOGGER)  # the compile wrapper of this test double: its log lines only
    wrapper.info("Using a cached neff at /var/tmp/neuron-compile-cache/neuronx-cc-2.28/MODULE_1+ab/model.neff. "
                 "Exiting with a successfully compiled graph.")
    wrapper.info("Compilation Successfully Completed for model.MODULE_2+ab.hlo_module.pb")  # a miss: compiled
    assert cache_hits.hits == 1  # heard on the wrapper's logger and again on the root one: counted once
    monkeypatch.setattr(wrapper, "propagate", False)
    wrapper.info("Using a cached neff at /x/MODULE_3+ab/model.neff")
    logging.getLogger("libneuronxla.neuron_cc_cache").warning("Using a cached neff at /x/MODULE_4+ab/model.neff")
    assert cache_hits.hits == 3

    backend = NeuronXlaBackend()
    backend._cache_hits = cache_hits
    monkeypatch.setattr(XlaBackend, "counters", lambda self: Counters(compiles=4))
    monkeypatch.setattr(XlaBackend, "begin_case", lambda self: None)
    assert backend.counters().compile_cache_hits == 3
    backend.begin_case()
    assert backend.counters().compile_cache_hits == 0 and backend.counters().compiles == 4
