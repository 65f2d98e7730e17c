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

import os
from pathlib import Path

from opsuite import vocabulary

# The matrix of the checkout this package is in, next to `cases/`: the readers' default when no other is
# found, never written unless it is also the one found from the working directory (see `find_matrix`).
DEFAULT_MATRIX = Path(__file__).resolve().parent.parent.parent / "matrix"
MATRIX_ENV = "OPSUITE_MATRIX"

# Display order of the case-id parts.
DTYPE_ORDER = vocabulary.DTYPES
DIRECTION_ORDER = vocabulary.DIRECTIONS


class MatrixError(Exception):
    """Bad input to a matrix command: printed as one clear line with a non-zero exit."""


def find_matrix(given: Path | None = None, write: bool = False) -> Path:
    """Where the matrix is: `given` (--matrix), else $OPSUITE_MATRIX, else the `matrix/` (holding an
    index.json) of the working directory or its nearest parent that has one, i.e. the current checkout's.

    Only readers fall back to DEFAULT_MATRIX when none is found: a publish from elsewhere must name its
    matrix, so that an installed or other copy of opsuite never writes into the tree it was loaded from.
    """
    if given is not None:
        return Path(given)
    if os.environ.get(MATRIX_ENV):
        return Path(os.environ[MATRIX_ENV])
    cwd = Path.cwd()
    for directory in (cwd, *cwd.parents):
        if (directory / "matrix" / "index.json").is_file():
            return directory / "matrix"
    if write:
        raise MatrixError(f"no matrix/ (with an index.json) in {cwd} or above it; run from an opsuite checkout, "
                          f"or name one with --matrix DIR or {MATRIX_ENV}=DIR")
    return DEFAULT_MATRIX


def check_writable(matrix: Path) -> Path:
    """`matrix`, unless it is DEFAULT_MATRIX reached from outside its checkout (a baseline resolved by the
    readers' fallback): that matrix is read-only to every other working directory."""
    if matrix.resolve() == DEFAULT_MATRIX.resolve():
        try:
            found = find_matrix(write=True).resolve()
        except MatrixError:
            found = None
        if found != DEFAULT_MATRIX.resolve():
            raise MatrixError(f"{matrix} is the matrix of the checkout opsuite was loaded from, and read-only from "
                              f"{Path.cwd()}; publish from that checkout, or with --matrix DIR or {MATRIX_ENV}=DIR")
    return matrix
