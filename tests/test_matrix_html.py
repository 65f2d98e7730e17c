"""The HTML pages: escaped error texts, a policy that runs no inline script, links built only from checked
parts, the index page's search across every stack and the snapshot page's filters, in a real Chromium."""

import copy
import json
import re
import shutil
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from matrix_support import ADD, SOFTMAX_BACKWARD, edited_copy, failing, real_cpu_results, three_version_matrix

from opsuite.matrix import index, notes, publish, render_html, snapshot
from opsuite.matrix.snapshot import Snapshot

HOSTILE = '<script>window.pwned = 1</script> & "quoted" <b>bold</b>'
HOSTILE_BACKEND = "javascript:alert(1)//"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
# Headless, and nothing that reaches out: the test must pass without a network.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage")
# What people type for OpInfo's `softmax`, and the name each should rank first.
TYPED = {"softmax": "ops/softmax", "F.softmax": "ops/softmax", "torch.nn.functional.softmax": "ops/softmax",
         "nn.functional.softmax": "ops/softmax", "aten::_softmax": "ops/softmax", "torch.add": "ops/add",
         "aten::add.Tensor": "ops/add", "add_": "ops/add", "torch.Tensor.add": "ops/add"}


def as_backend(source: Path, dest: Path, backend: str) -> Path:
    """A copy of a results file as if run on another backend (a rendering fixture in a tmp dir only)."""
    objs = [json.loads(raw) for raw in source.read_text().splitlines()]
    for obj in objs:
        obj["backend"] = backend
        obj["run_id"] = f"{obj['run_id']}-{backend}"
    dest.write_text("".join(json.dumps(obj) + "\n" for obj in objs))
    return dest


@pytest.fixture(scope="module")
def matrix(tmp_path_factory):
    """Three stacks: the real cpu run, a copy as on torch 2.14.0 where ADD failed with a hostile message,
    and the real run as if of a second backend."""
    work = tmp_path_factory.mktemp("html")
    real = real_cpu_results()
    hostile = edited_copy(real, work / "hostile.jsonl", torch="2.14.0", case=failing(ADD, message=HOSTILE))
    other = as_backend(real, work / "other.jsonl", "inductor")
    matrix = work / "matrix"
    old = publish.publish([real], matrix)
    new = publish.publish([hostile], matrix)
    publish.publish([other], matrix)
    return matrix, old, new


def _pages(path):
    return [path / "index.html", *(snap.path / "index.html" for snap in snapshot.load_all(path))]


def test_error_texts_are_escaped_in_html_and_markdown(matrix):
    path, _, new = matrix
    page = (new.path / "index.html").read_text()
    assert "&lt;script&gt;window.pwned = 1&lt;/script&gt; &amp; &#34;quoted&#34; &lt;b&gt;bold&lt;/b&gt;" in page
    assert "<script>window.pwned" not in page and "<b>bold" not in page
    markdown = (new.path / "README.md").read_text()
    assert "\\<script\\>window.pwned = 1\\</script\\> \\& \"quoted\" \\<b\\>bold\\</b\\>" in markdown


def test_pages_carry_a_policy_and_run_no_inline_script(matrix):
    path, _, _ = matrix
    for page in _pages(path):
        text = page.read_text()
        [policy] = re.findall(r'<meta http-equiv="Content-Security-Policy" content="([^"]+)">', text)
        directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
        assert directives["default-src"] == "'none'" and directives["script-src"] == "'self'"
        scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", text, flags=re.S)
        assert len(scripts) >= 2 and all(body == "" for _, body in scripts)  # no inline script at all
        for attributes, _ in scripts:  # each a file written beside the page
            [name] = re.findall(r'^ src="([a-z-]+\.js)"$', attributes)
            assert (page.parent / name).is_file()
        assert not re.search(r"\son[a-z]+=|javascript:", text, flags=re.I)  # no inline handlers or URLs
        assert not re.search(r"<(link|img|iframe)\b|@import|url\(", text)
        for href in re.findall(r'href="([^"]*)"', text):  # every static link is to a file of the matrix
            assert not urlparse(href).scheme and not href.startswith("/") and ".." not in href.replace("../../", "")
            assert (page.parent / unquote(href.partition("#")[0])).resolve().is_file(), href


def test_index_page_charts_coverage_across_versions(matrix):
    path, old, new = matrix
    page = (path / "index.html").read_text()
    chart = page[page.index("<svg"):page.rindex("</svg>")]
    labels = re.findall(r'<a href="([^"]+)"><text', chart)
    [other] = [s for s in snapshot.load_all(path) if s.backend == "inductor"]
    assert labels == [f"cpu/{old.data['key']}/index.html", f"cpu/{new.data['key']}/index.html",
                      f"inductor/{other.data['key']}/index.html"]  # per backend, oldest first
    passes = re.findall(r"([0-9.]+) % pass", chart)
    assert passes[:2] == [f"{old.data['summary']['pass_pct']:.1f}", f"{new.data['summary']['pass_pct']:.1f}"]
    assert float(passes[1]) < float(passes[0])


def test_only_checked_parts_become_links(tmp_path):
    assert all(render_html.safe_part(p) for p in ("cpu", "neuron-xla", "torch-2.11.0+cu130__5f6d6befe1"))
    assert not any(render_html.safe_part(p) for p in (HOSTILE_BACKEND, "..", "a..b", ".hidden", "", "a/b", None))
    path, _ = three_version_matrix()
    [real, *_] = snapshot.load_all(path)
    bad = copy.deepcopy(real.data)
    bad.update(backend=HOSTILE_BACKEND, id=f"{HOSTILE_BACKEND}/{bad['key']}")
    bad["runs"][0]["file"] = "results/javascript:alert(1)"
    snaps = [real, Snapshot(tmp_path / "nowhere", bad)]
    files = render_html.index_files(snaps, index.build(snaps))
    hrefs = re.findall(r'href="([^"]*)"', files["index.html"])
    assert hrefs and all(h.startswith(f"cpu/{real.data['key']}/") for h in hrefs)  # none for the bad one
    data = json.loads(json.loads("".join(files[render_html.SEARCH_DATA]).partition("JSON.parse(")[2].rpartition(")")[0]))
    assert [s["href"] for s in data["stacks"]] == [f"cpu/{real.data['key']}/index.html", None]
    page = "".join(render_html.snapshot_files(Snapshot(tmp_path, bad))["index.html"])
    assert 'href="results/javascript' not in page and "<td>results/javascript:alert(1)</td>" in page


def test_search_data_says_since_which_version_per_stack():
    path, ids = three_version_matrix()
    snaps = snapshot.load_all(path)
    data = render_html.search_data(snaps, index.build(snaps))
    assert [s["id"] for s in data["stacks"]] == [ids["2.15.0"], ids["2.14.0"], ids["real"]]  # newest first
    statuses = data["statuses"]
    rows = {subject: entries for subject, _, entries in data["subjects"]}
    torch = {snap.id: snap.data["versions"]["torch"] for snap in snaps}
    assert [s["short"] for s in data["stacks"]] == [f"torch {torch[s['id']]}" for s in data["stacks"]]
    # [status, passing, applicable, samples, worst error, since, since uncertain, first case, cells]
    add = rows["ops/add"]
    assert [statuses[e[0]] for e in add] == ["pass", "runtime_error", "pass"]
    assert [e[5:7] for e in add] == [["2.15.0", False], [None, False], [torch[ids["real"]], True]]
    assert add[1][1:3] == [3, 4] and add[1][7] == "float32/forward"  # the failing case is shown first
    real_add = next(s for s in snaps if s.id == ids["real"]).cells
    assert add[2][3] == sum(c["samples_run"] for k, c in real_add.items() if k.startswith("ops/add/"))
    assert add[2][4] == max(c["numerics"]["ratio"] for k, c in real_add.items() if k.startswith("ops/add/"))
    softmax = rows["ops/softmax"]
    assert [statuses[e[0]] for e in softmax] == ["runtime_error", "runtime_error", "pass"]
    assert softmax[0][7] == SOFTMAX_BACKWARD.partition("softmax/")[2] and softmax[0][5] is None
    assert rows["blocks/tiny_attention"][1:] == [0, 0]  # only the newest stack has it
    assert [statuses[e[0]] for e in rows["ops/jiterator_unary"][1:]] == ["skip", "skip"]


def test_search_data_without_sample_counts_or_errors():
    path, _ = three_version_matrix()
    snaps = [copy.deepcopy(s) for s in snapshot.load_all(path)]
    for snap in snaps:
        for cell in snap.cells.values():
            cell.pop("samples_run", None)
            cell["numerics"] = None
    data = render_html.search_data(snaps, index.build(snaps))
    entries = [e for _, _, row in data["subjects"] for e in row if e]
    assert entries and all(e[3] is None and e[4] is None for e in entries)
    assert all(cell[2] is None for e in entries for cell in e[8])


def test_search_terms_are_names_and_dispatched_aten_ops():
    path, _ = three_version_matrix()
    lookup_index = index.load(path)
    terms = render_html.search_terms(lookup_index)
    assert set(terms) == set(lookup_index["subjects"])
    assert terms["ops/softmax"][0] == "softmax" and "aten::_softmax" in terms["ops/softmax"]
    assert terms["ops/add"][:1] == ["add"] and "aten::add.Tensor" in terms["ops/add"]
    assert {"F.softmax", "nn.functional.softmax", "special.softmax"} <= set(terms["ops/softmax"])  # lookup's names
    dotted = {"subjects": {"ops/nn.functional.gelu": {}}, "names": {"gelu": ["nn.functional.gelu"]},
              "aten": {"aten::gelu": ["ops/nn.functional.gelu"]}}
    assert render_html.search_terms(dotted) == {"ops/nn.functional.gelu": [
        "nn.functional.gelu", "gelu", "F.gelu", "torch.nn.functional.gelu", "aten::gelu"]}


@pytest.fixture(scope="module")
def browser():
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        pytest.fail("this test needs Debian's Chromium: apt-get install -y chromium chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="opsuite-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    # An explicit driver path: Selenium Manager (which downloads drivers) is never asked.
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def _errors(driver):
    """The browser console's errors since the last call (a policy violation would be one)."""
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def _visible(driver):
    return [(row.get_attribute("data-subject"), row.get_attribute("data-dtype"), row.get_attribute("data-direction"),
             row.get_attribute("data-status"))
            for row in driver.find_elements("css selector", "#cells tbody tr") if row.is_displayed()]


def _expected(snap, keep):
    out = []
    for case_id, cell in snap.cells.items():
        kind, name, dtype, direction = case_id.split("/")
        row = (f"{kind}/{name}", dtype, direction, cell["status"])
        if keep(row):
            out.append(row)
    return sorted(out)


@pytest.mark.main
def test_filters_work_in_a_real_browser(matrix, browser):
    from selenium.webdriver.support.ui import Select

    _, _, snap = matrix
    browser.get((snap.path / "index.html").as_uri())
    every = _expected(snap, lambda row: True)
    assert sorted(_visible(browser)) == every and len(every) == len(snap.cells)
    assert browser.execute_script("return window.pwned") is None  # the hostile message did not run
    assert HOSTILE in browser.find_element("css selector", "#cells").text

    browser.find_element("id", "f-op").send_keys("softmax")
    softmax = _expected(snap, lambda row: "softmax" in row[0])
    assert sorted(_visible(browser)) == softmax and 0 < len(softmax) < len(every)
    assert browser.find_element("id", "shown").text == str(len(softmax))
    browser.find_element("id", "f-op").clear()
    browser.find_element("id", "f-op").send_keys("F.softmax")  # as a PyTorch user writes it
    assert sorted(_visible(browser)) == softmax

    browser.find_element("id", "f-op").clear()
    Select(browser.find_element("id", "f-status")).select_by_value("runtime_error")
    assert _visible(browser) == [("ops/add", "float32", "forward", "runtime_error")]

    Select(browser.find_element("id", "f-status")).select_by_value("")
    Select(browser.find_element("id", "f-dtype")).select_by_value("bfloat16")
    Select(browser.find_element("id", "f-direction")).select_by_value("backward")
    assert sorted(_visible(browser)) == _expected(snap, lambda row: row[1:3] == ("bfloat16", "backward")) != []
    assert browser.current_url.endswith("#dtype=bfloat16&direction=backward")

    # A linked view: the filter state comes from the URL fragment; an aten overload is a valid op filter.
    browser.get((snap.path / "index.html").as_uri() + "#op=aten::_softmax&direction=forward")
    assert browser.find_element("id", "f-op").get_attribute("value") == "aten::_softmax"
    shown = _visible(browser)
    assert shown and all(row[2] == "forward" and "aten::_softmax" in snap.cells["/".join(row[:3])]["aten_ops"]
                         for row in shown)

    # A case's anchor: every row shown, the URL keeps the fragment, the row is the target.
    browser.get((snap.path / "index.html").as_uri() + "#" + SOFTMAX_BACKWARD)
    assert sorted(_visible(browser)) == every and browser.current_url.endswith("#" + SOFTMAX_BACKWARD)
    assert browser.execute_script("return document.querySelector(':target').id") == SOFTMAX_BACKWARD
    assert _errors(browser) == []


def _search(driver, text):
    box = driver.find_element("id", "q")
    box.clear()
    if text:
        box.send_keys(text)
    else:  # a cleared box, as a person's last backspace leaves it
        driver.execute_script("arguments[0].dispatchEvent(new Event('input'))", box)
    return [row.find_element("css selector", ".toggle").text
            for row in driver.find_elements("css selector", "#search tbody tr.subject-row")]


def _row(driver, name):
    return next(row for row in driver.find_elements("css selector", "#search tbody tr.subject-row")
                if row.find_element("css selector", ".toggle").text == name)


def _resolves(href):
    """Whether a link of the pages is to an existing file and, with a fragment, to an element of it."""
    url = urlparse(href)
    file = Path(unquote(url.path))
    return url.scheme == "file" and file.is_file() and (
        not url.fragment or f'id="{unquote(url.fragment)}"' in file.read_text())


@pytest.mark.main
def test_index_page_search_finds_an_op_across_all_stacks(matrix, browser):
    path, old, new = matrix
    stacks = len(snapshot.load_all(path))
    browser.get((path / "index.html").as_uri())
    names = _search(browser, "softmax")
    assert names[0] == "softmax" and set(names) <= {"softmax", "jiterator_unary", "add"} and "add" not in names
    headers = browser.find_elements("css selector", "#search thead tr.stacks th")
    assert len(headers) == stacks == 3
    row = _row(browser, "softmax")
    cells = row.find_elements("css selector", "td.cell")
    assert len(cells) == stacks and all(c.find_element("css selector", ".status").text == "✓ pass" for c in cells)
    assert all("samples" in c.text and "err ×" in c.text and "since ≤" in c.text for c in cells)
    links = [a.get_attribute("href") for a in row.find_elements("css selector", "a")]
    assert len(links) == stacks and all(_resolves(href) for href in links)
    assert browser.current_url.endswith("#q=softmax")

    # The details: every dtype x direction of every stack, each linking to its row, with its repro command.
    row.find_element("css selector", ".toggle").click()
    details = browser.find_element("css selector", "#search tr.details-row")
    cases = sum(1 for snap in snapshot.load_all(path) for case in snap.cells if case.startswith("ops/softmax/"))
    links = [a.get_attribute("href") for a in details.find_elements("css selector", "a")]
    assert len(links) == cases and all(_resolves(href) for href in links)
    repros = [c.text for c in details.find_elements("css selector", "code")]
    inductor = next(snap for snap in snapshot.load_all(path) if snap.backend == "inductor")
    assert notes.repro_command(SOFTMAX_BACKWARD, "inductor", inductor.cells[SOFTMAX_BACKWARD]) in repros
    assert len(repros) == cases and all(" --samples " in repro for repro in repros)

    for typed, subject in TYPED.items():
        assert _search(browser, typed)[0] == subject.partition("/")[2], typed
    normalise = "return opsuiteNames.normalise(arguments[0])"
    spellings = {"F.softmax": "nn.functional.softmax", "torch.nn.functional.softmax": "nn.functional.softmax",
                 "F.softmax(x, dim=1)": "nn.functional.softmax", "aten::index_put_": "index_put",
                 "torch.ops.aten.index_put.out": "index_put", "aten._softmax.default": "_softmax",
                 "torch.Tensor.add_": "add", "torch.add.out": "add", "__radd__": "__radd__"}
    assert {typed: browser.execute_script(normalise, typed) for typed in spellings} == spellings

    # The failure on torch 2.14.0: its column says so, and its details run no hostile script.
    names = _search(browser, "add")
    add = _row(browser, "add").find_elements("css selector", "td.cell")
    stack_ids = [a.get_attribute("href") for a in browser.find_elements("css selector", "#search thead tr.stacks a")]
    column = next(i for i, href in enumerate(stack_ids) if f"/cpu/{new.data['key']}/" in href)
    assert add[column].find_element("css selector", ".status").text == "runtime_error"
    assert "since" not in add[column].text
    _row(browser, "add").find_element("css selector", ".toggle").click()
    assert HOSTILE in browser.find_element("css selector", "#search tr.details-row").text
    assert browser.execute_script("return window.pwned") is None

    browser.find_element("id", "failing").click()  # only subjects that do not pass everywhere
    assert _search(browser, "") == ["add"]
    assert browser.current_url.endswith("#failing=1")
    assert _errors(browser) == []


@pytest.mark.main
def test_a_hostile_backend_name_never_becomes_a_link(matrix, browser, tmp_path):
    path, _, new = matrix
    pages = tmp_path / "matrix"
    shutil.copytree(path, pages)
    bad = copy.deepcopy(new.data)
    bad.update(backend=HOSTILE_BACKEND, id=f"{HOSTILE_BACKEND}/{bad['key']}")
    snaps = [*snapshot.load_all(pages), Snapshot(pages / "nowhere", bad)]
    for name, text in render_html.index_files(snaps, index.build(snaps)).items():
        publish.write_text(pages / name, text)
    browser.get((pages / "index.html").as_uri())
    _search(browser, "add")
    hrefs = browser.execute_script("return Array.from(document.links, a => a.href)")
    assert hrefs and not [h for h in hrefs if not h.startswith("file:")]
    assert HOSTILE_BACKEND in browser.find_element("css selector", "#search thead").text  # shown as text
    _row(browser, "add").find_element("css selector", ".toggle").click()
    hrefs = browser.execute_script("return Array.from(document.links, a => a.href)")
    assert not [h for h in hrefs if not h.startswith("file:")]
    assert _errors(browser) == []
