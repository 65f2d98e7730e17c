"""How fast the matrix pages are in a real browser as snapshots accumulate: the index page's first render and a
search keystroke, with the published snapshots and with ten (the published ones plus synthesised copies).

Both matrices are built in this one invocation in a temp dir (never under matrix/): a copy of the published
snapshots (the baseline), and the same with copies of them as if on later stack versions, up to `--snapshots`
(default 10). Pages are rendered with `opsuite reindex`'s code and loaded from file:// in headless Chromium
(Debian's chromium and chromium-driver, driven by Selenium); each figure is given as the median (min-max) over
`--repeat` fresh loads:

- first render: navigation start to the end of the first frame painted with the search table (a
  benchmark-only copy of the page marks it), and to the load event;
- keystroke: typing `softmax` one letter at a time, from the input event to the next frame's paint, over
  every letter, and the CPU time of the page's main thread meanwhile (what waiting for a shared CPU leaves out);
  and the heavier one-offs: clearing the box (every subject again) and "show all matches" (to
  its first frame, and to the frame with every row).
- the largest snapshot page (the snapshot pages do not grow with the matrix): first render and a filter keystroke.

Prints the figures, the ratio of ten snapshots to the baseline, and the targets (first render under 1 s, a
keystroke under 100 ms). Usage (main environment): python benchmarks/page_speed.py [--snapshots 10] [--repeat 5]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from opsuite.matrix import publish, snapshot, stack  # noqa: E402

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1400,1000")
QUERY = "softmax"

# A benchmark-only script, run right after the page's own: it marks the end of the first frame painted
# after the page's scripts built the table (the page itself carries no instrumentation).
PAINT_MARK = "bench-paint-mark.js"
PAINT_MARK_JS = 'requestAnimationFrame(() => setTimeout(() => performance.mark("painted"), 0));\n'
# When the page was painted with its table, and its load event, from navigation start (ms).
PAINTS = """
const done = arguments[arguments.length - 1];
(function wait() {
  const [mark] = performance.getEntriesByName("painted");
  if (!mark) return setTimeout(wait, 5);
  done({painted: mark.startTime, load: performance.getEntriesByType("navigation")[0].loadEventEnd});
})();
"""
# One change of a control, from the event to the paint of the frame after it (ms).
STEP = """
const [selector, value, done] = arguments;
const control = document.querySelector(selector);
const start = performance.now();
control.value = value;
control.dispatchEvent(new Event("input"));
requestAnimationFrame(() => setTimeout(() => done(performance.now() - start), 0));
"""
# "show all matches": to the first frame painted, and to the frame with every matching row.
SHOW_ALL = """
const done = arguments[arguments.length - 1];
const rows = () => document.querySelectorAll("#search tbody tr.subject-row").length;
const start = performance.now();
document.getElementById("more").click();
let first = null;
(function wait() {
  requestAnimationFrame(() => setTimeout(() => {
    if (first === null) first = performance.now() - start;
    if (rows() < Number(document.getElementById("matches").textContent)) return wait();
    done([first, performance.now() - start]);
  }, 0));
})();
"""


def synthesise(source: Path, dest: Path, count: int) -> int:
    """Copy the snapshots of `source` into `dest`, then add copies as if on later versions of each backend's
    most significant version field until there are `count`; the number of snapshots in `dest`."""
    real = snapshot.load_all(source)
    for snap in real:
        target = dest / snap.backend / snap.data["key"]
        target.mkdir(parents=True)
        shutil.copy(snap.path / snapshot.FILE, target / snapshot.FILE)
    for n in range(count - len(real)):
        data = copy.deepcopy(real[n % len(real)].data)
        field = stack.version_fields(data["backend"])[0]
        version = f"{data['versions'][field].split('+')[0]}.post{n + 1}"
        data["versions"][field] = data["stack"][field] = version
        data["key"] = f"{field}-{version}__synthetic{n + 1}"
        data["id"] = f"{data['backend']}/{data['key']}"
        data["label"] = " · ".join(f"{name} {value}" for name, value in data["versions"].items())
        target = dest / data["backend"] / data["key"]
        target.mkdir(parents=True)
        (target / snapshot.FILE).write_text(json.dumps(data))
    started = time.perf_counter()
    snapshots = publish.reindex(dest)
    print(f"  rendered {len(snapshots)} snapshots' pages in {time.perf_counter() - started:.1f} s "
          f"(search-data.js {(dest / 'search-data.js').stat().st_size / 1e6:.2f} MB)")
    for directory in (dest, *(snap.path for snap in snapshots)):
        page = (directory / "index.html").read_text()
        (directory / PAINT_MARK).write_text(PAINT_MARK_JS)
        (directory / "bench.html").write_text(page.replace("</body>", f'<script src="{PAINT_MARK}"></script>\n</body>'))
    return len(snapshots)


def browser(profile: Path):
    """Headless Chromium with its profile in `profile`, reporting main-thread CPU time."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.execute_cdp_cmd("Performance.enable", {"timeDomain": "threadTicks"})
    return driver


def _main_thread_ms(driver) -> float:
    """CPU time of the page's main thread so far (ms): what a keystroke costs, less waiting for a shared CPU."""
    metrics = driver.execute_cdp_cmd("Performance.getMetrics", {})["metrics"]
    return 1000 * next(m["value"] for m in metrics if m["name"] == "ThreadTime")


def _keystrokes(driver, selector: str, figures: dict[str, list[float]]) -> None:
    """Type QUERY into `selector` a letter at a time: wall and main-thread CPU time of each letter."""
    for i in range(1, len(QUERY) + 1):
        cpu = _main_thread_ms(driver)
        figures["keystroke"].append(driver.execute_async_script(STEP, selector, QUERY[:i]))
        figures["keystroke CPU"].append(_main_thread_ms(driver) - cpu)


def _load(driver, page: Path) -> dict[str, float]:
    driver.get("about:blank")
    driver.get((page.parent / "bench.html").as_uri())
    return driver.execute_async_script(PAINTS)


def measure_index(driver, page: Path, repeat: int) -> dict[str, list[float]]:
    """Every figure (ms) of `repeat` fresh loads of an index page."""
    figures: dict[str, list[float]] = defaultdict(list)
    for _ in range(repeat):
        paints = _load(driver, page)
        figures["first render"].append(paints["painted"])
        figures["load event"].append(paints["load"])
        _keystrokes(driver, "#q", figures)
        figures["rows for softmax"].append(len(driver.find_elements("css selector", "#search tbody tr.subject-row")))
        figures["clear the box"].append(driver.execute_async_script(STEP, "#q", ""))
        first, every = driver.execute_async_script(SHOW_ALL)
        figures["show all: 1st frame"].append(first)
        figures["show all: every row"].append(every)
        figures["rows in all"].append(len(driver.find_elements("css selector", "#search tbody tr.subject-row")))
    return figures


def measure_snapshot_page(driver, page: Path, repeat: int) -> dict[str, list[float]]:
    """Every figure (ms) of `repeat` fresh loads of a snapshot page, typing in its op filter."""
    figures: dict[str, list[float]] = defaultdict(list)
    for _ in range(repeat):
        figures["first render"].append(_load(driver, page)["painted"])
        _keystrokes(driver, "#f-op", figures)
    return figures


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):8.1f} ({min(values):.0f}-{max(values):.0f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--matrix", type=Path, default=ROOT / "matrix", help="the published matrix to copy")
    parser.add_argument("--snapshots", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="opsuite-page-speed-"))
    driver = None
    try:
        print("baseline: the published snapshots")
        base = synthesise(args.matrix, work / "base", 0)
        print(f"grown: {args.snapshots} snapshots")
        grown = synthesise(args.matrix, work / "grown", args.snapshots)
        driver = browser(work / "chromium-profile")
        figures = {base: measure_index(driver, work / "base" / "index.html", args.repeat),
                   grown: measure_index(driver, work / "grown" / "index.html", args.repeat)}
        largest = max(snapshot.load_all(work / "base"), key=lambda s: len(s.cells))
        snap_page = measure_snapshot_page(driver, largest.path / "index.html", args.repeat)
    finally:
        if driver is not None:
            driver.quit()
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nmachine load average while measuring: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs "
          "(a shared machine: the minimum is the figure least disturbed by others)")
    print(f"\nindex.html, {args.repeat} loads, {len(QUERY)} keystrokes each: median (min-max) ms; rows: counts")
    print(f"{'':20}{f'{base} snapshots':>22}{f'{grown} snapshots':>22}{'ratio of medians':>18}")
    for key in figures[base]:
        a, b = figures[base][key], figures[grown][key]
        ratio = statistics.median(b) / statistics.median(a)
        print(f"{key:20}{_spread(a):>22}{_spread(b):>22}{ratio:>18.2f}")
    print(f"\n{largest.id} index.html ({len(largest.cells)} cells): median (min-max) ms")
    for key, values in snap_page.items():
        print(f"{key:20}{_spread(values):>22}")
    render, keystroke = (statistics.median(figures[grown][k]) for k in ("first render", "keystroke"))
    print(f"\ntargets with {grown} snapshots (medians): first render {render:.0f} ms (< 1000: "
          f"{'met' if render < 1000 else 'MISSED'}), keystroke {keystroke:.0f} ms "
          f"(< 100: {'met' if keystroke < 100 else 'MISSED'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
