"""The app in a real browser: Debian's Chromium, headless, driven by Playwright.

Opens the app, sets a short run on the bundled example set, presses Run, waits
for the histogram and the comparison table, and saves a screenshot (pytest's
tmp dir; with TTRV_UPDATE_SCREENSHOT=1 also docs/screenshot.png for the README). Skipped, with the reason,
where /usr/bin/chromium or the playwright package is missing
(`apt-get install -y chromium`, `pip install playwright`; no `playwright install`).
"""
import os
import shutil
import socket
import time
from pathlib import Path

import pytest

from ttrv_core.config import DEMO_MODEL

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
SHORT = {"Votes N per image": 8, "Trained answers G (≤ N)": 4, "Steps (0 = by epochs)": 3,
         "Eval votes (0 = N)": 4}

pytestmark = [
    pytest.mark.skipif(not CHROMIUM.is_file(), reason="no /usr/bin/chromium (apt-get install -y chromium)"),
    pytest.mark.skipif(not (Path(DEMO_MODEL) / "config.json").is_file(), reason="demo model not built"),
]


@pytest.fixture(scope="module")
def app_url():
    import app
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _, url, _ = app.demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield url
    app.demo.close()


def test_run_on_the_example_set_in_chromium(app_url, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed (pip install playwright)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(app_url)
            page.wait_for_selector("text=240 image(s) ready", timeout=30_000)   # the example set is loaded
            assert page.locator("#model input").input_value().startswith("Demo")
            page.get_by_text("Settings (the paper's defaults)").click()
            for label, value in SHORT.items():
                page.get_by_label(label).fill(str(value))
            page.get_by_text("Settings (the paper's defaults)").click()    # fold it again, for the picture
            page.click("#run")
            t0 = time.time()
            page.wait_for_selector("#histogram .js-plotly-plot .bars .point", timeout=60_000)
            first_histogram_s = time.time() - t0
            page.wait_for_selector('#status [data-kind="done"]', timeout=180_000)
            page.wait_for_selector("#compare img", state="attached", timeout=30_000)

            assert page.locator("#compare img").count() >= 10                   # thumbnails (a virtual table)
            assert "Accuracy" in page.locator("#accuracy").inner_text()
            assert page.locator("#entropy .js-plotly-plot .scatterlayer .trace").count() >= 2
            downloads = page.locator("#downloads").inner_text()
            assert "results" in downloads and "adapter" in downloads
            print(f"first histogram {first_histogram_s:.1f} s after Run")
            page.wait_for_timeout(500)  # let plotly settle before the picture
            shot = tmp_path / "app.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
    (ROOT / "docs").mkdir(exist_ok=True)
    if os.environ.get("TTRV_UPDATE_SCREENSHOT"):  # refresh the README's picture on request only
        shutil.copy(shot, ROOT / "docs" / "screenshot.png")
