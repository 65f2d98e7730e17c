"""Self-contained HTML pages (Jinja2): a searchable page per snapshot and the matrix's index page.

Pages load nothing from anywhere (a Content-Security-Policy forbids it): styles, the filter script and
the coverage chart (inline SVG) are in the file. Every text from a record is escaped by autoescape.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from typing import Any

from opsuite.matrix import notes
from opsuite.vocabulary import STATUS_COLORS
from opsuite.matrix.render_md import STATUSES, catalog_text, columns, pct, summary_rows
from opsuite.matrix.snapshot import Snapshot, split_id

BAR_WIDTH = 480  # px of a full (100 %) bar in the coverage chart
ROW_HEIGHT = 26


@functools.cache
def _environment():
    import jinja2

    return jinja2.Environment(loader=jinja2.PackageLoader("opsuite", "templates"), autoescape=True,
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def _rows(snap: Snapshot) -> list[dict[str, Any]]:
    rows = []
    for case_id, cell in snap.cells.items():
        kind, name, dtype, direction = split_id(case_id)
        rows.append({"case_id": case_id, "subject": f"{kind}/{name}", "dtype": dtype, "direction": direction,
                     "status": cell["status"], "details": notes.details(cell)[1:],
                     "aten": " ".join(cell.get("aten_ops", ()))})
    return rows


def snapshot_page(snap: Snapshot) -> str:
    """The snapshot's index.html: stack, summary, and one filterable row per cell."""
    cells = snap.cells
    cols = columns(cells)
    return _environment().get_template("snapshot.html.j2").render(
        snap=snap.data, rows=_rows(snap), statuses=STATUSES, colors=STATUS_COLORS,
        dtypes=list(dict.fromkeys(d for d, _ in cols)), directions=list(dict.fromkeys(r for _, r in cols)),
        summary=summary_rows(cells), pct=pct, catalog_text=catalog_text)


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
            bars.append({"label": snap.data["label"], "href": f"{backend}/{snap.data['key']}/index.html",
                         "pass_pct": pct(summary["pass_pct"]), "segments": segments})
        charts.append({"backend": backend, "bars": bars, "height": ROW_HEIGHT * len(bars) + 4})
    return charts


def index_page(snapshots: list[Snapshot]) -> str:
    """`matrix/index.html`: the coverage chart across versions and every snapshot with its figures."""
    ordered = sorted(snapshots, key=lambda s: (s.backend, s.order_key), reverse=True)
    return _environment().get_template("index.html.j2").render(
        charts=chart(snapshots), snapshots=[s.data for s in ordered], statuses=STATUSES, colors=STATUS_COLORS,
        bar_width=BAR_WIDTH, row_height=ROW_HEIGHT, pct=pct)
