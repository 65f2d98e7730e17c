"""Run one case on one backend, in this process, and say what happened as a `CaseRecord`.

For every sample: copy the inputs to the device first (in-place ops change them), run the CPU
references (the same dtype, and float64 from the same values), run on the device, force it to compile
and execute, copy the results back. The stage reached when something raises decides the status;
numerics are judged over every output (forward) or input gradient (backward) of every sample.
Crashes and timeouts cannot be seen from in here: `opsuite/isolation.py` records those.
"""

from __future__ import annotations

import contextlib
import time
import traceback
from typing import Any, Callable

import torch
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

from opsuite import classify, numerics
from opsuite.backends.base import Backend, StageError
from opsuite.catalog import Case, CaseSource, Sample
from opsuite.record import PASSING_VERDICTS, CaseRecord, Failure, Stage, Status

COTANGENT_SEED = 1234
_WIDE = {torch.float32: torch.float64, torch.bfloat16: torch.float64, torch.float16: torch.float64,
         torch.complex64: torch.complex128, torch.complex32: torch.complex128}
_ERROR_STAGES = {
    Stage.TO_DEVICE: Status.RUNTIME_ERROR, Stage.TRACE: Status.RUNTIME_ERROR,
    Stage.COMPILE: Status.COMPILE_ERROR, Stage.EXECUTE: Status.RUNTIME_ERROR,
    Stage.TO_HOST: Status.RUNTIME_ERROR, Stage.COMPARE: Status.RUNTIME_ERROR,
}


class CaseFailed(Exception):
    """Raised inside `run_case` to stop at a stage; carries the stage and the original error."""

    def __init__(self, stage: Stage, error: BaseException, sample: Sample | None):
        super().__init__(str(error))
        self.stage, self.error, self.sample = stage, error, sample


class AtenRecorder(TorchDispatchMode):
    """Records the aten overloads a computation dispatches (`aten::add.Tensor`), for lookup by aten name."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.add(func.name())
        return func(*args, **(kwargs or {}))


def run_case(case: Case, source: CaseSource, backend: Backend, limit: int | None,
             on_stage: Callable[[Stage], None] = lambda stage: None, tracebacks: bool = False) -> CaseRecord:
    """Run `case` on `backend` with the first `limit` samples (all when None).

    `on_stage` hears of every stage as it is entered, so that whoever watches this process can tell
    how far a case got if the process dies. `tracebacks` keeps a failure's full traceback in
    `record.extra["traceback"]` (for `opsuite repro`; results files keep the first line only).
    """
    started = time.perf_counter()
    record = CaseRecord(case_id=case.id, status=Status.PASS, stage=Stage.PREPARE, backend=backend.name)
    try:
        samples = source.samples(case, limit)
    except Exception as exc:  # the sample generator itself fails: nothing can be run
        return _finish(record, Status.SKIP, Stage.PREPARE, started, _failure(exc, None))
    if not samples:
        record.extra["skip_reason"] = "no samples"
        return _finish(record, Status.SKIP, Stage.PREPARE, started)

    shape_only = source.shape_only_reason(case)
    recorder = AtenRecorder()
    compared: list[numerics.Leaf] = []
    rejections: list[tuple[Sample, BaseException]] = []  # samples the CPU reference rejects, and why
    cpu_s = 0.0
    backend.begin_case()
    try:
        for index, sample in enumerate(samples):
            ran = _run_sample(case, sample, index, backend, recorder, on_stage)
            if isinstance(ran, BaseException):
                rejections.append((sample, ran))
                continue
            leaves, seconds = ran
            compared.extend(leaves)
            cpu_s += seconds
            record.samples_run += 1
    except CaseFailed as failed:
        record.aten_ops = sorted(recorder.ops)
        _take_counters(record, backend)
        record.cpu_s = cpu_s
        status = _ERROR_STAGES[failed.stage]
        failure = _failure(failed.error, failed.sample)
        if tracebacks:
            record.extra["traceback"] = "".join(traceback.format_exception(failed.error))
        if failure.category in classify.COMPILE_CATEGORIES:
            status = Status.COMPILE_ERROR
        return _finish(record, status, failed.stage, started, failure)

    record.aten_ops = sorted(recorder.ops)
    record.cpu_s = cpu_s
    _take_counters(record, backend)
    if rejections:
        record.extra["samples_not_applicable"] = len(rejections)
    if record.samples_run == 0:
        record.extra["skip_reason"] = "the CPU reference rejects every sample"
        sample, error = rejections[0]
        return _finish(record, Status.SKIP, Stage.REFERENCE, started, _failure(error, sample))

    try:
        record.numerics = numerics.judge(compared, shape_only)
    except Exception as exc:  # outputs the comparison cannot read: a record, never a dead worker
        return _finish(record, Status.RUNTIME_ERROR, Stage.COMPARE, started, _failure(exc, None))
    if record.numerics.verdict not in PASSING_VERDICTS:
        status = Status.MISMATCH
    elif record.fallback_ops:
        status = Status.FALLBACK
    else:
        status = Status.PASS
    return _finish(record, status, Stage.DONE, started)


def _run_sample(case: Case, sample: Sample, index: int, backend: Backend, recorder: AtenRecorder,
                on_stage: Callable[[Stage], None]) -> tuple[list[numerics.Leaf], float] | BaseException:
    """Run one sample everywhere; the CPU reference's error when it rejects the sample itself."""
    device = backend.device()
    stage = Stage.TO_DEVICE
    on_stage(stage)
    try:
        # Copied first: an in-place op would otherwise change the inputs under the device's feet.
        dev_args = _map_inputs(sample, lambda t: t.detach().to(device).requires_grad_(t.requires_grad),
                               device=device)
    except Exception as exc:
        raise CaseFailed(stage, exc, sample) from None

    on_stage(Stage.REFERENCE)
    cpu_args = _map_inputs(sample, lambda t: t.detach().clone().requires_grad_(t.requires_grad))
    try:
        began = time.perf_counter()
        cpu_out = _call(sample, cpu_args, case.direction, index, torch.device("cpu"), trace=recorder)
        cpu_seconds = time.perf_counter() - began
    except Exception as exc:  # not applicable: the reference implementation rejects this sample
        return exc
    ref_out = _float64_reference(sample, case.direction, index)

    stage = Stage.TRACE
    on_stage(stage)
    try:
        try:
            dev_out = _call(sample, dev_args, case.direction, index, device, wrap=backend.wrap)
        except StageError as failed:  # a backend that compiles on first call (torch.compile) says so
            stage = failed.stage
            raise failed.error from None
        stage = Stage.EXECUTE  # on a lazy backend, sync compiles first: a crash here may be either
        on_stage(stage)
        try:
            backend.sync()
        except StageError as failed:
            stage = failed.stage
            raise failed.error from None
        stage = Stage.TO_HOST
        on_stage(stage)
        host_out = backend.to_host(dev_out)
        del dev_out, dev_args
    except Exception as exc:
        raise CaseFailed(stage, exc, sample) from None
    name = f"sample {index} {'grad' if case.direction == 'backward' else 'output'}"
    return numerics.leaves(name, host_out, cpu_out, ref_out), cpu_seconds


def _call(sample: Sample, inputs: tuple[tuple, dict], direction: str, index: int, device: torch.device,
          wrap: Callable[[Callable[..., Any]], Callable[..., Any]] = lambda fn: fn,
          trace: Any = None) -> Any:
    """Forward and train: the processed outputs. Backward: the gradients of the inputs that require grad.

    Forward runs without autograd; train runs with it, since its sample takes its own gradients for
    the optimizer step it returns.

    `trace`, a context manager, surrounds only the subject's own forward and backward computation.
    """
    trace = trace or contextlib.nullcontext()
    args, kwargs = inputs
    fn = wrap(sample.fn)
    if direction != "backward":
        with torch.set_grad_enabled(direction == "train"), trace:
            return sample.output_process(fn(*args, **kwargs))
    # The leaves are the inputs that require grad before the call: an input that the subject mutates in
    # place with differentiable values (a KV cache) requires grad afterwards, but its gradient is that of
    # an intermediate whose autograd history each backend may build differently (a compiled graph copies
    # the mutation back after it runs), so it is not a gradient of the subject's inputs.
    leaves = [t for t in pytree.tree_leaves(inputs) if isinstance(t, torch.Tensor) and t.requires_grad]
    with trace:
        out = sample.output_process(fn(*args, **kwargs))
    outs = [t for t in pytree.tree_leaves(out) if isinstance(t, torch.Tensor) and t.requires_grad]
    if not outs or not leaves:
        raise ValueError("no differentiable output or input")
    # Each cotangent goes where its output is: an op such as `to(device="cpu")` leaves the device.
    cotangents = [_cotangent(t, index, i).to(t.device) for i, t in enumerate(outs)]
    with trace:
        grads = torch.autograd.grad(outs, leaves, cotangents, allow_unused=True)
    return [g.detach() if g is not None else None for g in grads]


def _cotangent(out: torch.Tensor, sample_index: int, output_index: int) -> torch.Tensor:
    """The same pseudo-random cotangent for an output on every backend and in every dtype."""
    gen = torch.Generator().manual_seed(COTANGENT_SEED + 1000 * sample_index + output_index)
    if out.dtype.is_complex:
        return torch.randn(out.shape, generator=gen, dtype=torch.complex128).to(out.dtype)
    return torch.randn(out.shape, generator=gen, dtype=torch.float64).to(out.dtype)


def _float64_reference(sample: Sample, direction: str, index: int) -> Any:
    """The sample computed in float64 from the same values; None when the op has no float64 kernel."""

    def widen(t: torch.Tensor) -> torch.Tensor:
        wide = _WIDE.get(t.dtype)
        out = t.detach().to(wide) if wide else t.detach().clone()
        return out.requires_grad_(t.requires_grad and out.is_floating_point() | out.is_complex())

    try:
        inputs = _map_inputs(sample, widen, dtype_map=_WIDE)
        return _call(sample, inputs, direction, index, torch.device("cpu"))
    except Exception:  # many ops have no float64 kernel for some arguments; CPU stands in for it
        return None


def _map_inputs(sample: Sample, fn: Callable[[torch.Tensor], torch.Tensor],
                device: torch.device | None = None,
                dtype_map: dict[torch.dtype, torch.dtype] | None = None) -> tuple[tuple, dict]:
    """Apply `fn` to every tensor of the sample; point a `device=` keyword at `device`; remap dtypes."""

    def leaf(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return fn(value)
        if dtype_map and isinstance(value, torch.dtype):
            return dtype_map.get(value, value)
        return value

    args = pytree.tree_map(leaf, tuple(sample.args))
    kwargs = {k: pytree.tree_map(leaf, v) for k, v in sample.kwargs.items()}
    if device is not None and "device" in kwargs:
        kwargs["device"] = device
    return args, kwargs


def _take_counters(record: CaseRecord, backend: Backend) -> None:
    counters = backend.counters()
    record.compiles = counters.compiles
    record.compile_s = counters.compile_s
    record.device_s = counters.device_s
    record.fallback_ops = counters.fallback_ops
    record.host_syncs = counters.host_syncs
    record.extra.update(counters.extra)


def first_line(exc: BaseException) -> str:
    """The first line of an error's message (its type's name when it has none), at most 500 characters."""
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:500]


def _failure(exc: BaseException, sample: Sample | None) -> Failure:
    text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    category, code = classify.classify(text)
    return Failure(error_type=type(exc).__name__, message=first_line(exc),
                   sample=sample.label if sample else None, category=category, code=code)


def _finish(record: CaseRecord, status: Status, stage: Stage, started: float,
            failure: Failure | None = None) -> CaseRecord:
    record.status, record.stage, record.failure = status, stage, failure
    record.wall_s = round(time.perf_counter() - started, 6)
    return record
