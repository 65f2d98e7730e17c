"""The Inductor backend: `torch.compile` on the CPU (Dynamo, AOTAutograd, Inductor's C++ code).

A compiled backend runs on the CPU too, so it exercises everything a graph compiler adds to an op:
graph capture, graph breaks, recompiles on new shapes, decompositions, lowering, generated code.
Each case starts from an empty Dynamo cache, so a case never reuses another's graphs and its compile
counts are its own. Failures while compiling are raised as `StageError(Stage.COMPILE, ...)`, forward
and backward alike, so they are told apart from errors of the compiled code while it runs.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from typing import Any, Callable

import torch
from torch._dynamo.utils import counters

from opsuite.backends import dynamo
from opsuite.backends.base import Backend, Counters, StageError
from opsuite.record import Stage


class InductorBackend(Backend):
    name = "inductor"
    # Inductor settings whose values change results (numerics or which kernels run).
    numerics_env = ("TORCHINDUCTOR_FREEZING", "TORCHINDUCTOR_MAX_AUTOTUNE", "TORCHINDUCTOR_FALLBACK_RANDOM",
                    "TORCHINDUCTOR_EMULATE_PRECISION_CASTS", "TORCHINDUCTOR_CPP_SIMDLEN", "TORCH_COMPILE_DISABLE",
                    "OMP_NUM_THREADS")

    def prepare(self) -> None:
        import torch._inductor.config
        from torch._inductor.compile_fx import compile_fx, compile_fx_inner

        self._inductor_config = torch._inductor.config
        self._compile_fx, self._compile_fx_inner = compile_fx, compile_fx_inner
        self._graphs = 0
        self._compile_s = 0.0
        self._depth = 0  # > 0 while Dynamo's compile of a graph runs (its inner compiles are timed with it)

    def device(self) -> torch.device:
        return torch.device("cpu")

    def stack(self) -> dict[str, Any]:
        config = self._inductor_config
        return {
            "torch": torch.__version__,
            "cxx": _cxx_version(config.cpp.cxx),
            "cpu_isa": torch.backends.cpu.get_cpu_capability(),
            "inductor_fallback_random": config.fallback_random,
            "inductor_freezing": config.freezing,
            "inductor_max_autotune": config.max_autotune,
            "inductor_emulate_precision_casts": config.emulate_precision_casts,
            "inductor_cpp_simdlen": config.cpp.simdlen,
            "threads": torch.get_num_threads(),
        }

    def begin_case(self) -> None:
        dynamo.reset()
        self._graphs = 0
        self._compile_s = 0.0

    def wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        return dynamo.staged(torch.compile(fn, backend=self._compile_graph))

    def counters(self) -> Counters:
        return Counters(compiles=self._graphs, compile_s=round(self._compile_s, 6),
                        extra={**dynamo.graph_facts(),
                               "fx_graph_cache_hits": counters["inductor"]["fxgraph_cache_hit"]})

    # -- the compiler Dynamo calls: Inductor, with every graph compile timed and its failures staged

    def _compile_graph(self, gm: torch.fx.GraphModule, example_inputs: list[Any]) -> Callable[..., Any]:
        """One graph Dynamo captured: counted here, so that Inductor's caches do not change the count."""
        started = time.perf_counter()
        self._graphs += 1
        self._depth += 1
        try:
            return self._compile_fx(gm, example_inputs, inner_compile=self._inner_compile)
        finally:
            self._depth -= 1
            self._compile_s += time.perf_counter() - started

    def _inner_compile(self, *args: Any, **kwargs: Any) -> Any:
        """Inductor's own compile of one graph: the forward one, or the backward one on first use."""
        if self._depth:
            return self._compile_fx_inner(*args, **kwargs)
        # A backward graph is compiled lazily, inside autograd and outside `staged`: staged and timed here.
        started = time.perf_counter()
        try:
            return self._compile_fx_inner(*args, **kwargs)
        except Exception as exc:
            raise StageError(Stage.COMPILE, dynamo.root_cause(exc)) from exc
        finally:
            self._compile_s += time.perf_counter() - started


def _cxx_version(cxx: Any) -> str | None:
    """The first line of `<c++ compiler> --version`, for the compiler Inductor builds kernels with."""
    names = [c for c in (cxx if isinstance(cxx, (list, tuple)) else [cxx]) if c] or ["g++"]
    for name in names:
        path = shutil.which(name)
        if path:
            try:
                out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30).stdout
            except (OSError, subprocess.SubprocessError):
                return None
            return out.splitlines()[0] if out else None
    return None
