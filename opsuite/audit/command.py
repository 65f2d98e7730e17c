"""`opsuite audit`: trace a model offline, judge its ops against the matrix, optionally run it on a device.

Exit codes: 0 the report was printed; 1 a `--fail-on` verdict was found (or, with --run, the run
disagrees with the prediction and `--fail-on disagreement` was asked); 2 bad input (one line, no report).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from opsuite.matrix import MATRIX_ENV, find_matrix

FORMATS = ("text", "markdown", "json")
DTYPE_NAMES = ("float32", "bfloat16", "float16")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of `opsuite audit`."""
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--hf", metavar="NAME_OR_DIR",
                       help="a transformers model type (llama, mixtral, ...) with its default config, or a "
                            "directory with a config.json; random weights, nothing downloaded")
    model.add_argument("--module", metavar="PKG.MOD:FACTORY",
                       help="a callable returning (torch.nn.Module, example inputs: a tuple or a dict)")
    model.add_argument("--exported", metavar="FILE.pt2", help="a program saved with torch.export.save")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config setting (--hf), e.g. num_hidden_layers=2; repeatable")
    parser.add_argument("--train", action="store_true",
                        help="audit a training step: forward, backward and one AdamW step (default: inference)")
    parser.add_argument("--dtype", choices=DTYPE_NAMES,
                        help="the model's dtype (default: float32 for --hf, as built for --module and --exported)")
    parser.add_argument("--batch", type=int, default=1, help="batch size of --hf example inputs (default 1)")
    parser.add_argument("--seq", type=int, default=64, help="sequence length of --hf example inputs (default 64)")
    parser.add_argument("--backend", action="append", default=[],
                        help="judge against this backend's newest snapshot; repeatable")
    parser.add_argument("--stack", action="append", default=[], metavar="BACKEND/KEY",
                        help="judge against this snapshot (an id, or the start of one); repeatable, side by side")
    parser.add_argument("--matrix", type=Path, default=None,
                        help=f"the matrix (default: ${MATRIX_ENV}, else the matrix/ of the current checkout)")
    parser.add_argument("--format", choices=FORMATS, default="text", help="report format (default text)")
    parser.add_argument("--fail-on", default="", metavar="VERDICTS",
                        help="exit 1 when any op has one of these verdicts: fallback, mismatch, compile_error, "
                             "runtime_error, crash, timeout, untested, conditional, custom_kernel (comma-separated)")
    parser.add_argument("--run", action="store_true",
                        help="also run the model on --backend (one) as a case, and put the run beside the prediction")


def _check(args: argparse.Namespace) -> list[str]:
    from opsuite.audit import AuditError
    from opsuite.audit.join import VERDICTS

    fail_on = [v.strip() for v in args.fail_on.split(",") if v.strip()]
    unknown = [v for v in fail_on if v not in VERDICTS]
    if unknown:
        raise AuditError(f"--fail-on {','.join(unknown)}: not a verdict; verdicts: {', '.join(VERDICTS)}")
    if args.set and not args.hf:
        raise AuditError("--set changes a transformers config: use it with --hf")
    if args.run and len(args.backend) != 1:
        raise AuditError("--run needs exactly one --backend to run on")
    if args.batch < 1 or args.seq < 1:
        raise AuditError("--batch and --seq must be at least 1")
    return fail_on


def _trace(args: argparse.Namespace):
    import torch

    from opsuite.audit import AuditError, sources, trace

    dtype = getattr(torch, args.dtype) if args.dtype else None
    if args.hf:
        built = sources.from_hf(args.hf, sources.parse_sets(args.set), dtype or torch.float32, args.train, args.batch,
                                args.seq)
    elif args.module:
        built = sources.from_module(args.module, dtype, args.train)
    else:
        built = sources.from_exported(args.exported, dtype, args.train)
    try:
        return trace.trace_step(built.step, built.fake_mode, built.description,
                                sources.model_dtype(built.step.module), args.train)
    except AuditError:
        raise
    except Exception as exc:  # the model's own code failed on fake tensors: say where, never half a report
        raise AuditError(f"the model cannot be traced: {sources.first_line(exc)}") from None


def cmd_audit(args: argparse.Namespace) -> int:
    """Trace the model, judge it against the stacks, print the report; see the module docstring for exits."""
    from opsuite.audit import AuditError, device, join, report

    try:
        fail_on = _check(args)
        stacks = join.open_stacks(find_matrix(args.matrix), args.stack, args.backend)  # a bad stack fails before tracing
        backend = device.open_backend(args, args.backend[0]) if args.run else None
        traced = _trace(args)
        result = report.build(traced, stacks)
        if backend:
            run = device.run(args, backend, traced.dtype)
            own = [s for s in stacks if s.id.startswith(f"{args.backend[0]}/")]  # --backend's: the last of them
            run["disagreements"] = device.compare(result, run, own[-1].id)
            run["agrees"] = not run["disagreements"]
            result["run"] = run
    except AuditError as exc:
        print(f"opsuite: {exc}", file=sys.stderr)
        return 2
    if args.format == "json":
        print(json.dumps(result, indent=1))
    else:
        print(report.text(result, markdown=args.format == "markdown"), end="")
    return 1 if set(fail_on) & report.worst_verdicts(result) else 0


COMMANDS = {"audit": (add_arguments, cmd_audit, "will my model port? its operators against the matrix, offline")}
