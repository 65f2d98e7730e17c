"""Transformer building blocks (attention, rotary, norms, MLPs, MoE, KV cache...): block x dtype x direction."""

CASE_KIND = "blocks"


def test_case(case_id, opsuite_session):
    opsuite_session.check(case_id)
