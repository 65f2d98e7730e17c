"""The published coverage matrix: snapshots of results, and the commands that read them.

Nothing in this package imports torch or a device stack: `opsuite lookup` must answer offline and fast.
Layout on disk (see docs/matrix.md):

    matrix/README.md, index.json, index.html          regenerated on every publish
    matrix/<backend>/<stack key>/snapshot.json        the snapshot (schemas/snapshot-v1.json)
                                 README.md, index.html  its pages
                                 results/*.jsonl.gz     the results files it was made from
"""

from __future__ import annotations

from pathlib import Path

from opsuite import vocabulary

# The repository's matrix, next to `cases/`.
DEFAULT_MATRIX = Path(__file__).resolve().parent.parent.parent / "matrix"

# Display order of the case-id parts.
DTYPE_ORDER = vocabulary.DTYPES
DIRECTION_ORDER = vocabulary.DIRECTIONS


class MatrixError(Exception):
    """Bad input to a matrix command: printed as one clear line with a non-zero exit."""
