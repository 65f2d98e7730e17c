"""opsuite: operator-coverage suite and compatibility matrix for AWS Neuron."""
__version__ = "0.1.0"

from pathlib import Path

# The suite's pytest modules, one per kind of case: cases/test_<kind>.py.
CASES_DIR = Path(__file__).resolve().parent.parent / "cases"
