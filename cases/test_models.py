"""Decoder layers and tiny whole models of real families: forward, backward and one optimizer step."""

CASE_KIND = "models"


def test_case(case_id, opsuite_session):
    opsuite_session.check(case_id)
