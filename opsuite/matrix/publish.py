"""`opsuite publish`: results files of one stack -> a snapshot in the matrix, atomically.

Everything is written first into a staging directory inside the matrix (same file system): the new
snapshot directory (snapshot.json, README.md, index.html, the compressed results files) and the
regenerated top-level files (README.md, index.json, index-cells.jsonl, index.html). Only then is it moved into place by
renames, each undone if a later one fails, so a failed publish leaves the matrix as it was. A lock on
the matrix directory keeps two publishes from interleaving.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Iterator

from opsuite.matrix import MatrixError, index, op_cells, release_notes, render_html, render_md, snapshot
from opsuite.matrix.snapshot import Snapshot
from opsuite.results import collector_paused

STAGING_PREFIX = ".publish-"
KEEP_MARKER = "KEPT-AFTER-FAILED-UNDO"


class UndoError(MatrixError):
    """A failed publish whose undo failed too: the staging directory keeps what is out of place."""


@contextlib.contextmanager
def _staging(matrix: Path) -> Iterator[Path]:
    """Under an exclusive lock on the matrix, a fresh staging directory inside it, removed at the end
    (kept only after an UndoError: it then holds the only copy of what could not be put back).

    Staging directories that a killed publish left are removed first: holding the lock, no other publish
    can own one (a dead process's lock is released with its descriptors). One kept after an UndoError is
    marked and left alone.
    """
    matrix.mkdir(parents=True, exist_ok=True)
    fd = os.open(matrix, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # two publishes must not interleave; released by close
        for leftover in matrix.glob(f"{STAGING_PREFIX}*"):
            if leftover.is_dir() and not (leftover / KEEP_MARKER).exists():
                shutil.rmtree(leftover, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=matrix))
        keep = False
        try:
            yield staging
        except UndoError:
            keep = True
            (staging / KEEP_MARKER).write_text("a failed publish could not be undone: this holds what is out of place\n")
            raise
        finally:
            if not keep:
                shutil.rmtree(staging, ignore_errors=True)
    finally:
        os.close(fd)


def _results_names(paths: list[Path]) -> list[str]:
    """The names of the compressed copies of results files, relative to the snapshot (`results/<name>.gz`)."""
    names: list[str] = []
    for path in paths:
        name = path.name if path.name.endswith(".jsonl") else path.name + ".jsonl"
        base, number = name, 1
        while f"results/{name}.gz" in names:  # two inputs of the same name from different directories
            number += 1
            name = f"{number}-{base}"
        names.append(f"results/{name}.gz")
    return names


def _copy_results(paths: list[Path], names: list[str], snapshot_dir: Path) -> list[str]:
    """Gzip each results file to its name under `snapshot_dir`; the sha256 of each (of the plain file)."""
    (snapshot_dir / "results").mkdir(parents=True)
    digests = []
    for path, name in zip(paths, names):
        # mtime=0 and no file name in the gzip header: the same input gives the same bytes. Level 6 (not
        # gzip's default 9): half the time, a few per cent larger.
        digest = hashlib.sha256()
        with open(path, "rb") as source, open(snapshot_dir / name, "wb") as out, \
                gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=6) as gz:
            for block in iter(lambda: source.read(1 << 20), b""):  # in blocks: a results file can be large
                digest.update(block)
                gz.write(block)
        digests.append(digest.hexdigest())
    return digests


def write_snapshot_json(data: dict, path: Path) -> None:
    """Write snapshot.json: the fields indented, then one line per cell, written as they are encoded.

    json's C encoder writes the cells (it does not indent; the pure-Python one takes seconds for a large
    snapshot), and a line per cell keeps a diff of two versions of the file per case.
    """
    head = json.dumps({k: v for k, v in data.items() if k != "cells"}, indent=1, allow_nan=False)
    with open(path, "w") as out:
        out.write(head[:-2] + ',\n "cells": {')
        for number, (case_id, cell) in enumerate(data["cells"].items()):
            out.write(f"{',' if number else ''}\n  {json.dumps(case_id)}: "
                      f"{json.dumps(cell, allow_nan=False, separators=(',', ':'))}")
        out.write("\n }\n}\n")


def derived_files(snapshots: list[Snapshot], matrix: Path) -> Iterator[tuple[str, str | Iterable[str]]]:
    """The matrix's top-level files, regenerated from every snapshot and the release notes written in it:
    (name, text) pairs, each made when the one before is written (a large matrix's files are tens of MB each)."""
    notes_pages = release_notes.files(matrix)
    yield "README.md", render_md.index_page(snapshots, notes_pages)
    lookup_index = index.build(snapshots)
    yield from index.files(lookup_index).items()
    # Its cells are written: the page's search needs only the subjects' names, the aliases and aten ops.
    lookup_index["subjects"] = dict.fromkeys(lookup_index["subjects"])
    del lookup_index["dispatched"]
    yield from render_html.index_files(snapshots, lookup_index, notes_pages).items()


def write_text(path: Path, text: str | Iterable[str]) -> None:
    """Write a file's text, given whole or as chunks written as they come (a large page is never held whole)."""
    with open(path, "w") as out:
        if isinstance(text, str):
            out.write(text)
        else:
            out.writelines(text)


def write_snapshot_pages(snap: Snapshot) -> list[str]:
    """Write a snapshot directory's README.md, HTML files and aten.json from its snapshot.json; their names."""
    pages = {"README.md": render_md.snapshot_page(snap), **render_html.snapshot_files(snap),
             op_cells.FILE: op_cells.text(snap.data)}
    for name, text in pages.items():
        write_text(snap.path / name, text)
    return list(pages)


class _Transaction:
    """Renames inside one file system, all or nothing: on failure, those done are undone, newest first."""

    def __init__(self, staging: Path):
        self.staging = staging
        self.undo: list[Callable[[], None]] = []

    def _move_into_place(self, source: Path, dest: Path) -> None:
        if dest.exists():  # keep the old one in staging until the whole transaction has succeeded
            kept = self.staging / f"replaced-{len(self.undo)}"
            os.rename(dest, kept)
            self.undo.append(lambda: os.rename(kept, dest))
        os.rename(source, dest)
        self.undo.append(lambda: os.rename(dest, source))

    def _rollback(self) -> None:
        stuck = []
        for step in reversed(self.undo):
            try:
                step()
            except OSError as exc:  # go on: every other step undone is one less thing out of place
                stuck.append(str(exc))
        if stuck:
            raise UndoError(f"a failed publish could not be fully undone ({'; '.join(stuck)}); the previous "
                            f"files are kept in {self.staging}")

    def run(self, moves: list[tuple[Path, Path]], new_dirs: tuple[Path, ...] = ()) -> None:
        """Make the missing `new_dirs`, then every (source, dest) move, replacing what is at dest."""
        try:
            for path in new_dirs:
                if not path.exists():
                    path.mkdir()
                    self.undo.append(path.rmdir)
            for source, dest in moves:
                self._move_into_place(source, dest)
        except BaseException:
            self._rollback()
            raise


def _check_replace(old: Snapshot, new: dict, replace: bool) -> None:
    if not replace:
        raise MatrixError(f"snapshot {old.id} is already published ({old.data['summary']['cases']} cases from "
                          f"{', '.join(r['source_name'] for r in old.data['runs'])}); pass --replace to replace it")
    dropped = sorted(set(old.cells) - set(new["cells"]))
    if dropped:
        raise MatrixError(f"replacing snapshot {old.id} would drop {len(dropped)} of its cases (e.g. {dropped[0]}); "
                          f"publish all results files of this stack together, or remove {old.path} first")


def publish(results: list[str | Path], matrix: Path, replace: bool = False) -> Snapshot:
    """Publish results files of one stack as a snapshot under `matrix`; returns the published snapshot."""
    with collector_paused():
        return _publish(results, matrix, replace)


def _publish(results: list[str | Path], matrix: Path, replace: bool) -> Snapshot:
    paths = [Path(p) for p in results]
    if not paths:
        raise MatrixError("no results file given")
    files = _results_names(paths)
    runs, cells = snapshot.read_cells(paths, files)
    for run in runs:
        for warning in run.warnings:
            print(f"opsuite: warning: {warning}", file=sys.stderr)
    with _staging(matrix) as staging:
        new_dir = staging / "snapshot"
        data = snapshot.build(runs, cells, files, _copy_results(paths, files, new_dir))
        target = matrix / data["backend"] / data["key"]
        existing = snapshot.load_all(matrix)
        for old in existing:
            if old.id == data["id"]:
                _check_replace(old, data, replace)
        snapshot.validate(data, "the new snapshot")  # what readers will see: validate it before anything moves
        write_snapshot_json(data, new_dir / snapshot.FILE)
        new = Snapshot(new_dir, data)
        write_snapshot_pages(new)
        everything = [s for s in existing if s.id != new.id] + [Snapshot(target, new.data)]
        everything.sort(key=lambda s: (s.backend, s.order_key))
        moves = [(new_dir, target)]
        for name, text in derived_files(everything, matrix):
            write_text(staging / f"new-{name}", text)
            del text  # before the next file is made
            moves.append((staging / f"new-{name}", matrix / name))
        _Transaction(staging).run(moves, new_dirs=(target.parent,))
    return Snapshot(target, new.data)


def reindex(matrix: Path, pages: bool = True) -> list[Snapshot]:
    """Rewrite every snapshot's pages (unless `pages` is false) and the top-level files from the snapshots'
    JSON and the release notes written in the matrix (same atomicity)."""
    with collector_paused():
        return _reindex(matrix, pages)


def _reindex(matrix: Path, pages: bool) -> list[Snapshot]:
    if not matrix.is_dir():
        raise MatrixError(f"no matrix directory at {matrix}")
    with _staging(matrix) as staging:
        snapshots = snapshot.load_all(matrix)
        moves = []
        for number, snap in enumerate(snapshots if pages else ()):
            staged = Snapshot(staging / f"pages-{number}", snap.data, snap.caveats)
            staged.path.mkdir()
            moves += [(staged.path / name, snap.path / name) for name in write_snapshot_pages(staged)]
        for name, text in derived_files(snapshots, matrix):
            write_text(staging / f"new-{name}", text)
            del text  # before the next file is made
            moves.append((staging / f"new-{name}", matrix / name))
        _Transaction(staging).run(moves)
    return snapshots
