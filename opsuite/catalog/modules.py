"""Samples that run a `torch.nn.Module` functionally, so that its parameters are inputs of the sample.

A block or a model is called as `torch.func.functional_call(module, {**params, **buffers}, args)`,
with `params` and `buffers` dicts among the sample's arguments: the executor then moves them to the
device with the activations, widens them for the float64 reference, and (in a backward case) compares
the gradients of every parameter. The module object itself only supplies the code.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any, Callable

import torch
from torch import nn
from torch.func import functional_call

from opsuite.catalog import Sample

# Every module and every input is drawn from fixed seeds, so the samples of a case are the same in
# every process (the pytest process, the worker, a repro run) and in both dtypes.
MODULE_SEED = 0
INPUT_SEED = 1


def library_facts() -> dict[str, Any]:
    """The version of `transformers`, whose modules blocks and models are built from, for the run header."""
    try:
        return {"transformers": metadata.version("transformers")}
    except metadata.PackageNotFoundError:
        return {"transformers": None}


def seeded(build: Callable[[], nn.Module]) -> nn.Module:
    """`build()` under a fixed seed, in float32 and eval mode (dropout is 0 anyway; eval for MoE jitter)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(MODULE_SEED)
        module = build()
    return module.float().eval()


def generator(seq_len: int) -> torch.Generator:
    """The input generator of the sample with this sequence length."""
    return torch.Generator().manual_seed(INPUT_SEED * 1000 + seq_len)


def randn(gen: torch.Generator, shape: tuple[int, ...], dtype: torch.dtype, scale: float = 1.0,
          grad: bool = True) -> torch.Tensor:
    """A normal activation drawn in float32 then cast, so both dtypes see the same values.

    `grad` marks it as a leaf whose gradient a backward case compares (the sample clears it otherwise).
    """
    value = (torch.randn(shape, generator=gen) * scale).to(dtype)
    return value.requires_grad_(grad and dtype.is_floating_point)


def parameters(module: nn.Module, dtype: torch.dtype, requires_grad: bool) -> dict[str, torch.Tensor]:
    """The module's parameters (tied ones once) as plain tensors, floating ones cast to `dtype`."""
    return {name: (p.detach().to(dtype) if p.is_floating_point() else p.detach().clone())
            .requires_grad_(requires_grad and p.is_floating_point())
            for name, p in module.named_parameters()}


def buffers(module: nn.Module) -> dict[str, torch.Tensor]:
    """The module's buffers, in their own dtype (rotary frequencies stay float32, as models keep them)."""
    return {name: b.detach().clone() for name, b in module.named_buffers()}


def call(module: nn.Module, params: dict[str, torch.Tensor], bufs: dict[str, torch.Tensor],
         *args: Any, **kwargs: Any) -> Any:
    """`module(*args, **kwargs)` with these parameters and buffers in place of its own."""
    return functional_call(module, {**params, **bufs}, args, kwargs)


def module_sample(module: nn.Module, dtype: torch.dtype, direction: str, args: tuple,
                  kwargs: dict[str, Any] | None = None, label: str = "",
                  output_process: Callable[[Any], Any] = lambda out: out) -> Sample:
    """A sample calling `module` functionally on `args`, its parameters among the inputs.

    In a backward case the parameters and the activations drawn with `grad=True` require grad; in a
    forward case nothing does.
    """
    backward = direction == "backward"
    if not backward:
        args = tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args)
    return Sample(fn=_Call(module), args=(parameters(module, dtype, backward), buffers(module), *args),
                  kwargs=dict(kwargs or {}), label=label, output_process=output_process)


class _Call:
    """`call` bound to a module, with a readable repr for sample descriptions."""

    def __init__(self, module: nn.Module):
        self.module = module

    def __call__(self, params: dict, bufs: dict, *args: Any, **kwargs: Any) -> Any:
        return call(self.module, params, bufs, *args, **kwargs)

    def __repr__(self) -> str:
        return f"functional_call({type(self.module).__name__})"


def describe(**tensors: torch.Tensor) -> str:
    """`q[2,4,8,16] k[...]`: the shapes of a sample's activations, for its label."""
    return " ".join(f"{name}{list(t.shape)}".replace(" ", "") for name, t in tensors.items())
