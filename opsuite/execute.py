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
from opsuite.record import PASSING_VERDICTS, SEVERITY, CaseRecord, Failure, Numerics, Stage, Status

COTANGENT_SEED = 1234
# A case starts no further sample once its time spent plus twice its slowest sample so far would pass
# this share of its budget: the worker must answer before it is killed as a timeout.
BUDGET_SHARE = 0.8
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
    """Records the aten overloads a computation dispatches (`aten::add.Tensor`), for lookup by aten name,
    and the largest tensor it touches (`largest`, elements): how far a reduction in it may reach."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: set[str] = set()
        self.largest = 1

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.add(func.name())
        out = func(*args, **(kwargs or {}))
        for t in pytree.tree_leaves((args, kwargs, out)):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def run_case(case: Case, source: CaseSource, backend: Backend, limit: int | None,
             on_stage: Callable[[Stage], None] = lambda stage: None, tracebacks: bool = False,
             on_sample: Callable[[int, str, list[dict[str, Any]], int | None], None] = lambda *announced: None,
             budget_s: float | None = None, only_sample: int | None = None) -> CaseRecord:
    """Run `case` on `backend` with the first `limit` samples (all when None), or sample `only_sample` alone.

    Every sample runs, also after one fails (each may name other fallback ops); the record keeps each
    sample's compact result in `samples`, and the case's figures, status and failure come from its
    worst sample (`worst_sample` names it). With `budget_s` (the case's time budget) no sample is
    started when the case is close to spending it; the record says so in `extra["samples_stopped"]`.

    `on_stage` hears of every stage as it is entered and `on_sample` of every sample before it runs
    (its index, description, the results so far and the number of samples, if counted), so that whoever watches this process can tell
    how far a case got if the process dies. `tracebacks` keeps the worst failure's full traceback in
    `record.extra["traceback"]` (for `opsuite repro`; results files keep the first line only).
    """
    started = time.perf_counter()
    record = CaseRecord(case_id=case.id, status=Status.PASS, stage=Stage.PREPARE, backend=backend.name)
    # One sample past those to run tells whether there are more; only a run of every sample counts them
    # (generating them all costs a 2-sample run of the float32 forward catalog ~5 times its sample time).
    wanted = only_sample if only_sample is not None else limit
    try:
        every = source.samples(case, None if wanted is None else wanted + 1)
    except Exception as exc:  # the sample generator itself fails: nothing can be run
        return _finish(record, Status.SKIP, Stage.PREPARE, started, _failure(exc, None))
    if wanted is None or len(every) <= wanted:
        record.samples_available = len(every)
    if only_sample is not None:
        if not 0 <= only_sample < len(every):
            raise IndexError(f"{case.id} has samples 0 to {len(every) - 1}; there is no sample {only_sample}")
        chosen = [(only_sample, every[only_sample])]
    else:
        chosen = list(enumerate(every[:limit]))
    if not chosen:
        record.extra["skip_reason"] = "no samples"
        return _finish(record, Status.SKIP, Stage.PREPARE, started)

    case_reason = source.shape_only_reason(case)
    recorder = AtenRecorder()
    judged: list[tuple[int, Sample, Numerics]] = []
    failed: list[tuple[int, Sample, Status, CaseFailed]] = []
    rejections: list[tuple[Sample, BaseException]] = []  # samples the CPU reference rejects, and why
    cpu_s, slowest = 0.0, 0.0
    backend.begin_case()
    for index, sample in chosen:
        spent = time.perf_counter() - started
        if budget_s is not None and record.samples and spent + 2 * slowest > BUDGET_SHARE * budget_s:
            record.extra["samples_stopped"] = (f"case budget nearly spent ({spent:.0f} s of {budget_s:g} s): "
                                               f"{len(record.samples)} of {len(chosen)} samples started")
            break
        on_sample(index, sample.label, record.samples, record.samples_available)
        began = time.perf_counter()
        outcome = _sample_outcome(case, sample, index, backend, recorder, on_stage, case_reason)
        slowest = max(slowest, time.perf_counter() - began)
        if isinstance(outcome, CaseFailed):
            status = _failed_status(outcome)
            failed.append((index, sample, status, outcome))
            record.samples.append({"index": index, "status": status.value, "stage": outcome.stage.value})
            record.samples_run += 1
            if not backend.recover():  # a later sample on a broken runtime would only fail for that
                record.extra["samples_stopped"] = f"the runtime did not recover after sample {index}"
                break
        elif isinstance(outcome, BaseException):
            rejections.append((sample, outcome))
            record.samples.append({"index": index, "status": Status.SKIP.value})
        else:
            found, seconds = outcome
            cpu_s += seconds
            record.samples_run += 1
            judged.append((index, sample, found))
            status = Status.PASS if found.verdict in PASSING_VERDICTS else Status.MISMATCH
            record.samples.append({"index": index, "status": status.value, "verdict": found.verdict.value,
                                   "max_abs_err": found.max_abs_err, "ratio": found.ratio})

    record.aten_ops = sorted(recorder.ops)
    record.cpu_s = cpu_s
    _take_counters(record, backend)
    if rejections:
        record.extra["samples_not_applicable"] = len(rejections)
    if judged:
        worst_index, worst_sample, record.numerics = min(judged, key=lambda j: numerics.severity(j[2]))
    if failed:
        index, sample, status, error = min(failed, key=lambda f: SEVERITY.index(f[2]))
        record.worst_sample = {"index": index, "label": sample.label}
        if tracebacks:
            record.extra["traceback"] = "".join(traceback.format_exception(error.error))
        return _finish(record, status, error.stage, started, _failure(error.error, sample))
    if record.samples_run == 0:
        record.extra["skip_reason"] = "the CPU reference rejects every sample"
        sample, error = rejections[0]
        return _finish(record, Status.SKIP, Stage.REFERENCE, started, _failure(error, sample))
    record.worst_sample = {"index": worst_index, "label": worst_sample.label}
    if record.numerics.verdict not in PASSING_VERDICTS:
        status = Status.MISMATCH
    elif record.fallback_ops:
        status = Status.FALLBACK
    else:
        status = Status.PASS
    return _finish(record, status, Stage.DONE, started)


def _failed_status(failed: CaseFailed) -> Status:
    """The status of a sample that raised: by the stage it reached, or a compile error by its message."""
    status = _ERROR_STAGES[failed.stage]
    category, _ = classify.classify("".join(traceback.format_exception_only(type(failed.error), failed.error)))
    return Status.COMPILE_ERROR if category in classify.COMPILE_CATEGORIES else status


def _sample_outcome(case: Case, sample: Sample, index: int, backend: Backend, recorder: AtenRecorder,
                    on_stage: Callable[[Stage], None], case_reason: str | None
                    ) -> tuple[Numerics, float] | CaseFailed | BaseException:
    """One sample's verdict and CPU seconds; the CaseFailed that stopped it; or the CPU reference's error."""
    try:
        ran = _run_sample(case, sample, index, backend, recorder, on_stage)
    except CaseFailed as failed:
        return failed
    if isinstance(ran, BaseException):
        return ran
    leaves, seconds = ran
    try:
        return numerics.judge(leaves, None if sample.values_defined else case_reason), seconds
    except Exception as exc:  # outputs the comparison cannot read: a record, never a dead worker
        return CaseFailed(Stage.COMPARE, exc, sample)


def _run_sample(case: Case, sample: Sample, index: int, backend: Backend, recorder: AtenRecorder,
                on_stage: Callable[[Stage], None]) -> tuple[list[numerics.Leaf], float] | BaseException:
    """Run one sample everywhere; the CPU reference's error when it rejects the sample itself."""
    device = backend.device()
    # OpInfo's post-processing of forward outputs (e.g. the abs of eigenvectors) is part of the
    # comparison, not of the op: it runs on the CPU, as the reference's does. Backward differentiates
    # through it, so it stays on the device there; models' (picking logits) computes nothing.
    host_processed = case.kind == "ops" and case.direction == "forward"
    stage = Stage.TO_DEVICE
    on_stage(stage)
    try:
        # Copied first: an in-place op would otherwise change the inputs under the device's feet.
        dev_args = _map_inputs(sample, lambda t: _copy(t, device), device=device)
    except Exception as exc:
        raise CaseFailed(stage, exc, sample) from None

    on_stage(Stage.REFERENCE)
    cpu_args = _map_inputs(sample, lambda t: _copy(t, torch.device("cpu")))
    recorder.largest = 1
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
            dev_out = _call(sample, dev_args, case.direction, index, device, wrap=backend.wrap,
                            process=not host_processed)
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
        if host_processed:
            stage = Stage.COMPARE
            host_out = sample.output_process(host_out)
    except Exception as exc:
        raise CaseFailed(stage, exc, sample) from None
    name = f"sample {index} {'grad' if case.direction == 'backward' else 'output'}"
    selects = (sample.args[0].detach(), sample.index_dim) \
        if sample.index_dim is not None and isinstance(sample.args[0], torch.Tensor) else None
    backward = case.direction == "backward"
    return numerics.leaves(name, host_out, cpu_out, ref_out, extent=recorder.largest,
                           selects=None if backward else selects, ties=selects if backward else None), cpu_seconds


def _call(sample: Sample, inputs: tuple[tuple, dict], direction: str, index: int, device: torch.device,
          wrap: Callable[[Callable[..., Any]], Callable[..., Any]] = lambda fn: fn,
          trace: Any = None, process: bool = True) -> Any:
    """Forward and train: the outputs, processed (OpInfo's output_process_fn_grad) unless `process` is
    False. Backward: the gradients of the inputs that require grad (of the processed outputs).

    Forward runs without autograd; train runs with it, since its sample takes its own gradients for
    the optimizer step it returns.

    `trace`, a context manager, surrounds only the subject's own forward and backward computation.
    """
    trace = trace or contextlib.nullcontext()
    args, kwargs = inputs
    fn = wrap(sample.fn)
    if direction != "backward":
        with torch.set_grad_enabled(direction == "train"), trace:
            out = fn(*args, **kwargs)
        return sample.output_process(out) if process else out
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
    try:
        inputs = _map_inputs(sample, lambda t: _copy(t, torch.device("cpu"), _WIDE.get(t.dtype)),
                             dtype_map=_WIDE)
        return _call(sample, inputs, direction, index, torch.device("cpu"))
    except Exception:  # many ops have no float64 kernel for some arguments; CPU stands in for it
        return None


def _copy(t: torch.Tensor, device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A leaf copy of `t` on `device` (in `dtype`), requiring grad as `t` does (floating ones only).

    A view of part of a larger storage (as_strided's partial views) is copied with its whole storage
    and rebuilt with the same sizes, strides and offset, so that an op reading through the view
    reaches the same elements on every side; any other tensor is copied as it is.
    """
    grad = t.requires_grad
    t = t.detach()
    if _partial_view(t):
        storage = torch.empty(0, dtype=t.dtype).set_(t.untyped_storage(), 0, (t.untyped_storage().nbytes()
                                                                             // t.element_size(),))
        whole = storage.to(device=device, dtype=dtype or t.dtype, copy=True)
        out = whole.as_strided(t.size(), t.stride(), t.storage_offset()).detach()
    else:
        out = t.to(device=device, dtype=dtype or t.dtype, copy=True)
    return out.requires_grad_(grad and (out.is_floating_point() or out.is_complex()))


def _partial_view(t: torch.Tensor) -> bool:
    """A CPU tensor that starts past its storage's start or ends before its end."""
    if t.device.type != "cpu" or t.layout != torch.strided or t.numel() == 0:
        return False
    span = 1 + sum((size - 1) * abs(stride) for size, stride in zip(t.shape, t.stride()))
    return t.storage_offset() != 0 or t.untyped_storage().nbytes() // t.element_size() > span


def _map_inputs(sample: Sample, fn: Callable[[torch.Tensor], torch.Tensor],
                device: torch.device | None = None,
                dtype_map: dict[torch.dtype, torch.dtype] | None = None) -> tuple[tuple, dict]:
    """Apply `fn` to every tensor of the sample; point a `device=` keyword at `device`; remap dtypes.

    Moving to a `device`, the sample's host inputs (tensors the op takes on the CPU) are copied on the CPU.
    """
    flat, spec = pytree.tree_flatten((tuple(sample.args), dict(sample.kwargs)))

    def leaf(position: int, value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            if device is not None and position in sample.host_inputs:
                return _copy(value, torch.device("cpu"))
            return fn(value)
        if dtype_map and isinstance(value, torch.dtype):
            return dtype_map.get(value, value)
        return value

    args, kwargs = pytree.tree_unflatten([leaf(i, v) for i, v in enumerate(flat)], spec)
    if device is not None and "device" in kwargs:
        kwargs["device"] = device
    return args, kwargs


def _take_counters(record: CaseRecord, backend: Backend) -> None:
    counters = backend.counters()
    record.compiles = counters.compiles
    record.compile_cache_hits = counters.compile_cache_hits
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
