"""`opsuite.names`: the names a PyTorch user types, resolved to catalog subjects without torch."""

import subprocess
import sys

import pytest

from opsuite import names

SUBJECTS = ["ops/softmax", "ops/softmax.with_dtype", "ops/log_softmax", "ops/nn.functional.relu", "ops/index_put",
            "ops/max.binary", "ops/max.reduction_no_dim", "ops/linalg.det", "ops/abs", "ops/tanh", "ops/resize_",
            "ops/add", "ops/nn.functional.interpolate.area", "ops/nn.functional.interpolate.bilinear",
            "blocks/attention.sdpa_gqa", "blocks/attention.sdpa_mask", "models/llama.layer"]
# As OpInfo records them (alias_table of op_db): term -> OpInfo names.
ALIASES = {"nn.functional.softmax": ["softmax"], "special.softmax": ["softmax"], "absolute": ["abs"],
           "nn.functional.tanh": ["tanh"], "det": ["linalg.det"]}


@pytest.fixture
def resolver():
    return names.Resolver(SUBJECTS, ALIASES)


@pytest.mark.parametrize("query, subjects", [
    ("softmax", ["ops/softmax"]),
    ("ops/softmax", ["ops/softmax"]),
    ("nn.functional.softmax", ["ops/softmax"]),
    ("F.softmax", ["ops/softmax"]),
    ("torch.nn.functional.softmax", ["ops/softmax"]),
    ("torch.softmax", ["ops/softmax"]),
    ("Tensor.softmax", ["ops/softmax"]),
    ("torch.Tensor.softmax", ["ops/softmax"]),
    ("x.softmax", ["ops/softmax"]),
    ("special.softmax", ["ops/softmax"]),            # an OpInfo alias: only the table knows it
    ("absolute", ["ops/abs"]),
    ("torch.absolute", ["ops/abs"]),
    ("F.relu", ["ops/nn.functional.relu"]),
    ("relu", ["ops/nn.functional.relu"]),            # a bare name in OpInfo's namespaces
    ("interpolate.area", ["ops/nn.functional.interpolate.area"]),  # a variant's name, too
    ("interpolate", ["ops/nn.functional.interpolate.area", "ops/nn.functional.interpolate.bilinear"]),
    ("F.tanh", ["ops/tanh"]),
    ("aten::index_put_", ["ops/index_put"]),
    ("aten.index_put_.default", ["ops/index_put"]),
    ("torch.ops.aten.index_put.default", ["ops/index_put"]),
    ("Tensor.index_put_", ["ops/index_put"]),
    ("aten::add.out", ["ops/add"]),
    ("aten::add_.Tensor", ["ops/add"]),
    ("aten::linalg_det", ["ops/linalg.det"]),        # aten's flat namespace spelling
    ("torch.linalg.det", ["ops/linalg.det"]),
    ("det", ["ops/linalg.det"]),
    ("torch.max", ["ops/max.binary", "ops/max.reduction_no_dim"]),  # an OpInfo name means all its variants
    ("resize_", ["ops/resize_"]),                    # a name that really ends in _ is itself
    ("attention.sdpa_gqa", ["blocks/attention.sdpa_gqa"]),
    ("llama.layer", ["models/llama.layer"]),
])
def test_names_people_type_resolve(resolver, query, subjects):
    assert resolver.resolve(query) == subjects


@pytest.mark.parametrize("query", ["attention", "sofmax", "torch.nothing", "aten::nothing", "blocks/softmax",
                                   "linalg"])
def test_names_of_nothing_resolve_to_nothing(resolver, query):
    assert resolver.resolve(query) == []


def test_the_table_is_what_maps_aliases():
    bare = names.Resolver(SUBJECTS)  # a snapshot from before the table was recorded
    assert bare.resolve("F.softmax") == ["ops/softmax"]  # spelling rules need no table
    assert bare.resolve("absolute") == []


def test_unknown_names_get_real_subjects_close_to_them(resolver):
    assert resolver.suggest("attention")[:2] == ["blocks/attention.sdpa_gqa", "blocks/attention.sdpa_mask"]
    assert "ops/softmax" in resolver.suggest("sofmax")
    assert resolver.suggest("F.sofmax")[0] == "ops/softmax"
    assert resolver.suggest("zzzz") == []


def test_case_ids_with_their_name_spelled_any_way(resolver):
    assert resolver.resolve_case("ops/F.softmax/bfloat16/backward") == ["ops/softmax/bfloat16/backward"]
    assert resolver.resolve_case("ops/nn.functional.softmax/float32/forward") == ["ops/softmax/float32/forward"]
    assert resolver.resolve_case("blocks/softmax/float32/forward") == []


def test_search_terms_of_a_subject(resolver):
    terms = resolver.terms("ops/softmax")
    assert {"nn.functional.softmax", "F.softmax", "special.softmax", "torch.softmax"} <= set(terms)
    assert {"F.relu", "torch.nn.functional.relu"} <= set(resolver.terms("ops/nn.functional.relu"))
    assert resolver.terms("blocks/attention.sdpa_gqa") == []


def test_alias_table_keeps_what_differs_from_the_name():
    class Alias:
        def __init__(self, name):
            self.name = name

    class Op:
        def __init__(self, name, aliases=(), aten_name=None, method=None):
            self.name, self.aliases, self.aten_name = name, [Alias(a) for a in aliases], aten_name or name
            self.method_variant = method

    def lam(x):
        return x
    lam.__name__ = "<lambda>"
    table = names.alias_table([Op("softmax", ["special.softmax", "nn.functional.softmax"]),
                               Op("nn.functional.pad", aten_name="constant_pad_nd", method=lam), Op("add")])
    assert table == {"constant_pad_nd": ["nn.functional.pad"], "nn.functional.softmax": ["softmax"],
                     "special.softmax": ["softmax"]}


@pytest.mark.main
def test_the_catalog_records_op_dbs_alias_table():
    done = subprocess.run([sys.executable, "-c", "import json; from opsuite.catalog import build_catalog; "
                           "print(json.dumps(build_catalog(['ops']).facts()['op_names']))"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    import json

    table = json.loads(done.stdout)
    assert table["nn.functional.softmax"] == ["softmax"] and table["absolute"] == ["abs"]
    assert table["clip"] == ["clamp"]


def test_names_imports_no_torch():
    done = subprocess.run([sys.executable, "-c", "import sys, opsuite.names; print('torch' in sys.modules)"],
                          capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False", done.stderr
