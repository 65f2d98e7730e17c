"""Error classification: compiler and runtime messages -> (category, the compiler's error code).

One table, `RULES`, first match wins, so the specific rules come before the general ones. Each rule
names where its message was seen. Codes are read from the message itself (`NCC_EVRF001`, `[XTP003]`,
`[F134]`, a runtime status such as `NRT_RESOURCE`, Dynamo's graph-break code `GB0036`), so a code the
table has never seen is still reported.
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


# Sources: "ref" is ../shared/reference/neuron.md (the compiler's error-code list,
# compiler/error-codes/index.rst, and the strings of its section 4); "sdk #N" is an issue of
# aws-neuron/aws-neuron-sdk; other repositories are named in full; "measured" was seen on this
# project's own machines (torch 2.13 Dynamo / Inductor, torch-xla 2.9 on XLA:CPU).
RULES: list[Rule] = [
    # -- the device or its cores cannot be had: nothing about the case itself
    # "NeuronCore(s) not available" (ref); "Virtual Neuron Core(s) not available" (sdk #1065);
    # "Neuron runtime cannot be initialized; cannot determine the number of available NeuronCores",
    # which the maintainers traced to another process holding the cores (aws-neuron-samples #44).
    _rule(r"Neuron ?Core\(s\) not available|ERROR\s+NRT:nrt_allocate_neuron_cores"
          r"|cannot determine the number of available NeuronCores", CORES_BUSY),
    # PJRT with no device (ref, #902); "TDRV:tdrv_get_dev_info No neuron device available"
    # (aws-neuron-samples #44); PyTorch's own CUDA messages (torch/cuda/__init__.py).
    _rule(r"PJRT_Client_Create.*num_devices > 0|No neuron device|Found no NVIDIA driver"
          r"|No CUDA GPUs are available", NO_DEVICE),

    # -- the compiler's documented codes (ref)
    _rule(r"NCC_E(VRF001|UOC002)", UNSUPPORTED_OPERATOR),
    _rule(r"NCC_EVRF004", UNSUPPORTED_DTYPE),
    _rule(r"NCC_E(VRF007|BVF030|XTP004)|\[XTP003\]|Number of instructions .* is over the threshold",
          TOO_MANY_INSTRUCTIONS),
    _rule(r"NCC_E(OOM001|VRF009)", DEVICE_MEMORY),
    _rule(r"NCC_EMOD025", DYNAMIC_SHAPE),
    # NCC_I...: the compiler's internal errors, "INTERNAL_ERROR NCC_INLA001: ..." (sdk #1314).
    _rule(r"NCC_I[A-Z]{3}\d{3}", COMPILER_CRASH),

    # -- operators and dtypes the stack has no implementation for
    # "ERROR: Unsupported operator: erf" from VerifySupportedHloOps (sdk #1081);
    # "Unsupported CustomCall target: ResizeBilinear" (sdk #889);
    # "The following operators are not implemented: {...}" (sdk #343, neuron-cc);
    # TorchNeuron's "Operation X is not implemented for Neuron" (ref, section 3);
    # PyTorch's dispatcher with no kernel and no fallback for the device's key.
    _rule(r"Unsupported operator: |Unsupported CustomCall target|following operators are not implemented"
          r"|Operation \S+ is not implemented for Neuron"
          r"|Could not run '[^']+' with arguments from the '(PrivateUse1|neuron)' backend",
          UNSUPPORTED_OPERATOR),
    # torch-xla's "Error while lowering: ... Unsupported XLA type 12" (pytorch/xla #1725, #2897):
    # the lowering failed because of the dtype, so the dtype is the more useful name.
    _rule(r"Unsupported XLA type \d+", UNSUPPORTED_DTYPE),

    # -- shapes known only at run time
    # Dynamo: "Dynamic shape operator" graph break (gb0036), data-dependent guards, FakeTensor's
    # DynamicOutputShapeException (measured, torch 2.13).
    # Inductor comparing symbolic sizes it cannot decide, "cannot determine truth value of Relational:
    # 3*s50*s69 < 3" (measured, torch 2.13, conv2d backward recompiled for dynamic shapes).
    _rule(r"Dynamic shape operator|DynamicOutputShapeException|GuardOnDataDependentSymNode"
          r"|data-dependent (expression|output)|cannot determine truth value of Relational", DYNAMIC_SHAPE),

    # -- device memory at run time
    # "TDRV:dmem_alloc_internal Failed to alloc DEVICE memory: 180355072" and "Failed to allocate
    # 180355072 bytes on DEVICE for tensor UNKNOWN." (sdk #1014); "nrt_tensor_allocate status=4
    # message="Allocation Failure"" (vllm-project/vllm #12443); "Failure: NRT_RESOURCE in nrt_load()"
    # (huggingface/optimum-neuron #668).
    _rule(r"Failed to alloc(ate)? (\d+ bytes on )?DEVICE|nrt_tensor_allocate status=\d+|NRT_RESOURCE",
          DEVICE_MEMORY),

    # -- lowering: the op is known but this instance could not be translated
    # torch-xla: "Error while lowering: [] aten::svd, num_outputs=3, ..." (measured on XLA:CPU) and
    # (pytorch/xla #2897); Inductor's LoweringException (measured, torch 2.13).
    _rule(r"Error while lowering|LoweringException", LOWERING_ERROR),

    # -- the compiler itself failed
    # "[TEN404] Internal tensorizer error", "RunNeuronCCImpl", "Failed compilation with" (ref, #881);
    # "neuronx-cc failed with 1" (ref, #806, #690), "... with -1" (sdk #708), "... with -9" (sdk #706);
    # "INTERNAL: neuronx-cc compilation failed." (ref, #601, #811); "crashed (SEGFAULT)" (ref, #751);
    # "[F134] neuronx-cc terminated abnormally" (ref, #1000); "An Internal Compiler Error has occurred"
    # (sdk #685, #1118); "Compilation failed for lora with error Command '['neuronx-cc', ...]" (sdk #1000);
    # Inductor's C++ compile error and backend failures (measured, torch 2.13).
    _rule(r"crashed \(SEGFAULT\)|terminated abnormally|\[TEN404\]|Internal tensorizer error"
          r"|An Internal Compiler Error has occurred|CompilerInternalError", COMPILER_CRASH),
    _rule(r"neuronx-cc failed with|neuronx-cc compilation failed|RunNeuronCCImpl|Failed compilation with"
          r"|Compilation failed for \S+ with error Command", COMPILER_CRASH),
    _rule(r"CppCompileError|BackendCompilerFailed|InductorError", COMPILER_CRASH),
]

# NCC_EVRF001 / NCC_INLA001; a bracketed [XTP003], [NLA001], [F134]; a runtime status NRT_RESOURCE;
# Dynamo's graph-break code, written gb0036 in its messages.
_CODE = re.compile(r"\b(NCC_[A-Z]{4}\d{3})\b|\[([A-Z]{1,4}\d{3})\]|\b(NRT_[A-Z]+(?:_[A-Z]+)*)\b"
                   r"|\b(gb\d{4})\b")


def error_code(text: str) -> str | None:
    """The first error code in `text`: `NCC_EVRF001`, a bracketed `XTP003`, `NRT_RESOURCE`, `GB0036`."""
    match = _CODE.search(text)
    if not match:
        return None
    return next(group for group in match.groups() if group).upper()


def classify(text: str) -> tuple[str | None, str | None]:
    """(category, code) for an error message; (None, code) when no rule matches."""
    code = error_code(text)
    for rule in RULES:
        if rule.pattern.search(text):
            return rule.category, code
    return None, code
