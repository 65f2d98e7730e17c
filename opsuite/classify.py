"""Error classification: compiler and runtime messages -> (category, the compiler's error code).

One table, `RULES`, first match wins. Codes are read from the message itself (`NCC_EVRF001`,
`[XTP003]`, `[TEN404]`), so a code the table has never seen is still reported.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Categories
UNSUPPORTED_OPERATOR = "unsupported_operator"
UNSUPPORTED_DTYPE = "unsupported_dtype"
TOO_MANY_INSTRUCTIONS = "too_many_instructions"
DEVICE_MEMORY = "device_memory"
DYNAMIC_SHAPE = "dynamic_shape"
COMPILER_CRASH = "compiler_crash"
LOWERING_ERROR = "lowering_error"
NO_DEVICE = "no_device"
CORES_BUSY = "cores_busy"

# Categories that mean the graph never compiled, whatever stage the error surfaced in.
COMPILE_CATEGORIES = frozenset({UNSUPPORTED_OPERATOR, UNSUPPORTED_DTYPE, TOO_MANY_INSTRUCTIONS,
                                DYNAMIC_SHAPE, COMPILER_CRASH, LOWERING_ERROR})


@dataclass(frozen=True)
class Rule:
    """A message pattern and the category it means."""

    pattern: re.Pattern[str]
    category: str


def _rule(pattern: str, category: str) -> Rule:
    return Rule(re.compile(pattern, re.IGNORECASE), category)


RULES: list[Rule] = [
    _rule(r"NCC_E(VRF001|UOC002)", UNSUPPORTED_OPERATOR),
    _rule(r"NCC_EVRF004", UNSUPPORTED_DTYPE),
    _rule(r"NCC_E(VRF007|BVF030|XTP004)|\[XTP003\]|Number of instructions .* is over the threshold",
          TOO_MANY_INSTRUCTIONS),
    _rule(r"NCC_E(OOM001|VRF009)", DEVICE_MEMORY),
    _rule(r"NCC_EMOD025", DYNAMIC_SHAPE),
    _rule(r"crashed \(SEGFAULT\)|\[F134\]|terminated abnormally|\[TEN404\]|Internal tensorizer error",
          COMPILER_CRASH),
    _rule(r"neuronx-cc failed with|neuronx-cc compilation failed|RunNeuronCCImpl|Failed compilation with",
          COMPILER_CRASH),
    _rule(r"NeuronCore\(s\) not available|nrt_allocate_neuron_cores", CORES_BUSY),
    _rule(r"PJRT_Client_Create.*num_devices > 0|No neuron device", NO_DEVICE),
]

_CODE = re.compile(r"\b(NCC_[A-Z]{4}\d{3})\b|\[([A-Z]{2,4}\d{3})\]")


def error_code(text: str) -> str | None:
    """The first compiler error code in `text`: `NCC_EVRF001`, or a bracketed `XTP003` / `TEN404`."""
    match = _CODE.search(text)
    if not match:
        return None
    return match.group(1) or match.group(2)


def classify(text: str) -> tuple[str | None, str | None]:
    """(category, code) for an error message; (None, code) when no rule matches."""
    code = error_code(text)
    for rule in RULES:
        if rule.pattern.search(text):
            return rule.category, code
    return None, code
