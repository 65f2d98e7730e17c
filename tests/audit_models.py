"""Small non-transformers models for the audit tests, given to `opsuite audit --module tests.audit_models:NAME`."""

from __future__ import annotations

import torch
from torch import nn


@torch.library.custom_op("opsuite_test::scaled_tanh", mutates_args=())
def scaled_tanh(x: torch.Tensor, scale: float) -> torch.Tensor:
    """A custom kernel registered through torch.library, as a user's C++/Triton kernel would be."""
    return torch.tanh(x) * scale


@scaled_tanh.register_fake
def _(x: torch.Tensor, scale: float) -> torch.Tensor:
    return torch.empty_like(x)


@torch.library.custom_op("opsuite_test::no_fake", mutates_args=())
def no_fake(x: torch.Tensor) -> torch.Tensor:
    """A custom op with no fake implementation: fake tensors cannot run it."""
    return x.clone()


class CustomOpNet(nn.Module):
    """A linear layer, then the custom op."""

    def __init__(self, custom=scaled_tanh):
        super().__init__()
        self.proj = nn.Linear(16, 16)
        self.custom = custom

    def forward(self, x):
        return self.custom(self.proj(x), 2.0) if self.custom is scaled_tanh else self.custom(self.proj(x))


class Selecting(nn.Module):
    """Keeps the positive rows: a data-dependent shape (nonzero) and a host sync (.item())."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(8, 8)

    def forward(self, x):
        y = self.proj(x)
        keep = (y.sum(-1) > 0).nonzero().squeeze(-1)
        scale = y.abs().max().item()
        return y[keep] / scale


def custom_op_net():
    return CustomOpNet(), (torch.randn(4, 16),)


def untraceable_net():
    return CustomOpNet(custom=no_fake), (torch.randn(4, 16),)


def selecting():
    return Selecting(), {"x": torch.randn(6, 8)}


def raising():
    raise ValueError("checkpoint weights.bin not found")


def not_a_pair():
    return nn.Linear(2, 2)
