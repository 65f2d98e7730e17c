"""The catalog: stable unique ids, OpInfo's dtypes and marks, factory ops pointed at the device."""

import pytest
import torch

from opsuite.catalog import Case, Catalog, DuplicateCaseError, build_catalog
from opsuite.catalog.opinfo import op_db


@pytest.fixture(scope="module")
def catalog():
    return build_catalog(["ops"])


def test_every_op_db_entry_has_cases(catalog):
    names = {case.name for case in catalog}
    # Entries without any of the six dtypes on CPU (complex-only ops) are the only ones missing.
    assert len(names) >= len(op_db()) - 10
    assert {"add", "softmax", "linalg.svd", "nn.functional.conv2d"} <= names


def test_ids_are_readable_and_parse_back(catalog):
    case = catalog.get("ops/softmax/bfloat16/backward")
    assert case == Case("ops", "softmax", "bfloat16", "backward")
    assert Case.parse(case.id) == case
    with pytest.raises(ValueError):
        Case.parse("ops/softmax/complex64/forward")


def test_backward_only_where_autograd(catalog):
    assert "ops/add/int64/backward" not in catalog
    assert "ops/add/int64/forward" in catalog
    assert "ops/argmax/float32/backward" not in catalog


def test_duplicates_are_refused():
    class Twice:
        kind = "dup"

        def cases(self):
            return [Case("dup", "a", "float32", "forward")] * 2

    with pytest.raises(DuplicateCaseError, match="dup/a/float32/forward"):
        Catalog().add_source(Twice())


def test_unknown_case_suggests_close_ones(catalog):
    with pytest.raises(KeyError, match="did you mean"):
        catalog.get("ops/sofmax/float32/forward")


def test_samples_are_deterministic_and_limited(catalog):
    case = catalog.get("ops/add/float32/forward")
    source = catalog.source(case)
    first, second = source.samples(case, 2), source.samples(case, 2)
    assert len(first) == 2
    assert torch.equal(first[0].args[0], second[0].args[0])
    assert len(source.samples(case, None)) > 2


def test_backward_samples_require_grad(catalog):
    case = catalog.get("ops/softmax/float32/backward")
    sample = catalog.source(case).samples(case, 1)[0]
    assert sample.args[0].requires_grad


def test_random_and_undefined_ops_use_opinfo_marks(catalog):
    source = catalog.source(catalog.get("ops/add/float32/forward"))
    assert source.shape_only_reason(catalog.get("ops/add/float32/forward")) is None
    assert "wrapper_set_seed" in source.shape_only_reason(catalog.get("ops/randn/float32/forward"))
    assert source.shape_only_reason(catalog.get("ops/empty/float32/forward"))
    assert source.shape_only_reason(catalog.get("ops/nn.functional.dropout/float32/forward"))


def test_select_filters(catalog):
    chosen = catalog.select(dtypes=["bfloat16"], directions=["backward"])
    assert chosen and all(c.dtype == "bfloat16" and c.direction == "backward" for c in chosen)


def test_skipping_opinfos_test_function_search_changes_no_sample():
    """opinfo.op_db() replaces common_utils.extract_test_fn (slow in a spawned worker); samples stay equal."""
    import hashlib

    from torch.testing._internal import common_utils

    from opsuite.catalog import opinfo

    def digest(catalog):
        h = hashlib.sha256()
        for case in catalog.select(["float32", "bfloat16"], ["forward", "backward"])[:150]:
            for sample in catalog.source(case).samples(case, 2):
                for t in torch.utils._pytree.tree_leaves((sample.args, sample.kwargs)):
                    if isinstance(t, torch.Tensor) and t.layout == torch.strided:
                        h.update(t.detach().to(torch.float64).numpy().tobytes())
        return h.hexdigest()

    catalog = build_catalog(["ops"])
    assert common_utils.extract_test_fn() is None  # replaced
    skipped = digest(catalog)
    replaced = common_utils.extract_test_fn
    try:
        common_utils.extract_test_fn = opinfo.ORIGINAL_EXTRACT_TEST_FN
        assert digest(catalog) == skipped
    finally:
        common_utils.extract_test_fn = replaced
