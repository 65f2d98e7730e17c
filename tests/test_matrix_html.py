"""The HTML pages: escaped error texts, nothing loaded from anywhere, and filters that work in Chromium."""

import re
import shutil
import tempfile

import pytest
from matrix_support import ADD, edited_copy, failing, real_cpu_results

from opsuite.matrix import publish

HOSTILE = '<script>window.pwned = 1</script> & "quoted" <b>bold</b>'
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
# Headless, and nothing that reaches out: the test must pass without a network.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage")


@pytest.fixture(scope="module")
def matrix(tmp_path_factory):
    """Two cpu snapshots: the real run, and a copy as on torch 2.14.0 where ADD failed with a hostile message."""
    work = tmp_path_factory.mktemp("html")
    real = real_cpu_results()
    hostile = edited_copy(real, work / "hostile.jsonl", torch="2.14.0", case=failing(ADD, message=HOSTILE))
    matrix = work / "matrix"
    old = publish.publish([real], matrix)
    new = publish.publish([hostile], matrix)
    return matrix, old, new


def test_error_texts_are_escaped_in_html_and_markdown(matrix):
    path, _, new = matrix
    page = (new.path / "index.html").read_text()
    assert "&lt;script&gt;window.pwned = 1&lt;/script&gt; &amp; &#34;quoted&#34; &lt;b&gt;bold&lt;/b&gt;" in page
    assert "<script>window.pwned" not in page and "<b>bold" not in page
    assert page.count("<script>") == 1  # the page's own filter script, and nothing else
    markdown = (new.path / "README.md").read_text()
    assert "\\<script\\>window.pwned = 1\\</script\\> \\& \"quoted\" \\<b\\>bold\\</b\\>" in markdown


def test_pages_are_self_contained(matrix):
    path, old, new = matrix
    for page in (path / "index.html", old.path / "index.html", new.path / "index.html"):
        text = page.read_text()
        assert "default-src 'none'" in text  # the browser itself refuses any fetch
        assert not re.search(r"<(link|img|iframe)\b|\bsrc=|@import|url\(", text)
        assert not re.findall(r'href="(?:https?:)?//', text)


def test_index_page_charts_coverage_across_versions(matrix):
    path, old, new = matrix
    page = (path / "index.html").read_text()
    chart = page[page.index("<svg"):page.index("</svg>")]
    labels = re.findall(r'<a href="([^"]+)"><text', chart)
    assert labels == [f"cpu/{old.data['key']}/index.html", f"cpu/{new.data['key']}/index.html"]  # oldest first
    passes = re.findall(r"([0-9.]+) % pass", chart)
    assert passes == [f"{old.data['summary']['pass_pct']:.1f}", f"{new.data['summary']['pass_pct']:.1f}"]
    assert float(passes[1]) < float(passes[0])


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
