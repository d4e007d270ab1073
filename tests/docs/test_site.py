"""The built site in a real browser: the home page, a layer page, the paper zoo and a page with
maths render without console errors, and search finds ``max_pool``. Screenshots of each go to
``docs/_build/screenshots/``.

Run after ``make docs`` with ``pytest -m docs tests/docs`` (``make docs-test`` does both).
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.docs

ROOT = Path(__file__).resolve().parents[2]

ALL_IMAGES_LOADED = "[...document.images].every(i => i.complete && i.naturalWidth > 0)"


def _open(browser, url: str, shot: Path):
    page = browser.new_page()
    page.goto(url)
    page.wait_until("document.readyState === 'complete'")
    page.wait_until(ALL_IMAGES_LOADED)
    page.screenshot(shot)
    return page


def test_home_page_renders(browser, site_url, screenshots):
    page = _open(browser, f"{site_url}/index.html", screenshots / "home.png")
    assert page.evaluate("document.querySelector('h1').textContent").startswith("survae")
    links = page.evaluate(
        "[...document.querySelectorAll('.sidebar-tree a')].map(a => a.textContent)"
    )
    for section in ("Getting started", "Layer catalogue", "Paper zoo", "API reference"):
        assert any(section in link for link in links), f"sidebar lacks {section!r}: {links}"
    assert page.errors == []


def test_layer_page_renders(browser, site_url, screenshots):
    page = _open(
        browser, f"{site_url}/catalogue/layer/max_pool.html", screenshots / "layer_max_pool.png"
    )
    assert page.evaluate("document.querySelector('h1').textContent").startswith("max_pool")
    signature = page.evaluate("document.querySelector('dl.py.class dt').textContent")
    assert "MaxPool" in signature
    keys = page.evaluate(
        "[...document.querySelectorAll('table td:first-child')].map(c => c.textContent)"
    )
    assert keys, "no config keys table"
    assert "name: max_pool" in page.evaluate(
        "document.querySelector('.highlight-yaml').textContent"
    )
    assert page.errors == []


def test_zoo_page_lists_every_experiment(browser, site_url, screenshots):
    page = _open(browser, f"{site_url}/zoo.html", screenshots / "zoo.png")
    rows = page.evaluate(
        "[...document.querySelectorAll('table tbody tr')].map(r => r.cells[0].textContent.trim())"
    )
    experiments = sorted(p.stem for p in (ROOT / "configs/experiment").glob("*.yaml"))
    assert sorted(rows) == experiments
    assert page.evaluate("document.querySelectorAll('figure img').length") > 0
    page.evaluate(
        "document.querySelectorAll('section section')[1].scrollIntoView({behavior: 'instant'})"
    )
    page.screenshot(screenshots / "zoo_second_paper.png")
    assert page.errors == []


def test_maths_is_typeset_offline(browser, site_url, screenshots):
    """MathJax is served with the site (no CDN): formulas become MathJax output."""
    page = _open(browser, f"{site_url}/concepts.html", screenshots / "concepts_maths.png")
    assert page.wait_until("document.querySelectorAll('mjx-container').length") > 0
    page.screenshot(screenshots / "concepts_maths.png")
    assert page.errors == []


def test_search_finds_max_pool(browser, site_url, screenshots):
    page = browser.new_page()
    page.goto(f"{site_url}/search.html?q=max_pool")
    hrefs = page.wait_until(
        # the summary is filled in once the last result is shown (they appear one by one)
        "document.querySelector('#search-results .search-summary')?.textContent &&"
        " [...document.querySelectorAll('#search-results li a')].map(a => a.href)"
    )
    page.screenshot(screenshots / "search_max_pool.png")
    assert any(h.split("?")[0].endswith("catalogue/layer/max_pool.html") for h in hrefs), hrefs
    assert page.errors == []


def test_the_browser_reports_console_errors_and_blocks_the_internet(browser):
    """The checks above can fail: an error logged, an uncaught exception and a script from
    another host (which resolves to nothing, so no request leaves the machine) are caught."""
    page = browser.new_page()
    html = (
        "<script>console.error('logged')</script><script>undefinedFunction()</script>"
        "<script src='https://cdn.jsdelivr.net/npm/mathjax@4/tex-mml-chtml.js'></script>"
    )
    page.goto("data:text/html," + html)
    page.browser.pump(0.5)
    text = "\n".join(page.errors)
    assert "console: logged" in text
    assert "undefinedFunction is not defined" in text
    assert "ERR_NAME_NOT_RESOLVED" in text, text
