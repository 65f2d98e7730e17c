"""The model to audit and its example inputs, built on fake tensors: from a transformers config, a user's
factory (`pkg.mod:factory`), or a saved `torch.export` program. Nothing is downloaded.

Every builder returns a `Built`: the module, a step (forward call and, for training, the loss), and a
one-line description. Parameters are fake tensors, so a 70B-parameter config costs no memory.
"""

from __future__ import annotations

import difflib
import importlib
import json
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils import _pytree as pytree

from opsuite.audit import AuditError
from opsuite.audit.trace import Recorder, Step

# Config attributes transformers keeps under another name than its constructor's keyword.
_PRIVATE_CONFIG_KEYS = {"attn_implementation": "_attn_implementation",
                        "experts_implementation": "_experts_implementation"}


@dataclass
class Built:
    """A model ready to trace: its step, the fake mode its tensors belong to, and what it is."""

    step: Step
    fake_mode: FakeTensorMode
    description: str


def first_line(exc: BaseException) -> str:
    """`ErrorType: first line of the message`, for one-line reports of a user's code failing."""
    from opsuite.execute import first_line as message

    return f"{type(exc).__name__}: {message(exc)}"


def parse_sets(pairs: list[str]) -> dict[str, Any]:
    """`["num_hidden_layers=2", "rope_theta=1e6", "tie_word_embeddings=false"]` -> typed values (JSON
    where it parses: numbers, true/false/null, lists; text otherwise)."""
    values = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise AuditError(f"--set {pair!r}: expected key=value, e.g. num_hidden_layers=2")
        try:
            values[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            values[key.strip()] = {"True": True, "False": False, "None": None}.get(raw, raw)
    return values


def _parameters(module: torch.nn.Module) -> str:
    count = sum(p.numel() for p in module.parameters())
    return f"{count / 1e9:.2f} B parameters" if count >= 1e8 else f"{count / 1e6:.2f} M parameters"


# ---------------------------------------------------------------- --hf

def hf_config(name: str, sets: dict[str, Any]) -> Any:
    """A transformers config from a local directory's config.json, or a model type's defaults, with `sets`."""
    import transformers

    directory = Path(name)
    if (directory / "config.json").is_file():
        try:
            config = transformers.AutoConfig.from_pretrained(directory, local_files_only=True)
        except Exception as exc:  # a config.json transformers cannot read
            raise AuditError(f"{directory / 'config.json'}: not a transformers config ({first_line(exc)})") from None
    elif directory.exists():
        raise AuditError(f"{directory} has no config.json; give a directory with one, or a model type such as llama")
    else:
        known = list(transformers.CONFIG_MAPPING.keys())
        if name not in known:
            close = difflib.get_close_matches(name, known, n=4)
            raise AuditError(f"unknown model type {name!r} (not a transformers model type, nor a directory with a "
                             f"config.json)" + (f"; did you mean {', '.join(close)}?" if close else ""))
        config = transformers.AutoConfig.for_model(name)
    settable = set(config.to_dict()) | set(_PRIVATE_CONFIG_KEYS)
    for key, value in sets.items():
        if key not in settable:
            close = difflib.get_close_matches(key, sorted(settable), n=3)
            raise AuditError(f"--set {key}: {type(config).__name__} has no such setting"
                             + (f"; did you mean {', '.join(close)}?" if close else ""))
        setattr(config, _PRIVATE_CONFIG_KEYS.get(key, key), value)
    return config


def hf_class(config: Any) -> Any:
    """The model class to build: the config's own `architectures`, else the task head its type has."""
    import transformers

    for arch in config.architectures or ():
        if hasattr(transformers, arch):
            return getattr(transformers, arch)
    mappings = [("MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING", config.is_encoder_decoder),
                ("MODEL_FOR_MASKED_LM_MAPPING", True), ("MODEL_FOR_CAUSAL_LM_MAPPING", True),
                ("MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING", True), ("MODEL_MAPPING", True)]
    for mapping, applies in mappings:
        table = getattr(transformers, mapping)
        if applies and type(config) in table:
            return table[type(config)]
    raise AuditError(f"transformers has no model class for {type(config).__name__}")


def hf_inputs(model: Any, config: Any, batch: int, seq: int, dtype: torch.dtype, train: bool) -> dict[str, Any]:
    """Example inputs for the model's main input: token ids (with labels to train), or images."""
    main = getattr(model, "main_input_name", "input_ids")
    if main == "input_ids":
        vocab = getattr(config, "vocab_size", None) or 100
        ids = torch.randint(0, vocab, (batch, seq))
        inputs: dict[str, Any] = {"input_ids": ids}
        if config.is_encoder_decoder:  # decoder inputs given: a default config may lack its start token
            inputs["decoder_input_ids"] = torch.randint(0, vocab, (batch, max(1, seq // 2)))
            if train:
                inputs["labels"] = inputs["decoder_input_ids"]
        elif train:
            inputs["labels"] = ids
        return inputs
    if main == "pixel_values":
        size = getattr(config, "image_size", 224)
        size = size if isinstance(size, int) else size[0]
        inputs = {"pixel_values": torch.randn(batch, getattr(config, "num_channels", 3), size, size, dtype=dtype)}
        if train and getattr(config, "num_labels", None):
            inputs["labels"] = torch.randint(0, config.num_labels, (batch,))
        return inputs
    raise AuditError(f"{type(model).__name__} takes {main!r}, for which the audit cannot make example inputs; "
                     f"write a factory returning the model and its inputs and use --module")


def from_hf(name: str, sets: dict[str, Any], dtype: torch.dtype, train: bool, batch: int, seq: int) -> Built:
    """A transformers model with random weights, built on fake tensors."""
    config = hf_config(name, sets)
    model_class = hf_class(config)
    fake_mode = FakeTensorMode()
    try:
        # Under a recorder, whose results are dropped: weight initialisers may read values (`.item()`).
        with fake_mode, Recorder({}, str(dtype).removeprefix("torch.")):
            model = model_class._from_config(config, dtype=dtype)
    except Exception as exc:  # the config does not build: the user's config, not opsuite, is at fault
        raise AuditError(f"{model_class.__name__} cannot be built from this config: {first_line(exc)}") from None
    model.train(train)
    with fake_mode:
        inputs = hf_inputs(model, config, batch, seq, dtype, train)
    step = Step(module=model, forward=lambda where: model(**inputs))
    return Built(step, fake_mode, f"{model_class.__name__} ({_parameters(model)}), inputs "
                                  f"{', '.join(f'{k} {tuple(v.shape)}' for k, v in inputs.items())}")


# ---------------------------------------------------------------- --module

def factory(spec: str) -> Any:
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise AuditError(f"--module {spec!r}: expected pkg.mod:factory")
    if "" not in sys.path and str(Path.cwd()) not in sys.path:  # a user's own file in the working directory
        sys.path.insert(0, str(Path.cwd()))
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise AuditError(f"--module {spec}: cannot import {module_name} ({first_line(exc)})") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise AuditError(f"--module {spec}: {module_name} has no callable {attr!r}")
    return factory


def _replace_tensors(module: torch.nn.Module, convert: Any) -> None:
    """Every parameter and buffer of `module` replaced by `convert(tensor)` (a parameter stays one)."""
    for mod in module.modules():
        for name, param in list(mod._parameters.items()):
            if param is not None:
                mod._parameters[name] = torch.nn.Parameter(convert(param.detach()), requires_grad=param.requires_grad)
        for name, buf in list(mod._buffers.items()):
            if buf is not None:
                mod._buffers[name] = convert(buf)


def fakeify(fake_mode: FakeTensorMode, module: torch.nn.Module, inputs: Any) -> Any:
    """Replace real parameters, buffers and inputs by fake ones (a factory that cannot run on fake tensors)."""
    _replace_tensors(module, fake_mode.from_tensor)
    return pytree.tree_map_only(torch.Tensor, fake_mode.from_tensor, inputs)


def cast(fake_mode: FakeTensorMode, module: torch.nn.Module, inputs: Any, dtype: torch.dtype | None) -> Any:
    """Floating parameters, buffers and inputs cast to `dtype` (None: left as they are); the inputs returned.
    (`Module.to` cannot swap the fake tensors' storage, so the tensors are replaced instead.)"""
    if dtype is None:
        return inputs
    def convert(t: torch.Tensor) -> torch.Tensor:
        return t.to(dtype) if t.is_floating_point() else t
    with fake_mode:
        _replace_tensors(module, convert)
        return pytree.tree_map_only(torch.Tensor, convert, inputs)


def model_dtype(module: torch.nn.Module) -> str:
    """The dtype of the module's first floating parameter (float32 when it has none)."""
    first = next((p.dtype for p in module.parameters() if p.is_floating_point()), torch.float32)
    return str(first).removeprefix("torch.")


def _call_factory(factory: Any, spec: str, fake_mode: FakeTensorMode) -> tuple[torch.nn.Module, Any]:
    """The factory's (module, inputs), made on fake tensors when it can be, else for real then faked."""
    try:
        with fake_mode:
            made = factory()
        faked = True
    except Exception:  # maybe only fake tensors upset it (it reads a weight's value): try for real
        try:
            made = factory()
        except Exception as exc:
            raise AuditError(f"--module {spec}: the factory raised {first_line(exc)}") from None
        faked = False
    if not (isinstance(made, tuple) and len(made) == 2 and isinstance(made[0], torch.nn.Module)):
        raise AuditError(f"--module {spec}: the factory must return (torch.nn.Module, example inputs), "
                         f"got {type(made).__name__}")
    module, inputs = made
    if not faked:
        inputs = fakeify(fake_mode, module, inputs)
    return module, inputs


def _caller(module: Any, inputs: Any):
    if isinstance(inputs, dict):
        return lambda where: module(**inputs)
    if isinstance(inputs, (tuple, list)):
        return lambda where: module(*inputs)
    return lambda where: module(inputs)


def from_module(spec: str, dtype: torch.dtype | None, train: bool) -> Built:
    """A user's module and inputs from `pkg.mod:factory`; floating parameters and inputs cast to `dtype`."""
    fake_mode = FakeTensorMode()
    module, inputs = _call_factory(factory(spec), spec, fake_mode)
    inputs = cast(fake_mode, module, inputs, dtype)
    module.train(train)
    return Built(Step(module=module, forward=_caller(module, inputs)), fake_mode,
                 f"{type(module).__name__} from {spec} ({_parameters(module)})")


# ---------------------------------------------------------------- --exported

def from_exported(path: str, dtype: torch.dtype | None, train: bool) -> Built:
    """A saved torch.export program, run node by node so that each op keeps its module path and line."""
    from opsuite.audit.exported import exported_step

    file = Path(path)
    if not file.is_file():
        raise AuditError(f"--exported {path}: no such file")
    try:
        with warnings.catch_warnings():
            # torch 2.9's loader reads weights with torch.frombuffer over a read-only buffer and warns about
            # it; the program is only traced on fake tensors here, its weights never written.
            warnings.filterwarnings("ignore", message="The given buffer is not writable", category=UserWarning)
            program = torch.export.load(str(file))
    except Exception as exc:
        raise AuditError(f"--exported {path}: not a torch.export program ({first_line(exc)})") from None
    fake_mode = FakeTensorMode(allow_non_fake_inputs=True)
    step = exported_step(program, fake_mode, dtype)  # its graph fixes train or eval: nothing to set
    return Built(step, fake_mode, f"exported program {file.name} ({_parameters(step.module)})")
