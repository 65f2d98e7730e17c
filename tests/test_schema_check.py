"""The compiled fast path never passes what jsonschema refuses (it may refuse more: those go to jsonschema)."""

import copy
import gzip
import json
from pathlib import Path

import jsonschema
import pytest

from opsuite.schema_check import Validator, compile_schema

ROOT = Path(__file__).resolve().parent.parent
WRONG = [None, True, 0, -1, 1.5, "", "x", "..", [], ["x", 1], {}, {"verdict": "great"}]


def _schemas():
    results = json.loads((ROOT / "opsuite/schemas/results-v1.json").read_text())
    return {part: {**results["$defs"][part], "$defs": results["$defs"]} for part in ("header", "case")}


def _real_lines():
    file = next(ROOT.glob("matrix/xla/*/results/*.jsonl.gz"))  # the published xla run, whatever its name
    lines = [json.loads(raw) for raw in gzip.decompress(file.read_bytes()).decode().splitlines()]
    cases = [line for line in lines if line["kind"] == "case"]
    with_failure = next(c for c in cases if c["failure"])
    with_numerics = next(c for c in cases if c["numerics"])
    return lines[0], [with_failure, with_numerics]


def _mutations(obj):
    """Each top-level and nested field deleted or set to each wrong value."""
    for key in obj:
        dropped = dict(obj)
        del dropped[key]
        yield dropped
        for value in WRONG:
            yield {**obj, key: value}
        if isinstance(obj[key], dict):
            for inner in _mutations(obj[key]):
                yield {**obj, key: inner}


def test_fast_path_is_never_more_lenient_than_jsonschema():
    schemas = _schemas()
    header, cases = _real_lines()
    checked = 0
    for part, objs in (("header", [header]), ("case", cases)):
        fast = compile_schema(schemas[part])
        slow = jsonschema.validators.validator_for(schemas[part])(schemas[part])
        for obj in objs:
            assert fast(obj) and slow.is_valid(obj)  # real lines take the fast path
            for mutated in _mutations(copy.deepcopy(obj)):
                checked += 1
                if fast(mutated):
                    assert slow.is_valid(mutated), mutated
    assert checked > 500


def test_validator_gives_jsonschema_message():
    validator = Validator(_schemas()["case"])
    _, cases = _real_lines()
    assert validator.problem(cases[0]) is None
    assert "status" in validator.problem({**cases[0], "status": "great"})


def test_unknown_keywords_are_refused_not_skipped():
    with pytest.raises(ValueError, match="'oneOf' is not supported"):
        compile_schema({"oneOf": [{"type": "string"}]})
