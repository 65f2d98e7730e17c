"""Every PyTorch operator in OpInfo's database: op x dtype x forward/backward, on the backend under test."""

CASE_KIND = "ops"


def test_case(case_id, opsuite_session):
    opsuite_session.check(case_id)
