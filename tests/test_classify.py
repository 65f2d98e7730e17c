"""The classifier against real messages: every string of the reference file, and ones from issue threads."""

import pytest

from opsuite import classify
from opsuite.classify import (CORES_BUSY, COMPILER_CRASH, DEVICE_MEMORY, DYNAMIC_SHAPE, LOWERING_ERROR,
                              NO_DEVICE, TOO_MANY_INSTRUCTIONS, UNSUPPORTED_DTYPE, UNSUPPORTED_OPERATOR)

# ../shared/reference/neuron.md, sections 3 and 4, verbatim.
REFERENCE = [
    ("RuntimeError: neuronx-cc failed with 1", COMPILER_CRASH, None),
    ("ERROR ||NEURON_CC_WRAPPER||: Failed compilation with ['neuronx-cc', 'compile', '--target=trn1', ...]",
     COMPILER_CRASH, None),
    ("[TEN404] Internal tensorizer error", COMPILER_CRASH, "TEN404"),
    ("F ./torch_xla/csrc/runtime/debug_macros.h:20] Non-OK-status: status.status() status: INTERNAL: "
     "RunNeuronCCImpl: error condition error != 0: <class 'subprocess.CalledProcessError'>", COMPILER_CRASH, None),
    ("INTERNAL: neuronx-cc compilation failed.", COMPILER_CRASH, None),
    ("INTERNAL_ERROR NCC_INLA001: the number of activation tables must be <= 8", COMPILER_CRASH, "NCC_INLA001"),
    ("[XTP003] Number of instructions (10046893) is over the threshold (5000000)", TOO_MANY_INSTRUCTIONS, "XTP003"),
    ("The neuronx-cc (neuron compiler) crashed (SEGFAULT).", COMPILER_CRASH, None),
    ("[F134] neuronx-cc terminated abnormally", COMPILER_CRASH, "F134"),
    ("RuntimeError: Bad StatusOr access: INVALID_ARGUMENT: PJRT_Client_Create: ... !(num_devices > 0)",
     NO_DEVICE, None),
    ("ERROR NRT:nrt_allocate_neuron_cores NeuronCore(s) not available - Requested:nc1-nc1 Available:0",
     CORES_BUSY, None),
    ("NotImplementedError: Operation X is not implemented for Neuron", UNSUPPORTED_OPERATOR, None),
]

# The compiler's documented error codes (reference file, compiler/error-codes/index.rst).
CODES = [
    ("NCC_EVRF001", UNSUPPORTED_OPERATOR), ("NCC_EUOC002", UNSUPPORTED_OPERATOR),
    ("NCC_EVRF004", UNSUPPORTED_DTYPE),
    ("NCC_EVRF007", TOO_MANY_INSTRUCTIONS), ("NCC_EBVF030", TOO_MANY_INSTRUCTIONS),
    ("NCC_EXTP004", TOO_MANY_INSTRUCTIONS),
    ("NCC_EOOM001", DEVICE_MEMORY), ("NCC_EVRF009", DEVICE_MEMORY),
    ("NCC_EMOD025", DYNAMIC_SHAPE),
]

# Public issue threads (repository and number) and messages measured on this project's machines.
THREADS = [
    # aws-neuron/aws-neuron-sdk #1065
    ("2024-Dec-11 17:43:58.780308 45075:45075 ERROR   NRT:nrt_allocate_neuron_cores               "
     "Virtual Neuron Core(s) not available - Requested:2 Available:0 Virtual Core size 1", CORES_BUSY, None),
    # aws-neuron/aws-neuron-samples #44
    ("RuntimeError: Neuron runtime cannot be initialized; cannot determine the number of available NeuronCores",
     CORES_BUSY, None),
    ("ERROR  TDRV:tdrv_get_dev_info                       No neuron device available", NO_DEVICE, None),
    # aws-neuron/aws-neuron-sdk #1081
    ("2025-01-06 11:49:42.255433: F hilo/hlo_passes/VerifySupportedHloOps.cc:160] ERROR: Unsupported operator: erf",
     UNSUPPORTED_OPERATOR, None),
    # aws-neuron/aws-neuron-sdk #889
    ("Unsupported CustomCall target: ResizeBilinear", UNSUPPORTED_OPERATOR, None),
    # aws-neuron/aws-neuron-sdk #343
    ("Failed to parse model /home/ec2-user/gongxh/./tfx_bed/: The following operators are not implemented: "
     "{'PlaceholderWithDefault', 'SaveV2'}", UNSUPPORTED_OPERATOR, None),
    # pytorch/xla #1725
    ("Error while lowering: f32[32,24,112,112]{3,2,1,0} aten::mul Error: torch_xla/csrc/convert_ops.cpp:49 : "
     "Unsupported XLA type 12", UNSUPPORTED_DTYPE, None),
    # measured: torch-xla 2.9 on XLA:CPU, ops/linalg.svd
    ("RuntimeError: Error while lowering: [] aten::svd, num_outputs=3, xla_shape=(f32[0,0]{1,0}, f32[0]{0}, "
     "f32[0,0]{1,0}), dynamic_dims: (), some=0, compute_uv=1", LOWERING_ERROR, None),
    # aws-neuron/aws-neuron-sdk #1014
    ("2024-Oct-15 18:01:17.728750  3882:3882  ERROR  TDRV:dmem_alloc_internal                     "
     "Failed to alloc DEVICE memory: 180355072", DEVICE_MEMORY, None),
    ("ERROR  TDRV:tensor_allocate                         Failed to allocate 180355072 bytes on DEVICE for tensor "
     "UNKNOWN.", DEVICE_MEMORY, None),
    # vllm-project/vllm #12443
    ('RuntimeError: nrt_tensor_allocate status=4 message="Allocation Failure"', DEVICE_MEMORY, None),
    # huggingface/optimum-neuron #668
    ("ERROR   NRT:nrt_infodump                            Failure: NRT_RESOURCE in nrt_load()",
     DEVICE_MEMORY, "NRT_RESOURCE"),
    # aws-neuron/aws-neuron-sdk #708, #706
    ("RuntimeError: neuronx-cc failed with -1", COMPILER_CRASH, None),
    ("RuntimeError: neuronx-cc failed with -9", COMPILER_CRASH, None),
    # aws-neuron/aws-neuron-sdk #1000
    ("RuntimeError: Compilation failed for lora with error Command '['neuronx-cc', 'compile', '--framework', "
     "'XLA', 'penguin.py']' returned non-zero exit status 70.", COMPILER_CRASH, None),
    # aws-neuron/aws-neuron-sdk #1118: an internal error about SBUF allocation, not device memory
    ("2025-02-24T00:04:00Z ERROR 5521 [neuronxcc.driver.CommandDriver]:  An Internal Compiler Error has occurred\n"
     "2025-02-24T00:04:00Z USER 5521 [neuronxcc.driver.CommandDriver]: [NLA001]  Unhandled exception with message: "
     "Allocated memory out of bound", COMPILER_CRASH, "NLA001"),
    # aws-neuron/aws-neuron-sdk #685
    ("2023-06-10T18:52:46Z ERROR 291220 [neuronx-cc]:  An Internal Compiler Error has occurred\n"
     "2023-06-10T18:52:46Z ERROR 291220 [neuronx-cc]: Error message:  unexpected operator <ufunc 'invert'>",
     COMPILER_CRASH, None),
    # measured: torch 2.13 Dynamo, torch.nonzero under fullgraph
    ("torch._dynamo.exc.Unsupported: Dynamic shape operator\n  Explanation: Operator `aten.nonzero.default`'s "
     "output shape depends on input Tensor data.\n\n For more details about this graph break, please visit: "
     "https://meta-pytorch.github.io/compile-graph-break-site/gb/gb0036.html", DYNAMIC_SHAPE, "GB0036"),
    # measured: torch 2.13 Inductor, ops/nn.functional.conv2d/float32/backward recompiled for dynamic shapes
    ("TypeError: cannot determine truth value of Relational: 3*s50*s69 < 3", DYNAMIC_SHAPE, None),
    # PyTorch's dispatcher, on a PrivateUse1 device renamed `neuron`, for an op with no kernel and no fallback
    ("NotImplementedError: Could not run 'aten::tan' with arguments from the 'neuron' backend.",
     UNSUPPORTED_OPERATOR, None),
    # PyTorch, torch/cuda/__init__.py
    ("RuntimeError: Found no NVIDIA driver on your system.", NO_DEVICE, None),
]


@pytest.mark.parametrize("text,category,code", REFERENCE + THREADS, ids=lambda v: str(v)[:50])
def test_messages(text, category, code):
    assert classify.classify(text) == (category, code)


@pytest.mark.parametrize("code,category", CODES)
def test_documented_codes(code, category):
    assert classify.classify(f"ERROR {code}: the compiler refused the graph") == (category, code)


def test_unknown_code_is_still_reported():
    assert classify.classify("ERROR NCC_EABC123: something new") == (None, "NCC_EABC123")


def test_unrelated_message_has_no_category_or_code():
    assert classify.classify("ValueError: expected a 2-D tensor, NEURON_RT_VISIBLE_CORES=3") == (None, None)


def test_compile_categories_are_the_compiler_ones():
    """Device-level categories never turn a runtime error into a compile error."""
    assert {NO_DEVICE, CORES_BUSY, DEVICE_MEMORY}.isdisjoint(classify.COMPILE_CATEGORIES)
    assert {UNSUPPORTED_OPERATOR, LOWERING_ERROR, COMPILER_CRASH} <= classify.COMPILE_CATEGORIES
