"""The dashboard in a real browser: Debian's headless chromium driven through chromedriver.

One `publiek-coordinator serve` and one browser session for the module. The catalogue loads,
a release page renders charts with real size, a download clicked in the browser holds exactly
the store's numbers, the pages work with JavaScript off, the console stays clean and no request
goes anywhere but the server; the report from `export --html` opens with the network disabled
and shows its charts. Screenshots go to test-artifacts/dashboard/.

Chromium is not optional here: `make test` installs it (Debian packages chromium and
chromium-driver); without it these tests fail and say how to get it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from coordinator.store import ReleaseStore, StoredRelease
from tests.dashboard_support import REPO, Served, fill_store, serve, stop

ARTIFACTS = REPO / "test-artifacts" / "dashboard"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--window-size=1280,1000",
)


def _browser_binaries() -> tuple[str, str]:
    chromium = shutil.which("chromium")
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        pytest.fail(
            "the dashboard's browser tests need Debian's chromium and chromedriver, and they are"
            f" missing (chromium: {chromium}, chromedriver: {driver}). `make test` installs them"
            " as root; otherwise: apt-get install chromium chromium-driver",
            pytrace=False,
        )
    return chromium, driver


@pytest.fixture(scope="module")
def downloads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def browser(downloads: Path) -> Iterator[webdriver.Chrome]:
    chromium, driver = _browser_binaries()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in FLAGS:
        options.add_argument(flag)
    # The console (errors) and the network log (every request the page makes).
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    chrome = webdriver.Chrome(options=options, service=Service(driver))
    chrome.execute_cdp_cmd(
        "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
    )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        yield chrome
    finally:
        chrome.quit()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, list[StoredRelease]]]:
    folder = tmp_path_factory.mktemp("dashboard-browser")
    releases = fill_store(folder / "releases.sqlite")
    served = serve(folder / "releases.sqlite")
    yield served, releases
    code, err = stop(served)
    assert code == 0, err


def console_errors(chrome: webdriver.Chrome) -> list[dict[str, Any]]:
    """Console messages of level error since the last call (includes failed loads)."""
    log = chrome.get_log("browser")  # type: ignore[no-untyped-call]
    return [e for e in log if e["level"] == "SEVERE"]


def requested(chrome: webdriver.Chrome) -> list[str]:
    """URLs the browser requested since the last call, from the DevTools network log."""
    urls = []
    for entry in chrome.get_log("performance"):  # type: ignore[no-untyped-call]
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def shot(chrome: webdriver.Chrome, name: str) -> Path:
    path = ARTIFACTS / f"{name}.png"
    chrome.save_screenshot(str(path))
    assert path.stat().st_size > 10_000  # a rendered page, not a blank image
    return path


def open_page(chrome: webdriver.Chrome, url: str) -> None:
    console_errors(chrome)  # start from an empty log
    requested(chrome)
    chrome.get(url)


def test_the_catalogue_loads(browser: webdriver.Chrome, world) -> None:
    served, releases = world
    open_page(browser, served.url)
    assert browser.title == "Releases · publiek"
    rows = browser.find_elements(By.CSS_SELECTOR, "table.catalogue tbody tr")
    assert [r.find_element(By.TAG_NAME, "a").text for r in rows] == [
        r.ref for r in reversed(releases)
    ]
    shot(browser, "catalogue")
    assert console_errors(browser) == []
    urls = requested(browser)
    assert served.url in urls and all(u.startswith((served.url, "data:")) for u in urls), urls
    # A person gets to a release by clicking.
    rows[0].find_element(By.TAG_NAME, "a").click()
    assert browser.current_url == f"{served.url}releases/{releases[-1].release_id}"


def test_a_release_page_renders_non_empty_charts(browser: webdriver.Chrome, world) -> None:
    served, releases = world
    stored = releases[-1]
    doc = stored.document()
    open_page(browser, f"{served.url}releases/{stored.ref}")
    assert browser.current_url == f"{served.url}releases/{stored.release_id}"
    assert browser.find_element(By.TAG_NAME, "h1").text == stored.title
    shot(browser, "release-top")
    sections = browser.find_elements(By.CSS_SELECTOR, "section.table")
    assert len(sections) == len(doc["tables"])
    for section, table in zip(sections, doc["tables"], strict=True):
        charts = section.find_elements(By.CSS_SELECTOR, "svg.chart")
        assert charts, table["analysis_id"]
        for chart in charts:
            assert chart.size["width"] > 100 and chart.size["height"] > 40
        # Bars are laid out by the browser with real width where an estimate is not small.
        visible = [c for c in table["cells"] if not c["suppressed"]]
        widths = browser.execute_script(
            "return Array.from(arguments[0].querySelectorAll('rect.bar'))"
            ".map(r => r.getBoundingClientRect().width)",
            section,
        )
        assert len(widths) == len(visible)
        assert max(widths, default=0) > 50, table["analysis_id"]
    for aid in (
        "s1_tickets_discipline_quarter",
        "s1_tickets_region",
        "s1_tickets_region_discipline",
    ):
        browser.execute_script("document.getElementById(arguments[0]).scrollIntoView()", f"t-{aid}")
        shot(browser, f"release-{aid}")
    assert console_errors(browser) == []
    urls = requested(browser)
    assert f"{served.url}static/dashboard.css" in urls  # the log sees the page's requests
    assert all(u.startswith((served.url, "data:")) for u in urls), urls


def _downloaded(folder: Path, name: str, timeout_s: float = 20) -> bytes:
    path = folder / name
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        partial = list(folder.glob("*.crdownload"))
        if path.exists() and not partial:
            return path.read_bytes()
        time.sleep(0.1)
    raise AssertionError(f"{name} was not downloaded into {folder}: {list(folder.iterdir())}")


def test_a_download_holds_exactly_the_numbers_in_the_store(
    browser: webdriver.Chrome, downloads: Path, world, tmp_path: Path
) -> None:
    served, releases = world
    stored = releases[-1]
    with ReleaseStore(served.store, create=False) as store:
        store.export(stored.release_id, "csv", tmp_path / "csv")
        store.export(stored.release_id, "parquet", tmp_path / "parquet")
        store.export(stored.release_id, "json", tmp_path / "release.json")
    open_page(browser, f"{served.url}releases/{stored.release_id}")
    folder = downloads
    aid = "s1_tickets_region"
    section = browser.find_element(By.ID, f"t-{aid}")
    for kind in ("csv", "parquet"):
        link = section.find_element(By.CSS_SELECTOR, f"a.download.{kind}")
        browser.execute_script("arguments[0].scrollIntoView()", link)
        link.click()
        got = _downloaded(folder, f"{aid}.{kind}")
        assert got == (tmp_path / kind / f"{aid}.{kind}").read_bytes()
    browser.find_element(By.CSS_SELECTOR, "section.downloads a.download").click()
    name = f"{stored.plan_id}-{stored.version}.release.json"
    assert _downloaded(folder, name) == (tmp_path / "release.json").read_bytes()
    # And the CSV is the very table the page shows.
    csv_lines = (tmp_path / "csv" / f"{aid}.csv").read_text().splitlines()[1:]
    rows = section.find_elements(By.CSS_SELECTOR, "table.cells tbody tr")
    assert len(rows) == len(csv_lines)
    assert console_errors(browser) == []


def test_pages_work_without_javascript(browser: webdriver.Chrome, world) -> None:
    served, releases = world
    browser.execute_cdp_cmd("Emulation.setScriptExecutionDisabled", {"value": True})
    try:
        for path in ("", f"releases/{releases[0].release_id}", "methodology"):
            open_page(browser, served.url + path)
            assert browser.find_elements(By.TAG_NAME, "script") == []
            assert browser.find_element(By.TAG_NAME, "main").is_displayed()
        open_page(browser, f"{served.url}releases/{releases[-1].release_id}")
        # Small tables are open; a large one opens with a click, no script needed.
        assert browser.find_element(
            By.CSS_SELECTOR, "#t-s1_tickets_region table.cells"
        ).is_displayed()
        details = browser.find_element(
            By.CSS_SELECTOR, "#t-s1_tickets_region_discipline details.data"
        )
        table = details.find_element(By.CSS_SELECTOR, "table.cells")
        assert not table.is_displayed()
        details.find_element(By.TAG_NAME, "summary").click()
        assert table.is_displayed()
        assert len(table.find_elements(By.CSS_SELECTOR, "tbody tr")) == 315
        assert console_errors(browser) == []
    finally:
        browser.execute_cdp_cmd("Emulation.setScriptExecutionDisabled", {"value": False})


def test_the_methodology_page(browser: webdriver.Chrome, world) -> None:
    served, _ = world
    open_page(browser, served.url)
    browser.find_element(By.LINK_TEXT, "How to read these numbers").click()
    assert browser.current_url == f"{served.url}methodology"
    headings = [h.text for h in browser.find_elements(By.TAG_NAME, "h3")]
    for expected in (
        "What differential privacy means here",
        "How to read an interval",
        "Why small cells are suppressed",
    ):
        assert expected in headings
    shot(browser, "methodology")
    assert console_errors(browser) == []


def test_the_report_opens_offline_and_shows_its_charts(
    browser: webdriver.Chrome, downloads: Path, world, tmp_path: Path
) -> None:
    served, releases = world
    stored = releases[-1]
    report = tmp_path / "report.html"
    exported = subprocess.run(
        [sys.executable, "-m", "coordinator", "export", stored.release_id,
         "--store", str(served.store), "--html", str(report)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    browser.execute_cdp_cmd("Network.enable", {})
    browser.execute_cdp_cmd(
        "Network.emulateNetworkConditions",
        {"offline": True, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1},
    )
    try:
        # The network really is off: the server that is running cannot be reached.
        with pytest.raises(WebDriverException, match="ERR_INTERNET_DISCONNECTED"):
            open_page(browser, served.url)
        open_page(browser, report.as_uri())
        assert browser.find_element(By.TAG_NAME, "h1").text == stored.title
        charts = browser.find_elements(By.CSS_SELECTOR, "svg.chart")
        tables = stored.document()["tables"]
        assert len(browser.find_elements(By.CSS_SELECTOR, "section.table")) == len(tables)
        assert len(charts) >= len(tables)
        widths = browser.execute_script(
            "return Array.from(document.querySelectorAll('rect.bar'))"
            ".map(r => r.getBoundingClientRect().width)"
        )
        assert len(widths) == sum(1 for t in tables for c in t["cells"] if not c["suppressed"])
        assert max(widths) > 50
        # The stylesheet inside the file applied (the header is dark, not the default white).
        header = browser.find_element(By.CSS_SELECTOR, "header.site")
        assert header.value_of_css_property("background-color") == "rgba(31, 59, 92, 1)"
        shot(browser, "report-offline-top")
        browser.execute_script("document.getElementById('t-s1_tickets_region').scrollIntoView()")
        shot(browser, "report-offline-region")
        # Its downloads are inside it: a table's CSV comes out of the file, offline.
        aid = "s4_bookers_distance"
        link = browser.find_element(By.CSS_SELECTOR, f"#t-{aid} a.download.csv")
        browser.execute_script("arguments[0].scrollIntoView()", link)
        link.click()
        with ReleaseStore(served.store, create=False) as store:
            store.export(stored.release_id, "csv", tmp_path / "csv")
        assert (
            _downloaded(downloads, f"{aid}.csv") == (tmp_path / "csv" / f"{aid}.csv").read_bytes()
        )
        assert console_errors(browser) == []
        urls = requested(browser)
        assert report.as_uri() in urls  # the log sees the page's requests
        assert [u for u in urls if not u.startswith(("file:", "data:"))] == []
    finally:
        browser.execute_cdp_cmd(
            "Network.emulateNetworkConditions",
            {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1},
        )
