"""`opsuite audit`: which of a model's operators the matrix says will work on a backend, before porting.

The data flow, one module per step:

    sources.py   the model and example inputs (a transformers config, a user's factory, a torch.export file)
    trace.py     every aten overload it dispatches, traced on fake tensors (no weights in memory)
    exported.py  a torch.export program run node by node, each op placed by its node's module and line
    join.py      each traced (overload, dtype, direction) against one published snapshot -> a verdict
    report.py    summary and table (text, Markdown, JSON with a versioned schema)
    device.py    `--run`: the model itself run as a case on the backend, beside the prediction
    command.py   the `opsuite audit` subcommand
"""

from __future__ import annotations


class AuditError(Exception):
    """Bad input to `opsuite audit` (unknown model type, a factory that raises, an untraceable op...):
    printed as one clear line, exit code 2."""
