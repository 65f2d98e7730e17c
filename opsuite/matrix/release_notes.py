"""Release notes: what a new stack release changed, for people, from two snapshots of a backend.

The cell-by-cell comparison is `diff.compare` (the same rule as `opsuite diff` and the regression mode);
these notes only sort its findings into the sections a reader asks about (newly working, newly broken,
host fallbacks gained and lost, numerics whose verdict changed, errors whose category or compiler code
changed, cases the catalog added or removed) and give each stack a one-line headline. Cases the catalog
added or removed (an op new to, or gone from, OpInfo's `op_db`) are listed as such, never as breakage.

Written as Markdown and HTML (Jinja2) into `<matrix>/release-notes/<backend>/`; `files()` lists them for
the index page.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

from opsuite.matrix import diff, notes, stack
from opsuite.matrix.render_md import md
from opsuite.matrix.snapshot import Snapshot, split_id

DIRECTORY = "release-notes"
# Sections in reading order: key, title, what the section holds.
SECTIONS = (
    ("newly_broken", "Newly broken", "worked before and work less now: a pass that falls back to the host or "
                                     "fails, or a host fallback that fails"),
    ("newly_working", "Newly working", "did not pass before, pass now"),
    ("new_fallbacks", "New host fallbacks", "aten ops that run on the host now and did not before"),
    ("fallbacks_removed", "Fallbacks removed", "aten ops that ran on the host before and do not now"),
    ("numerics_changed", "Numerics that changed verdict", "the measured error is judged differently now"),
    ("errors_changed", "Failures that changed", "still not passing, with another status, error category or "
                                                 "compiler code (or moved to or from skip)"),
    ("added", "Cases added by the catalog", "new in this release's catalog: not a regression"),
    ("removed", "Cases removed by the catalog", "gone from this release's catalog: not a regression"),
)


def _fallback_ops(cell: dict[str, Any] | None) -> set[str]:
    return set((cell or {}).get("fallback_ops") or ())


def _verdict(cell: dict[str, Any] | None) -> str | None:
    return ((cell or {}).get("numerics") or {}).get("verdict")


def _ran(snap: Snapshot, case_id: str) -> bool:
    """Whether one of the snapshot's runs selected the case's kind, dtype and direction (None: all)."""
    kind, _, dtype, direction = split_id(case_id)
    return any(kind in run["catalog"].get("kinds", ()) and dtype in (run["options"].get("dtypes") or [dtype])
               and direction in (run["options"].get("directions") or [direction]) for run in snap.data["runs"])


def common_scope(a: Snapshot, b: Snapshot) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]], int]:
    """Both snapshots' cells of the kinds, dtypes and directions that both runs selected, and how many
    cells were left out: inside that scope a cell that only one has is the catalog's doing."""
    in_a = {c: cell for c, cell in a.cells.items() if _ran(b, c)}
    in_b = {c: cell for c, cell in b.cells.items() if _ran(a, c)}
    return in_a, in_b, len(a.cells) - len(in_a) + len(b.cells) - len(in_b)


def compare(old: dict[str, dict[str, Any]], new: dict[str, dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Every section's entries (`case_id`, `before`, `after` cells, and `ops` for fallback sections)."""
    changes = diff.compare(old, new)

    def entry(case_id: str, **more: Any) -> dict[str, Any]:
        return {"case_id": case_id, "before": old.get(case_id), "after": new.get(case_id), **more}

    sections: dict[str, list[dict[str, Any]]] = {key: [] for key, _, _ in SECTIONS}
    sections["newly_broken"] = [entry(c) for c in changes["regressed"]]
    sections["newly_working"] = [entry(c) for c in changes["improved"]]
    sections["errors_changed"] = [entry(c) for c in changes["changed"]]
    sections["added"] = [entry(c) for c in changes["added"]]
    sections["removed"] = [entry(c) for c in changes["removed"]]
    for case_id in sorted(old.keys() & new.keys()):
        before, after = old[case_id], new[case_id]
        gained, lost = _fallback_ops(after) - _fallback_ops(before), _fallback_ops(before) - _fallback_ops(after)
        if gained:
            sections["new_fallbacks"].append(entry(case_id, ops=sorted(gained)))
        if lost:
            sections["fallbacks_removed"].append(entry(case_id, ops=sorted(lost)))
        if None not in (_verdict(before), _verdict(after)) and _verdict(before) != _verdict(after):
            sections["numerics_changed"].append(entry(case_id))
    return sections


def short_name(snap: Snapshot) -> str:
    """The stack's most significant version (`2.9.0`), or its label when it has no version fields."""
    return stack.release_name(snap.backend, snap.data["versions"]) or snap.data["label"]


def headline(a: Snapshot, b: Snapshot, sections: dict[str, list[dict[str, Any]]]) -> str:
    """`xla 2.9.0 vs 2.8.1: +14 working, -3 broken, 5 fewer fallbacks, 2 added, 1 removed by the catalog`."""
    name_a, name_b = short_name(a), short_name(b)
    if name_a == name_b:  # two nightlies of one release: tell them apart by when they ran
        name_a, name_b = (f"{n} ({s.data['started_at'][:16]})" for n, s in ((name_a, a), (name_b, b)))
    common = a.cells.keys() & b.cells.keys()
    # Cells with host fallbacks, among the cases both have.
    fallbacks = sum(bool(_fallback_ops(b.cells[c])) for c in common) - sum(bool(_fallback_ops(a.cells[c])) for c in common)
    parts = [f"+{len(sections['newly_working'])} working", f"-{len(sections['newly_broken'])} broken",
             f"{abs(fallbacks)} {'fewer' if fallbacks < 0 else 'more'} fallbacks"]
    if sections["added"] or sections["removed"]:
        parts.append(f"{len(sections['added'])} added, {len(sections['removed'])} removed by the catalog")
    return f"{b.backend} {name_b} vs {name_a}: " + ", ".join(parts)


def release_notes(a: Snapshot, b: Snapshot) -> dict[str, Any]:
    """The JSON-ready notes of snapshot `b` (the new release) against `a` (the one before)."""
    old, new, left_out = common_scope(a, b)
    sections = compare(old, new)
    return {
        "headline": headline(a, b, sections),
        "left_out": left_out,
        "a": {"id": a.id, "label": a.data["label"], "name": short_name(a)},
        "b": {"id": b.id, "label": b.data["label"], "name": short_name(b)},
        "backend": b.backend,
        "counts": {key: len(entries) for key, entries in sections.items()},
        "sections": sections,
    }


def _cell_text(cell: dict[str, Any] | None) -> str:
    return "-" if cell is None else notes.one_line(cell)


def _entry_text(key: str, entry: dict[str, Any]) -> tuple[str, str]:
    """(before, after) of one entry, as a reader wants them for the section."""
    if key in ("new_fallbacks", "fallbacks_removed"):
        return ", ".join(entry["ops"]), _cell_text(entry["after"] if key == "new_fallbacks" else entry["before"])
    return _cell_text(entry["before"]), _cell_text(entry["after"])


def markdown(result: dict[str, Any]) -> str:
    """The notes as a Markdown page: headline, a count per section, then each section's table."""
    out = [f"# {md(result['headline'])}", "",
           f"From `{result['a']['id']}` ({md(result['a']['label'])})  ",
           f"to `{result['b']['id']}` ({md(result['b']['label'])}).", "",
           "| change | cases |", "|---|---:|"]
    out += [f"| {title} | {result['counts'][key]} |" for key, title, _ in SECTIONS]
    if result["left_out"]:
        out += ["", f"{result['left_out']} cells are left out: their kind, dtype or direction was run for one "
                    "snapshot only."]
    for key, title, meaning in SECTIONS:
        entries = result["sections"][key]
        if not entries:
            continue
        first, second = ("aten ops", "cell") if key in ("new_fallbacks", "fallbacks_removed") else ("before", "after")
        out += ["", f"## {title} ({len(entries)})", "", f"{meaning[0].upper()}{meaning[1:]}.", "",
                f"| case | {first} | {second} |", "|---|---|---|"]
        out += [f"| `{e['case_id']}` | " + " | ".join(md(t) for t in _entry_text(key, e)) + " |" for e in entries]
    return "\n".join(out) + "\n"


def html(result: dict[str, Any]) -> str:
    """The notes as a self-contained HTML page (same style and policy as the snapshot pages)."""
    from opsuite.matrix.render_html import STATUS_COLORS, _environment

    sections = [{"key": key, "title": title, "meaning": meaning, "fallback": key in ("new_fallbacks", "fallbacks_removed"),
                 "rows": [(e["case_id"], *_entry_text(key, e)) for e in result["sections"][key]]}
                for key, title, meaning in SECTIONS]
    return _environment().get_template("release_notes.html.j2").render(
        notes=result, sections=sections, stem=stem(result), colors=STATUS_COLORS)


def stem(result: dict[str, Any]) -> str:
    """The file name (without suffix) of a pair's notes, `2.8.1..2.9.0__<hash of A>-<hash of B>`: the
    releases, then the stack keys' hashes (whole keys would pass the file system's 255-byte limit)."""
    releases = "..".join(stack.safe_name(result[side]["name"]) for side in ("a", "b"))
    return f"{releases}__" + "-".join(result[side]["id"].rsplit("__", 1)[-1] for side in ("a", "b"))


def _write_atomically(path: Path, text: str) -> None:
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(temp, path)


def write(result: dict[str, Any], matrix: Path) -> list[Path]:
    """Write the notes' Markdown and HTML pages under `<matrix>/release-notes/<backend>/`; their paths."""
    directory = matrix / DIRECTORY / result["backend"]
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / f"{stem(result)}.md", directory / f"{stem(result)}.html"]
    for path, text in zip(paths, (markdown(result), html(result))):
        _write_atomically(path, text)
    return paths


def _natural(text: str) -> tuple:
    """A sort key in which 2.10.0 comes after 2.9.0."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", text))


def files(matrix: Path) -> list[dict[str, str]]:
    """Every release-notes page pair in a matrix, for the index to link: backend, headline, md, html
    (paths relative to the matrix), by backend, newest release first (by file name: `<A>..<B>__...`),
    the same in every checkout."""
    found = []
    for page in (matrix / DIRECTORY).glob("*/*.md"):
        first = page.read_text().split("\n", 1)[0]
        found.append({
            "backend": page.parent.name,
            "headline": first.removeprefix("# ").replace("\\", ""),
            "md": page.relative_to(matrix).as_posix(),
            "html": page.with_suffix(".html").relative_to(matrix).as_posix(),
        })
    found.sort(key=lambda f: _natural(Path(f["md"]).name), reverse=True)
    return sorted(found, key=lambda f: f["backend"])
