"""One vocabulary: the JSON schemas, the record's enums and the modules that order or colour statuses agree."""

import json
import re
from pathlib import Path

import pytest

from opsuite import vocabulary
from opsuite.matrix import render_md
from opsuite.record import SEVERITY, WORKING, Stage, Status
from opsuite.summary import STATUS_COLUMNS

SCHEMAS = Path(__file__).resolve().parent.parent / "opsuite" / "schemas"


def _schema(name):
    return json.loads((SCHEMAS / name).read_text())


def test_schemas_spell_the_vocabulary():
    results, snapshot = _schema("results-v1.json"), _schema("snapshot-v1.json")
    case = results["$defs"]["case"]["properties"]
    assert case["status"]["enum"] == list(vocabulary.STATUSES)
    assert snapshot["$defs"]["cell"]["properties"]["status"]["enum"] == list(vocabulary.STATUSES)
    assert case["stage"]["enum"] == [s.value for s in Stage]
    name = f"^{vocabulary.NAME_PATTERN}$"
    assert case["case_id"]["pattern"] == f"^{vocabulary.CASE_ID_PATTERN}$"
    assert snapshot["properties"]["cells"]["propertyNames"]["pattern"] == f"^{vocabulary.CASE_ID_PATTERN}$"
    header = results["$defs"]["header"]["properties"]
    assert header["backend"]["pattern"] == header["run_id"]["pattern"] == case["backend"]["pattern"] == name
    assert snapshot["properties"]["backend"]["pattern"] == snapshot["properties"]["key"]["pattern"] == name


def test_every_status_has_its_place_and_colour():
    assert [s.value for s in Status] == list(vocabulary.STATUSES)
    assert sorted(vocabulary.SEVERITY) == sorted(vocabulary.STATUSES) == sorted(vocabulary.STATUS_COLORS)
    assert [s.value for s in SEVERITY] == list(vocabulary.SEVERITY)
    assert {s.value for s in WORKING} == vocabulary.WORKING
    assert [s.value for s in STATUS_COLUMNS] == list(render_md.STATUSES) == list(vocabulary.STATUSES)


@pytest.mark.parametrize("name", ["cpu", "neuron-xla", "torch_xla-2.9.0__torch-2.9.0+cu128__pjrt_device-CPU__1152726549",
                                  "torch-2.11.0+cu130__5f6d6befe1", "cpu-20261130-152918-8d9cab"])
def test_real_names_are_names(name):
    assert vocabulary.is_name(name)


@pytest.mark.parametrize("name", ["", ".", "..", ".hidden", "-x", "javascript:alert(1)//", "a/b", "a b", "x" * 201,
                                  "é", "a\nb"])
def test_other_names_are_refused(name):
    assert not vocabulary.is_name(name)
    with pytest.raises(ValueError, match="not a valid name"):
        vocabulary.check_name(name, "backend")


def test_case_ids_parse_and_format():
    parts = vocabulary.parse_case_id("ops/nn.functional.softmax/bfloat16/backward")
    assert parts == ("ops", "nn.functional.softmax", "bfloat16", "backward")
    assert parts.subject == "ops/nn.functional.softmax" and str(parts) == "ops/nn.functional.softmax/bfloat16/backward"
    assert vocabulary.format_case_id(*parts) == str(parts)
    for bad in ("ops/add/float32", "ops/../float32/forward", "ops/add/float32/sideways", "ops//float32/forward",
                "ops/<script>/float32/forward", "ops/a/b/float32/forward"):
        with pytest.raises(ValueError, match="not a case id"):
            vocabulary.parse_case_id(bad)


def test_typed_case_ids_and_cell_keys_split_into_their_parts():
    typed = vocabulary.split_typed_case_id("ops/F.softmax/float32/backward")  # the name as a user spells it
    assert typed.subject == "ops/F.softmax" and typed.cell == "float32/backward"
    assert vocabulary.split_typed_case_id("ops/softmax/float32") is None
    assert vocabulary.split_typed_case_id("softmax") is None
    assert vocabulary.parse_cell_key(typed.cell) == ("float32", "backward")
    with pytest.raises(ValueError):
        vocabulary.parse_cell_key("float32")


# `.split("/")` or `.rsplit("/", ...)`, with either quote: how a module cuts a case id into parts by hand.
_CUT_BY_HAND = re.compile(r"""\.r?split\(\s*["']/["']""")


def test_no_module_cuts_a_case_id_by_hand():
    """Case ids are cut into parts by the vocabulary only: a `split("/")` elsewhere in the package is a
    second parser that a new part or pattern would miss. A line that splits something else (a JSON
    pointer) says so with `not a case id`."""
    package = Path(vocabulary.__file__).parent
    sources = [p for p in sorted(package.rglob("*.py")) if p.name != "vocabulary.py"]
    assert len(sources) > 20 and _CUT_BY_HAND.search('kind, name = case_id.split("/")[:2]')  # the check sees
    by_hand = [f"{path.relative_to(package)}:{number}: {line.strip()}"
               for path in sources for number, line in enumerate(path.read_text().splitlines(), start=1)
               if _CUT_BY_HAND.search(line) and "not a case id" not in line]
    assert by_hand == [], "parse case ids with opsuite.vocabulary (parse_case_id, split_typed_case_id, parse_cell_key)"


def test_choices_name_the_bad_value_and_the_good_ones():
    with pytest.raises(ValueError, match=r"unknown dtype 'bf16'; known: float32, bfloat16"):
        vocabulary.check_choices(["float32", "bf16"], vocabulary.DTYPES, "dtype")
