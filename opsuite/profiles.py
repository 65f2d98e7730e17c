"""Run profiles: the named sets of options a run is made with, in one table.

`quick` is the default of `opsuite run`; published snapshots are run with `matrix`, so that
`opsuite run --profile matrix` on another stack makes a snapshot comparable cell for cell. A run records
its profile in the results header's `options.profile` (null when options were changed from it), and a
`--baseline` run takes the baseline's profile unless told otherwise (see `matrix/baseline.py`).
Torch-free: the pytest process and `opsuite run` read it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class Profile:
    """Which cases a run selects (kinds, dtypes, directions) and how many samples each runs."""

    name: str | None            # None: not one of PROFILES (explicit options changed it)
    kinds: tuple[str, ...]
    dtypes: tuple[str, ...] | None      # None: every dtype the catalog has
    directions: tuple[str, ...] | None  # None: every direction
    samples: str                # a count, or "all"

    def overridden(self, kinds: list[str] | None = None, dtypes: list[str] | None = None,
                   directions: list[str] | None = None, samples: str | None = None) -> "Profile":
        """This profile with the options given explicitly in place of its own (its name kept only when
        nothing changed)."""
        changed = dataclasses.replace(
            self, kinds=tuple(kinds) if kinds else self.kinds, dtypes=tuple(dtypes) if dtypes else self.dtypes,
            directions=tuple(directions) if directions else self.directions, samples=samples or self.samples)
        same = dataclasses.replace(changed, name=self.name) == self
        return changed if same else dataclasses.replace(changed, name=None)


_KINDS = ("ops", "blocks", "models")
_DTYPES = ("float32", "bfloat16")
_DIRECTIONS = ("forward", "backward", "train")  # train: only models have it

PROFILES = {
    "quick": Profile("quick", _KINDS, _DTYPES, _DIRECTIONS, samples="2"),
    "matrix": Profile("matrix", _KINDS, _DTYPES, _DIRECTIONS, samples="all"),
}
DEFAULT = "quick"


def get(name: str) -> Profile:
    """The profile of this name; ValueError naming the known ones."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; known: {', '.join(PROFILES)}") from None
