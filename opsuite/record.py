"""The outcome record: what happened when one case ran on one backend.

Every later stage (results store, matrix, diff, lookup, regression mode) reads these records, so the
vocabulary here is the project's vocabulary. A record is a plain dataclass that serialises to one JSON
object; `opsuite/schema.py` holds the JSON schema that validates it.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
from dataclasses import dataclass, field
from typing import Any

from opsuite import vocabulary


class Status(str, enum.Enum):
    """How a case ended (the words of `vocabulary.STATUSES`); `SEVERITY` orders them worst first."""

    PASS = "pass"                    # ran on the device, numerics within the verdict's bounds
    FALLBACK = "fallback"            # ran and matched, but named aten ops ran on the host
    MISMATCH = "mismatch"            # ran, but the numbers (or shapes, dtypes) are wrong
    COMPILE_ERROR = "compile_error"  # the graph did not compile (or lower)
    RUNTIME_ERROR = "runtime_error"  # compiled, or eager, and raised while running
    CRASH = "crash"                  # the process running the case died
    TIMEOUT = "timeout"              # the case ran past its time budget and was killed
    SKIP = "skip"                    # not applicable: the CPU reference itself cannot run it

    def __str__(self) -> str:
        return self.value


# Worst first: when several things went wrong in one case, the record keeps the worst.
SEVERITY = [Status(s) for s in vocabulary.SEVERITY]

# Statuses in which the case produced a device result that can be trusted as a port target.
WORKING = {Status(s) for s in vocabulary.WORKING}


class Stage(str, enum.Enum):
    """How far a case got. The stage of a failure says which part of the stack refused it."""

    PREPARE = "prepare"        # building sample inputs
    REFERENCE = "reference"    # running the CPU references
    TO_DEVICE = "to_device"    # copying inputs to the device
    TRACE = "trace"            # dispatching the op on the device (eager kernel or lazy trace)
    COMPILE = "compile"        # compiling the traced graph
    EXECUTE = "execute"        # running the compiled graph
    TO_HOST = "to_host"        # copying results back
    COMPARE = "compare"        # numerics against the reference
    DONE = "done"

    def __str__(self) -> str:
        return self.value


class Verdict(str, enum.Enum):
    """Why the numerics were judged as they were (see `opsuite/numerics.py`)."""

    CLOSE = "close"                          # within the dtype's tolerance of the float64 reference
    AS_ACCURATE_AS_CPU = "as_accurate_as_cpu"  # outside tolerance, but no less accurate than CPU itself
    ACCUMULATION_ORDER = "accumulation_order"  # low-precision rounding of a reordered accumulation
    ROUNDING_NOISE = "rounding_noise"        # an exactly-zero output, off by rounding noise of the case's scale
    SHAPE_ONLY = "shape_only"                # random or undefined output: only shape and dtype compared
    EXACT = "exact"                          # integer or bool outputs, equal
    WRONG = "wrong"                          # values wrong
    SHAPE_MISMATCH = "shape_mismatch"
    DTYPE_MISMATCH = "dtype_mismatch"
    NONFINITE_MISMATCH = "nonfinite_mismatch"  # NaN or inf where the reference has none (or vice versa)

    def __str__(self) -> str:
        return self.value


PASSING_VERDICTS = {Verdict.CLOSE, Verdict.AS_ACCURATE_AS_CPU, Verdict.ACCUMULATION_ORDER, Verdict.ROUNDING_NOISE,
                    Verdict.SHAPE_ONLY, Verdict.EXACT}


@dataclass
class Numerics:
    """Error of the device result, and of CPU's own same-dtype result, against a float64 reference.

    `ratio` is AWS's equivalence measure R = ||device - ref|| / ||cpu - ref|| (2-norms over every
    compared element): about 1 when the device is exactly as accurate as the CPU in that dtype.
    """

    verdict: Verdict
    max_abs_err: float | None = None
    max_rel_err: float | None = None
    cpu_max_abs_err: float | None = None
    cpu_max_rel_err: float | None = None
    ratio: float | None = None
    atol: float | None = None
    rtol: float | None = None
    reference_dtype: str | None = None
    worst_output: str | None = None  # which output (or gradient) the worst figures come from
    note: str | None = None

    def to_json(self) -> dict[str, Any]:
        return _plain(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Numerics":
        return cls(**{**_known_fields(cls, data), "verdict": Verdict(data["verdict"])})


@dataclass
class Failure:
    """What an error looked like: enough to classify it and to reproduce it."""

    error_type: str
    message: str                      # first line of the message
    sample: str | None = None         # repr of the sample that failed
    category: str | None = None       # from opsuite/classify.py
    code: str | None = None           # the compiler's own error code, e.g. NCC_EVRF001

    def to_json(self) -> dict[str, Any]:
        return _plain(self)


@dataclass
class CaseRecord:
    """One case's outcome on one backend: one line of a results file."""

    case_id: str
    status: Status
    stage: Stage
    backend: str
    samples_run: int = 0                # samples the device ran (not those the CPU reference rejects)
    samples_available: int | None = None  # samples the case has; None in records before it was kept
    # Each sample's compact result, in order: {"index", "status", and "verdict", "max_abs_err", "ratio"
    # for one that ran to the end, or "stage" for one that raised}.
    samples: list[dict[str, Any]] = field(default_factory=list)
    worst_sample: dict[str, Any] | None = None  # {"index", "label"}: the sample the figures come from
    fallback_ops: list[str] = field(default_factory=list)   # aten ops that ran on the host
    host_syncs: list[str] = field(default_factory=list)     # .item()-style syncs, not missing lowerings
    aten_ops: list[str] = field(default_factory=list)       # aten overloads the case dispatches on CPU
    compiles: int | None = None
    compile_s: float | None = None
    device_s: float | None = None
    cpu_s: float | None = None
    wall_s: float | None = None
    numerics: Numerics | None = None
    failure: Failure | None = None
    extra: dict[str, Any] = field(default_factory=dict)      # backend-specific facts, e.g. graph breaks

    def to_json(self) -> dict[str, Any]:
        """The JSON object written as one results line (without the `kind` tag)."""
        return _plain(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "CaseRecord":
        """Inverse of `to_json`; unknown keys (such as `kind`, or a newer minor schema's fields) are ignored."""
        kwargs = _known_fields(cls, data)
        kwargs["status"] = Status(data["status"])
        kwargs["stage"] = Stage(data["stage"])
        kwargs["numerics"] = Numerics.from_json(data["numerics"]) if data.get("numerics") else None
        kwargs["failure"] = Failure(**_known_fields(Failure, data["failure"])) if data.get("failure") else None
        return cls(**kwargs)


_ATOMS = (str, int, float, bool, type(None))


def _plain(value: Any) -> Any:
    """A dataclass as JSON-ready data: like `dataclasses.asdict` with enums as their values, without its
    deep copies of every leaf (a large publish converts a hundred thousand records)."""
    if type(value) in _ATOMS:
        return value
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (list, tuple)):  # atoms inline: no call per op name of a long list
        return [item if type(item) in _ATOMS else _plain(item) for item in value]
    if isinstance(value, dict):
        return {key: item if type(item) in _ATOMS else _plain(item) for key, item in value.items()}
    if dataclasses.is_dataclass(value):  # atoms inline, as above: most fields are atoms
        return {name: item if type(item := getattr(value, name)) in _ATOMS else _plain(item)
                for name in _field_names(type(value))}
    return value


def _known_fields(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """The items of `data` that are fields of the dataclass `cls`: a newer writer's extra keys are ignored."""
    names = _field_names(cls)
    return {k: v for k, v in data.items() if k in names}


@functools.cache
def _field_names(cls: type) -> dict[str, None]:
    """The field names of a dataclass, in order (a dict: ordered, and quick to test membership)."""
    return dict.fromkeys(f.name for f in dataclasses.fields(cls))


def worst(statuses: list[Status]) -> Status:
    """The most severe of several statuses (PASS for none)."""
    if not statuses:
        return Status.PASS
    return min(statuses, key=SEVERITY.index)
