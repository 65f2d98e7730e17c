"""`opsuite audit --run`: the model itself run as a case on a backend, beside the offline prediction.

The model is built for real (random weights from the fixed seed: give a config small enough to run) and
run through `execute.run_case` exactly as the `models` cases are: two sequence lengths (so a compiling
backend shows its recompile), the CPU reference in the same dtype and in float64, fallbacks and host
syncs from the backend's own counters. Where the run and the prediction differ, the report says so: a
fallback the prediction missed is a gap in the matrix, named by its op, so that a case can be added.
"""

from __future__ import annotations

import argparse
from typing import Any, Iterable

from opsuite.audit import AuditError
from opsuite.audit.join import FAILURES

KIND = "audit"


class AuditCaseSource:
    """One case, the audited model, as a `CaseSource` for `execute.run_case`."""

    kind = KIND

    def __init__(self, case: Any, make_samples: Any):
        self.case, self._make = case, make_samples

    def cases(self) -> Iterable[Any]:
        return [self.case]

    def samples(self, case: Any, limit: int | None) -> list[Any]:
        return self._make()[:limit]

    def shape_only_reason(self, case: Any) -> str | None:
        return None

    def facts(self) -> dict[str, Any]:
        return {}


def _output(out: Any) -> Any:
    return out.logits if hasattr(out, "logits") else out


def _samples(args: argparse.Namespace, dtype: Any, seq_lens: list[int]):
    """A maker of the model's samples, one per sequence length (a closure: built when the case runs)."""
    from opsuite.audit import sources
    from opsuite.catalog.models import train_sample
    from opsuite.catalog.modules import generator, module_sample, seeded

    def make() -> list[Any]:
        import torch

        if args.hf:
            config = sources.hf_config(args.hf, sources.parse_sets(args.set))
            config.use_cache = False
            model_class = sources.hf_class(config)
            model = seeded(lambda: model_class._from_config(config))
            samples = []
            for seq in seq_lens:
                torch.manual_seed(seq)  # the inputs are drawn with torch's global generator
                batch = sources.hf_inputs(model, config, args.batch, seq, dtype, args.train)
                label = f"seq {seq}: {type(model).__name__}"
                samples.append(train_sample(model, dtype, batch, generator(seq), label) if args.train else
                               module_sample(model, dtype, "forward", (), kwargs=batch, label=label,
                                             output_process=_output))
            return samples
        if args.train:
            raise AuditError("--run --train needs a model that returns its loss: use --hf")
        module, inputs = sources.factory(args.module)()
        module = module.float().eval()
        positional = tuple(inputs) if isinstance(inputs, (tuple, list)) else (() if isinstance(inputs, dict) else (inputs,))
        keywords = inputs if isinstance(inputs, dict) else {}
        return [module_sample(module, dtype, "forward", positional, kwargs=keywords, label="factory inputs",
                              output_process=_output)]

    return make


def open_backend(args: argparse.Namespace, backend_name: str) -> Any:
    """The backend to run on, opened before anything is traced: the autograd engine sizes its per-device
    queues at its first backward pass, and an XLA device opened after a (fake) CPU backward trips its
    internal assert in every XLA backward."""
    from opsuite import backends

    if args.exported:
        raise AuditError("--run needs the model's code (--hf or --module); an exported program is audited offline only")
    try:
        return backends.open_backend(backend_name)
    except backends.BackendError as exc:
        raise AuditError(str(exc)) from None


def run(args: argparse.Namespace, backend: Any, dtype_name: str) -> dict[str, Any]:
    """Run the audited model as a case on the opened `backend`; its record and the run's facts."""
    from opsuite.catalog import DTYPES, Case
    from opsuite.execute import run_case

    direction = "train" if args.train else "forward"
    name = (args.hf or args.module).replace("/", "_")
    case = Case(KIND, name, dtype_name, direction)
    seq_lens = [args.seq, args.seq + max(1, args.seq // 2)]
    source = AuditCaseSource(case, _samples(args, DTYPES[dtype_name], seq_lens))
    record = run_case(case, source, backend, None).to_json()
    if record["status"] == "skip" and record.get("failure"):
        raise AuditError(f"the model does not run on the CPU reference: {record['failure']['message']}")
    spent = sum(record[k] or 0 for k in ("cpu_s", "compile_s", "device_s"))
    return {"backend": backend.name, "seq_lens": seq_lens, "record": record,
            "host_s": round(max(0.0, (record["wall_s"] or 0) - spent), 3)}


def _packet(op: str) -> str:
    return op.partition(".")[0]


def compare(report: dict[str, Any], run_result: dict[str, Any], stack_id: str) -> list[str]:
    """Where the run and the prediction for `stack_id` disagree, each said plainly (empty: they agree)."""
    record = run_result["record"]
    rows = report["ops"]
    verdict = {row["op"]: row["verdicts"][stack_id]["verdict"] for row in rows}
    predicted = {}
    for row in rows:
        v = row["verdicts"][stack_id]["verdict"]
        if v in ("fallback", "conditional"):
            predicted.setdefault(_packet(row["op"]), set()).add(v)
    traced = {_packet(row["op"]) for row in rows}
    out = []
    observed = {_packet(op) for op in record["fallback_ops"]}
    for op in sorted(observed - set(predicted)):
        seen = sorted({verdict[r["op"]] for r in rows if _packet(r["op"]) == op})
        out.append(f"gap in the matrix: {op} fell back to the host on the device, but no case of {stack_id} records "
                   f"it falling back (" + (f"predicted: {', '.join(seen)}" if seen else "not in the trace") +
                   "); add a case that dispatches it")
    for op in sorted(p for p, vs in predicted.items() if "fallback" in vs and p not in observed):
        out.append(f"{op} was predicted to fall back to the host, but ran on the device")
    syncs = {_packet(op) for op in record["host_syncs"]}
    traced_syncs = {_packet(row["op"]) for row in rows if row["host_sync"]}
    for op in sorted(syncs - traced_syncs):
        # A backend's own lowering of an op can read a value on the host (torch-xla counts those): no trace
        # of the model's dispatched ops sees that.
        out.append(f"host sync {op} seen on the device " + ("but not flagged by the trace" if op in traced else
                                                              "and not in the trace (made inside the backend's own "
                                                              "implementation of an op, or on a path the model takes "
                                                              "only on the device)"))
    failed = record["status"] in FAILURES
    failures_predicted = any(row["verdicts"][stack_id]["verdict"] in FAILURES for row in rows)
    if failed and not failures_predicted:
        out.append(f"the run ended in {record['status']} ({(record.get('failure') or {}).get('message', '')}), "
                   f"but no op was predicted to fail")
    if not failed and failures_predicted:
        out.append(f"ops were predicted to fail, but the run ended in {record['status']}")
    return out
