"""A saved `torch.export` program as a step to trace: its graph run node by node on fake tensors.

The graph has no `nn.Module` calls left to hook, but each node keeps where it came from
(`nn_module_stack`, `stack_trace`): the interpreter hands that to the tracer as the op's place.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch.utils import _pytree as pytree

from opsuite.audit import AuditError
from opsuite.audit.sources import cast, fakeify
from opsuite.audit.trace import Step, display_path, fold, internal

_FRAME = re.compile(r'File "([^"]+)", line (\d+)')


def _place(node: torch.fx.Node) -> tuple[str, str]:
    """(folded module path, file:line) a node of an exported graph records."""
    stack = node.meta.get("nn_module_stack") or {}
    path = ""
    if stack:
        path = list(stack.values())[-1][0]
        path = re.sub(r"^L\['self'\]\.?", "", path)
    frames = [f for f in _FRAME.findall(node.meta.get("stack_trace") or "") if not internal(f[0])]
    source = f"{display_path(frames[-1][0])}:{frames[-1][1]}" if frames else "?"
    return fold(path), source


class _PlacedInterpreter(torch.fx.Interpreter):
    """Runs the graph, telling the tracer the place of the node each op comes from."""

    def __init__(self, module: torch.fx.GraphModule, where: Any):
        super().__init__(module)
        self.where = where

    def run_node(self, node: torch.fx.Node) -> Any:
        self.where.override = _place(node) if node.op == "call_function" else None
        try:
            return super().run_node(node)
        finally:
            self.where.override = None


def exported_step(program: Any, fake_mode: Any, dtype: torch.dtype | None) -> Step:
    """The step of an exported program: its graph module with fake parameters, run on fake inputs from its
    example inputs or its signature."""
    module = program.module()
    example = getattr(program, "example_inputs", None)
    if example is not None:
        flat = pytree.tree_leaves(example)
    else:
        placeholders = [n for n in module.graph.nodes if n.op == "placeholder"]
        if any("val" not in n.meta for n in placeholders):
            raise AuditError("the exported program keeps neither example inputs nor input shapes")
        flat = [n.meta["val"] for n in placeholders]
    inputs = cast(fake_mode, module, fakeify(fake_mode, module, flat), dtype)
    return Step(module=module, forward=lambda where: _PlacedInterpreter(module, where).run(*inputs))
