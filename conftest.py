"""Wires opsuite into pytest for both `cases/` (the suite) and `tests/` (tests of opsuite itself)."""

pytest_plugins = ["opsuite.pytest_plugin"]
