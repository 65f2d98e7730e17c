"""HTML pages (Jinja2): a filterable page per snapshot, and the matrix's index page with a search over
every op, block and model across all stacks.

Pages load nothing from elsewhere: a Content-Security-Policy (`script-src 'self'`, no inline script)
lets them run only the script files written beside them (`snapshot_files`, `index_files`). Every text
from a record is escaped (autoescape in templates, `textContent` in scripts), and every link is built
from parts that passed `safe_part`.
"""

from __future__ import annotations

import functools
import json
from collections import defaultdict
from importlib import resources
from pathlib import PurePosixPath
from typing import Any, Iterator, NamedTuple

from opsuite.matrix import caveats, history, index, notes, stack
from opsuite.matrix.lookup import column_order
from opsuite.matrix.render_md import STATUSES, catalog_text, columns, pct, summary_rows
from opsuite.matrix.snapshot import Snapshot, split_id
from opsuite.vocabulary import NOT_APPLICABLE, STATUS_COLORS, WORKING, is_name

BAR_WIDTH = 480  # px of a full (100 %) bar in the coverage chart
ROW_HEIGHT = 26
# The script files written beside the pages (the CSP allows no inline script).
NAMES_SCRIPT = "names.js"  # the typed-name normalisation both pages' boxes use
SNAPSHOT_SCRIPT = "filter.js"
SEARCH_SCRIPT, SEARCH_DATA = "search.js", "search-data.js"
def safe_part(text: Any) -> bool:
    """Whether `text` may be one path segment of a link: the vocabulary's name pattern, and no `..`."""
    return is_name(text) and ".." not in text


def snapshot_href(data: dict[str, Any]) -> str | None:
    """`<backend>/<key>/index.html` of a snapshot, relative to the matrix; None when a part is unsafe."""
    if safe_part(data["backend"]) and safe_part(data["key"]):
        return f"{data['backend']}/{data['key']}/index.html"
    return None


def results_href(file: str) -> str | None:
    """A snapshot's `results/<name>` link; None when the name is unsafe."""
    folder, _, name = file.partition("/")
    return file if folder == "results" and safe_part(name) else None


@functools.cache
def _environment():
    import jinja2

    return jinja2.Environment(loader=jinja2.PackageLoader("opsuite", "templates"), autoescape=True,
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def _script(name: str) -> str:
    return resources.files("opsuite").joinpath("templates", name).read_text()


class _Row(NamedTuple):
    """A row of the snapshot page (a tuple: the template reads its fields without a failed attribute
    lookup per field, as a dict would cost, on every one of a large page's rows)."""

    case_id: str
    subject: str
    dtype: str
    direction: str
    status: str
    details: list[tuple[str, str]]
    repro: str
    aten: str


def _rows(snap: Snapshot) -> Iterator[_Row]:
    """The snapshot page's rows, one per cell, made as the page is written (not all held at once)."""
    for case_id, cell in snap.cells.items():
        kind, name, dtype, direction = split_id(case_id)
        said = [(f"caveat {n}", reason) for n, reason in caveats.numbered(snap.caveats, case_id)]
        yield _Row(case_id, f"{kind}/{name}", dtype, direction, cell["status"], notes.details(cell)[1:] + said,
                   notes.repro_command(case_id, snap.backend, cell), " ".join(cell.get("aten_ops", ())))


def snapshot_files(snap: Snapshot) -> dict[str, str | Iterator[str]]:
    """The snapshot directory's HTML files: `index.html` (stack, summary, a filterable row per cell) and
    its filter script. The page comes as the chunks of its text, to be written as they are made: a large
    snapshot's page is hundreds of MB."""
    cells = snap.cells
    cols = columns(cells)
    runs = [{**run, "href": results_href(run["file"])} for run in snap.data["runs"]]
    page = _environment().get_template("snapshot.html.j2").generate(
        snap=snap.data, runs=runs, rows=_rows(snap), caveats=caveats.matched(snap.caveats, cells), cases=len(cells),
        statuses=STATUSES, colors=STATUS_COLORS,
        dtypes=list(dict.fromkeys(d for d, _ in cols)), directions=list(dict.fromkeys(r for _, r in cols)),
        summary=summary_rows(cells), pct=pct, catalog_text=catalog_text, scripts=(NAMES_SCRIPT, SNAPSHOT_SCRIPT))
    return {"index.html": page, **{name: _script(name) for name in (NAMES_SCRIPT, SNAPSHOT_SCRIPT)}}


def chart(snapshots: list[Snapshot]) -> list[dict[str, Any]]:
    """Per backend, one stacked bar per snapshot (oldest first): status shares, as SVG rectangles."""
    by_backend: dict[str, list[Snapshot]] = defaultdict(list)
    for snap in snapshots:
        by_backend[snap.backend].append(snap)
    charts = []
    for backend, snaps in sorted(by_backend.items()):
        bars = []
        for snap in sorted(snaps, key=lambda s: s.order_key):
            summary = snap.data["summary"]
            x, segments = 0.0, []
            for status in STATUSES:
                count = summary["counts"].get(status, 0)
                if count:
                    width = BAR_WIDTH * count / summary["cases"]
                    segments.append({"x": round(x, 2), "width": round(width, 2), "status": status,
                                     "count": count, "color": STATUS_COLORS[status]})
                    x += width
            bars.append({"label": snap.data["label"], "href": snapshot_href(snap.data),
                         "pass_pct": pct(summary["pass_pct"]), "segments": segments})
        charts.append({"backend": backend, "bars": bars, "height": ROW_HEIGHT * len(bars) + 4})
    return charts


def search_terms(lookup_index: dict[str, Any]) -> dict[str, list[str]]:
    """Per subject (`kind/name`), the names the index page's search matches, most telling first: the
    name, its last dotted part, the other names lookup resolves to it (`index.search_terms`: OpInfo's
    aliases, `F.softmax`, `torch.softmax`), and the aten overloads its CPU runs dispatched (`index["aten"]`).

    The page's script normalises both these terms and what is typed (`F.`, `torch.`, `aten::`,
    overloads, a trailing `_`), so a term may be given in any of those spellings.
    """
    aliases = index.search_terms(lookup_index)
    terms = {subject: [name, name.rpartition(".")[2], *aliases[subject]]
             for subject, name in ((s, s.partition("/")[2]) for s in lookup_index["subjects"])}
    for op, subjects in lookup_index["aten"].items():
        for subject in subjects:
            terms[subject].append(op)
    return {subject: list(dict.fromkeys(names)) for subject, names in terms.items()}


def _cell_figures(cell: dict[str, Any]) -> tuple[int | None, float | None]:
    """A cell's sample count and worst error (device error / CPU's, against float64), each None if unknown."""
    numerics = cell.get("numerics") or {}
    return cell.get("samples_run"), numerics.get("ratio")


def _subject_status(cells: list[dict[str, Any]]) -> str:
    """A subject's status on a stack: `pass` when every applicable cell passes, else its worst status."""
    applicable = [c["status"] for c in cells if c["status"] != NOT_APPLICABLE]
    if not applicable:
        return NOT_APPLICABLE
    return max(applicable, key=STATUSES.index)


def _short_label(data: dict[str, Any], named: bool = True) -> str:
    """The most significant version field of a snapshot, e.g. `torch_xla 2.9.0` (`2.9.0` unnamed)."""
    field = stack.version_fields(data["backend"])[0]
    value = data["versions"].get(field)
    if value is None:
        return data["label"]
    return f"{field} {value}" if named else str(value)


def search_data(snapshots: list[Snapshot], lookup_index: dict[str, Any]) -> dict[str, Any]:
    """The index page's search table: a column per stack (by backend, newest first), a row per subject.

    A row's entry for a stack is [status, passing cells, applicable cells, samples, worst error,
    works since (a version), since uncertain (the oldest stack that tested it), the case shown first,
    cells]; a cell is [dtype/direction, status, samples, short note, samples its repro command runs].
    Statuses are indices into `statuses`; 0 stands for a stack that has no case of the subject. `subjects`
    yields the rows as they are made (a large matrix's are tens of MB, written as they come).
    """
    by_backend: dict[str, list[Snapshot]] = defaultdict(list)
    for snap in sorted(snapshots, key=lambda s: (s.backend, s.order_key)):
        by_backend[snap.backend].append(snap)  # oldest first
    per_subject: dict[str, dict[str, list[tuple[str, dict]]]] = defaultdict(lambda: defaultdict(list))
    keys: dict[tuple[str, str], str] = {}  # one `dtype/direction` string for all the cells that have it
    for snap in snapshots:
        for case_id, cell in snap.cells.items():
            kind, name, dtype, direction = split_id(case_id)
            key = keys.setdefault((dtype, direction), f"{dtype}/{direction}")
            per_subject[f"{kind}/{name}"][snap.id].append((key, cell))
    columns_ = [snap for backend in sorted(by_backend) for snap in reversed(by_backend[backend])]
    terms = search_terms(lookup_index)
    versions = {snap.id: _short_label(snap.data, named=False) for snap in snapshots}  # under its column's name

    def rows() -> Iterator[list[Any]]:
        for subject in sorted(per_subject):
            entries: dict[str, list[Any]] = {}
            for snaps in by_backend.values():
                timeline: list[tuple[str, str | None]] = []
                for snap in snaps:
                    cells = per_subject[subject].get(snap.id)
                    timeline.append((snap.id, _subject_status([c for _, c in cells]) if cells else None))
                    if cells:
                        entries[snap.id] = _entry(cells, timeline, versions)
            yield [subject, terms[subject], [entries.get(snap.id, 0) for snap in columns_]]

    return {
        "statuses": list(STATUSES),
        "stacks": [{"id": snap.id, "backend": snap.backend, "label": snap.data["label"],
                    "short": _short_label(snap.data), "href": snapshot_href(snap.data)} for snap in columns_],
        "subjects": rows(),
    }


def _search_data_script(data: dict[str, Any]) -> Iterator[str]:
    """search-data.js in pieces, a row at a time: `window.OPSUITE_SEARCH = JSON.parse("<data as JSON>");`
    (browsers parse JSON faster than the same object as script). Each piece of the JSON is escaped on its
    own, which gives the same string literal as escaping it whole (escapes are per character)."""
    def literal(piece: str) -> str:
        return json.dumps(piece)[1:-1]

    head = json.dumps({**data, "subjects": []}, separators=(",", ":"), allow_nan=False)  # ends `"subjects":[]}`
    yield 'window.OPSUITE_SEARCH = JSON.parse("' + literal(head[:-2])
    for number, row in enumerate(data["subjects"]):
        yield literal(("," if number else "") + json.dumps(row, separators=(",", ":"), allow_nan=False))
    yield literal("]}") + '");\n'


def _entry(cells: list[tuple[str, dict]], timeline: list[tuple[str, str | None]],
           versions: dict[str, str]) -> list[Any]:
    """One subject's entry for one stack (see search_data): its cells, and its timeline (snapshot id,
    status) on the stack's backend, oldest first, ending with that stack."""
    cells = sorted(cells, key=lambda kc: column_order(kc[0]))
    status = _subject_status([c for _, c in cells])
    applicable = [(k, c) for k, c in cells if c["status"] != NOT_APPLICABLE]
    figures = [_cell_figures(c) for _, c in cells]
    samples = [n for n, _ in figures if n is not None]
    errors = [e for _, e in figures if e is not None]
    facts = history.timeline_facts(timeline)
    tested = [label for label, s in timeline if s not in (None, NOT_APPLICABLE)]
    uncertain = bool(facts["works_since"]) and facts["works_since"] == tested[0]
    # The cell a link opens first: the worst one, where there is something to see.
    first = next((k for k, c in applicable if c["status"] == status), cells[0][0])
    return [STATUSES.index(status), sum(c["status"] in WORKING for _, c in applicable), len(applicable),
            sum(samples) if samples else None, max(errors) if errors else None,
            versions.get(facts["works_since"]), uncertain, first,
            [[key, STATUSES.index(cell["status"]), run, notes.short(cell), notes.repro_samples(cell)]
             for (key, cell), (run, _) in zip(cells, figures)]]


def index_files(snapshots: list[Snapshot], lookup_index: dict[str, Any],
                release_notes: list[dict[str, str]] = ()) -> dict[str, str | Iterator[str]]:
    """`matrix/index.html` (the search over every subject and stack, the coverage chart, every snapshot
    with its figures, links to the release notes: `release_notes.files`) and its script and data files."""
    ordered = sorted(snapshots, key=lambda s: (s.backend, s.order_key), reverse=True)
    page = _environment().get_template("index.html.j2").render(
        charts=chart(snapshots),
        snapshots=[{**s.data, "href": snapshot_href(s.data), "samples": s.samples} for s in ordered],
        statuses=STATUSES, colors=STATUS_COLORS, bar_width=BAR_WIDTH, row_height=ROW_HEIGHT, pct=pct,
        # Found on disk under release-notes/<backend>/: names of files (`2.8.1..2.9.0__<hashes>.html`), not
        # a header's words; each part still has to be a name, so a link never leaves that directory.
        release_notes=[page for page in release_notes
                       if all(is_name(part) for link in (page["html"], page["md"]) for part in PurePosixPath(link).parts)],
        scripts=(SEARCH_DATA, NAMES_SCRIPT, SEARCH_SCRIPT))
    return {"index.html": page, SEARCH_DATA: _search_data_script(search_data(snapshots, lookup_index)),
            **{name: _script(name) for name in (NAMES_SCRIPT, SEARCH_SCRIPT)}}
