"""The dashboard as a person sees it: ``streamlit run`` on loopback, opened by headless Chromium (selenium).

Runs on the embedded PostgreSQL only (a browser session is the slow part; the queries are covered on both
servers by test_dashboard_app). Screenshots land in artifacts/screenshots/ for the CI run's artifacts.
"""

from __future__ import annotations

import csv
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from datetime import time as day_time
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from tests.fixtures.dashboard import HOSTILE_TITLE, SeededDashboard

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "artifacts" / "screenshots"
WAIT_S = 90


def _browser_paths() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        message = "needs Debian chromium and chromium-driver (make test installs them)"
        if os.environ.get("CI"):
            raise RuntimeError(message)
        pytest.skip(message)
    return chromium, driver


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serve_dashboard(database_url: str, tmp_path: Path) -> Iterator[str]:
    """Run ``streamlit run dashboard/app.py`` on a free loopback port against ``database_url``."""
    port = _free_port()
    env = {**os.environ, "DATABASE_URL": database_url}
    env.pop("FINSENT_DASHBOARD_DATABASE_URL", None)
    log = (tmp_path / "streamlit.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            str(ROOT / "dashboard" / "app.py"),
            "--server.address=127.0.0.1",
            f"--server.port={port}",
            "--server.headless=true",
            "--browser.gatherUsageStats=false",
            "--server.fileWatcherType=none",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + WAIT_S
        while True:
            try:
                if httpx.get(f"{base}/_stcore/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                output = (tmp_path / "streamlit.log").read_text()
                pytest.fail(f"streamlit did not come up on {base}: {output}")
            time.sleep(0.5)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


@pytest.fixture
def dashboard_url(seeded_dashboard: SeededDashboard, tmp_path: Path) -> Iterator[str]:
    """The dashboard against the seeded database."""
    with serve_dashboard(seeded_dashboard.url, tmp_path) as url:
        yield url


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    """Headless Chromium with its own profile and download folder (``browser.download_dir``)."""
    chromium, chromedriver = _browser_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
        f"--user-data-dir={tempfile.mkdtemp(prefix='chromium-', dir=tmp_path)}",
    ):
        options.add_argument(flag)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options.add_experimental_option(
        "prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False}
    )
    driver = webdriver.Chrome(options=options, service=Service(executable_path=chromedriver))
    driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    driver.download_dir = downloads  # type: ignore[attr-defined]
    try:
        yield driver
    finally:
        driver.quit()


def _finished_download(folder: Path, pattern: str) -> bool:
    """Return whether Chromium has finished writing a file matching ``pattern`` into ``folder``.

    The file can show up before its bytes do, so a finished download is one with content, no partial
    ``.crdownload`` beside it, and the same size on two looks 0.2 s apart.
    """
    files = list(folder.glob(pattern))
    if not files or any(folder.glob("*.crdownload")) or files[0].stat().st_size == 0:
        return False
    size = files[0].stat().st_size
    time.sleep(0.2)
    return files[0].stat().st_size == size


def open_page(driver: WebDriver, url: str, ready_text: str) -> None:
    """Load ``url`` and wait until ``ready_text`` is on the page and the script has finished running."""
    driver.get(url)
    wait = WebDriverWait(driver, WAIT_S)
    try:
        wait.until(lambda d: ready_text in d.find_element(By.TAG_NAME, "body").text)
        wait.until(lambda d: not d.find_elements(By.CSS_SELECTOR, '[data-testid="stStatusWidget"]'))
    except TimeoutException:
        shot = SCREENSHOTS / f"timeout-{url.rsplit('/', 1)[-1] or 'overview'}.png"
        driver.save_screenshot(str(shot))
        raise


def tables_scrolling_sideways(driver: WebDriver) -> list[tuple[int, int]]:
    """Return (content, visible) widths of each table whose columns are wider than the table itself.

    A dataframe is drawn on a canvas inside a scroller whose content is as wide as its columns.
    """
    script = """return [...document.querySelectorAll('[data-testid="stDataFrame"] .dvn-scroller')]
        .map(e => [e.scrollWidth, e.clientWidth]).filter(([content, visible]) => content > visible + 1);"""
    return [tuple(pair) for pair in driver.execute_script(script)]


def screenshot(driver: WebDriver, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


@pytest.mark.parametrize("pg_admin_url", ["embedded"], indirect=True)
def test_dashboard_pages_render_in_chromium_with_headlines_as_text(
    seeded_dashboard: SeededDashboard, dashboard_url: str, browser: WebDriver
) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    today = datetime.combine(datetime.now(UTC).date(), day_time(), UTC)
    with seeded_dashboard.engine.connect() as conn:
        articles_today = conn.execute(
            sa.text("SELECT count(*) FROM articles WHERE published_at >= :today"), {"today": today}
        ).scalar_one()
        firing = conn.execute(
            sa.text("SELECT count(*) FROM alert_state WHERE status = 'firing'")
        ).scalar_one()
        last_week = conn.execute(
            sa.text("SELECT count(*) FROM articles WHERE published_at >= :start"),
            {"start": today - timedelta(days=6)},
        ).scalar_one()

    # Overview: the metric row shows the database's numbers; three charts are drawn.
    open_page(browser, dashboard_url, "Firing alerts")
    WebDriverWait(browser, WAIT_S).until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, '[data-testid="stVegaLiteChart"]')) >= 3
    )
    values = [e.text for e in browser.find_elements(By.CSS_SELECTOR, '[data-testid="stMetricValue"]')]
    assert values[0] == f"{articles_today:,}" and values[2] == str(firing)
    assert "Sentiment index per topic" in browser.find_element(By.TAG_NAME, "body").text
    assert screenshot(browser, "overview").stat().st_size > 10_000

    # Alerts: the newest alert (the Nvidia storm) with its evidence; the hostile headline is text.
    open_page(browser, f"{dashboard_url}/alerts", "Top negative stories")
    body = browser.find_element(By.TAG_NAME, "body").text
    assert "ticker=NVDA" in body
    assert "<script>window.__finsent_xss=1</script> Nvidia <img" in body
    assert browser.execute_script("return window.__finsent_xss === undefined")
    assert not browser.find_elements(By.CSS_SELECTOR, 'img[src="x"]')
    assert not browser.find_elements(By.CSS_SELECTOR, 'a[href^="javascript"]')
    link = browser.find_element(By.PARTIAL_LINK_TEXT, "<script>window.__finsent_xss=1</script>")
    assert link.get_attribute("href") == "https://news.example.com/hostile/nvidia-halts"
    screenshot(browser, "alerts")

    # Explorer: the table is drawn and the CSV download carries the rows the query returns.
    open_page(browser, f"{dashboard_url}/explorer", "Download CSV")
    assert browser.find_elements(By.CSS_SELECTOR, '[data-testid="stDataFrame"]')
    screenshot(browser, "explorer")
    button = next(b for b in browser.find_elements(By.TAG_NAME, "button") if b.text == "Download CSV")
    button.click()
    downloads: Path = browser.download_dir  # type: ignore[attr-defined]
    WebDriverWait(browser, WAIT_S).until(lambda _: _finished_download(downloads, "finsent-stories-*.csv"))
    csv_path = next(downloads.glob("finsent-stories-*.csv"))
    rows = list(csv.DictReader(csv_path.open(encoding="utf-8")))
    assert len(rows) == min(last_week, 500)
    assert HOSTILE_TITLE in {r["title"] for r in rows}

    # Model: card/metrics tabs, score distribution and version history.
    open_page(browser, f"{dashboard_url}/model", "Version history")
    assert seeded_dashboard.plan.version in browser.find_element(By.TAG_NAME, "body").text
    screenshot(browser, "model")


@pytest.mark.parametrize("pg_admin_url", ["embedded"], indirect=True)
@pytest.mark.parametrize("width", [1366, 1920])
def test_every_page_fits_a_laptop_and_a_desktop_screen(
    seeded_dashboard: SeededDashboard, dashboard_url: str, browser: WebDriver, width: int
) -> None:
    """Each page at a common laptop and desktop width: drawn without a horizontal scrollbar, on the page
    or inside a table, with a screenshot per page and width in artifacts/screenshots/ for a person to
    look at."""
    browser.set_window_size(width, 1000)
    for path, ready in (
        ("", "Firing alerts"),
        ("/alerts", "Top negative stories"),
        ("/explorer", "Download CSV"),
        ("/model", "Version history"),
    ):
        open_page(browser, f"{dashboard_url}{path}", ready)
        page_width = browser.execute_script("return document.documentElement.scrollWidth")
        viewport = browser.execute_script("return document.documentElement.clientWidth")
        assert page_width <= viewport, f"{path or '/'} at {width} px scrolls sideways"
        assert not tables_scrolling_sideways(browser), (
            f"{path or '/'} at {width} px: a table scrolls sideways"
        )
        name = (path.strip("/") or "overview") + f"-{width}"
        assert screenshot(browser, name).stat().st_size > 10_000


def test_an_unreachable_database_is_one_line_on_the_page(browser: WebDriver, tmp_path: Path) -> None:
    """No traceback in the browser: one line naming the setting and the server, never the password."""
    with serve_dashboard("postgresql://nobody:s3cret-pw@127.0.0.1:1/x", tmp_path) as url:
        open_page(browser, url, "Cannot use the database at 127.0.0.1:1/x (DATABASE_URL)")
        body = browser.find_element(By.TAG_NAME, "body").text
    assert "Traceback" not in body and "s3cret" not in body
    assert not browser.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]')
