"""The published coverage matrix: snapshots of results, and the commands that read them.

Nothing in this package imports torch or a device stack: `opsuite lookup` must answer offline and fast.
Layout on disk (see docs/matrix.md):

    matrix/README.md, index.json, index-cells.jsonl,  regenerated on every publish
           index.html (+ its scripts)
    matrix/<backend>/<stack key>/snapshot.json        the snapshot (schemas/snapshot-v1.json)
                                 README.md, index.html  its pages
                                 results/*.jsonl.gz     the results files it was made from
"""

from __future__ import annotations

from pathlib import Path

# The repository's matrix, next to `cases/`.
DEFAULT_MATRIX = Path(__file__).resolve().parent.parent.parent / "matrix"

# Display order of the case-id parts. The catalog defines the same names but imports torch.
DTYPE_ORDER = ("float32", "bfloat16", "float16", "int32", "int64", "bool")
DIRECTION_ORDER = ("forward", "backward", "train")


class MatrixError(Exception):
    """Bad input to a matrix command: printed as one clear line with a non-zero exit."""
