"""The app on a busy Space, in a real browser (Debian's Chromium, headless, Playwright):

- a second visitor who presses Run while another's run goes is told its place in line and the wait,
  then gets its own run (two pages, two sessions); Stop, or closing the tab, leaves the line;
- Stop and the status stay in sight while a run goes and the page scrolls, at 1,280 and 420 px;
- before Run: a gallery of the images; Enter in the question runs; Reset puts a changed setting back;
- after a run: the downloads hold one zip of all and have no remove buttons; changing a setting marks
  the results as stale; the session's runs are listed side by side; single-example mode suggests an image.

Screenshots at 1,280 and 420 px go to pytest's tmp dir, and with TTRV_UPDATE_SCREENSHOT=1 to docs/
(busy_first_*, busy_running_*, busy_results_*, busy_queued_*).
"""
from pathlib import Path

import pytest
from test_browser import CHROMIUM, DOCS, UPDATE, app_url, browser  # noqa: F401 (fixtures)

from ttrv_core.config import DEMO_MODEL

pytestmark = [
    pytest.mark.skipif(not CHROMIUM.is_file(), reason="no /usr/bin/chromium (apt-get install -y chromium)"),
    pytest.mark.skipif(not (Path(DEMO_MODEL) / "config.json").is_file(), reason="demo model not built"),
]
ENDED = '#status [data-kind="done"], #status [data-kind="stopped"], #status [data-kind="error"]'


def opened(browser, url, width, height=800):
    page = browser.new_page(viewport={"width": width, "height": height})
    page.goto(url)
    page.wait_for_selector("#data-info :text('240 image(s) ready')", timeout=60_000)
    return page


def shot(page, tmp_path, name, width):
    page.wait_for_timeout(300)
    page.screenshot(path=str(tmp_path / f"busy_{name}_{width}.png"))
    if UPDATE:
        page.screenshot(path=str(DOCS / f"busy_{name}_{width}.png"))


def in_sight(page, selector) -> bool:
    box = page.locator(selector).bounding_box()
    height = page.viewport_size["height"]
    return box is not None and box["y"] >= 0 and box["y"] + box["height"] <= height


@pytest.mark.parametrize("width", [1280, 420])
def test_a_second_visitor_is_told_its_place_in_line_and_stop_stays_in_sight(browser, app_url, tmp_path, width):
    import app
    app.KEPT.clear()   # the evaluation before training runs (not one kept from an earlier test's run)
    first, second = opened(browser, app_url, width), opened(browser, app_url, width)
    assert first.locator("#gallery img").count() > 0          # the images, before Run
    shot(first, tmp_path, "first", width)
    first.click("#run")
    first.wait_for_selector("#status :text('Evaluating the model before training')", timeout=60_000)
    assert in_sight(first, "#stop") and in_sight(first, "#status")
    shot(first, tmp_path, "running", width)
    first.mouse.wheel(0, 2500)                                # down to the results: the bar follows
    first.wait_for_timeout(500)
    assert in_sight(first, "#stop") and in_sight(first, "#status")

    second.click("#run")
    second.wait_for_selector("#status :text('You are 2nd in line')", timeout=30_000)
    said = second.locator("#status").inner_text()
    assert "Stop leaves the line" in said and in_sight(second, "#stop")
    shot(second, tmp_path, "queued", width)
    first.wait_for_selector(ENDED, timeout=240_000)
    second.wait_for_function("() => !document.getElementById('status').innerText.includes('in line')",
                             timeout=30_000)   # its turn came by itself
    second.wait_for_selector(ENDED, timeout=240_000)
    assert "Done" in second.locator("#status").inner_text()
    first.evaluate("window.scrollTo(0, document.getElementById('accuracy').getBoundingClientRect().top"
                   " + window.scrollY - 120)")
    shot(first, tmp_path, "results", width)
    for page in (first, second):
        page.close()


def test_stop_while_waiting_leaves_the_line(browser, app_url):
    first, second = opened(browser, app_url, 1280), opened(browser, app_url, 1280)
    first.click("#run")
    first.wait_for_selector("#status :text('Evaluating')", timeout=60_000)
    second.click("#run")
    second.wait_for_selector("#status :text('You are 2nd in line')", timeout=30_000)
    second.click("#stop")
    second.wait_for_selector("#status :text('You left the line')", timeout=10_000)
    first.click("#stop")
    first.wait_for_selector(ENDED, timeout=120_000)
    for page in (first, second):
        page.close()


def test_after_a_run_downloads_stale_results_and_the_runs_side_by_side(browser, app_url):
    page = opened(browser, app_url, 1280)
    page.get_by_text("Settings (the paper's defaults; a demo brings its own)").click()
    votes = page.get_by_label("Votes N per image", exact=True)
    was = votes.input_value()
    votes.fill("8")
    votes.press("Tab")
    page.click("#reset")
    page.wait_for_function(f"() => [...document.querySelectorAll('input[type=number]')].some(i => i.value == '{was}')")
    assert votes.input_value() == was
    page.get_by_label("Steps (0 = by epochs)", exact=True).fill("2")
    page.get_by_label("Steps (0 = by epochs)", exact=True).press("Tab")
    page.locator("#question textarea").fill("Which digit is this?")
    page.locator("#question textarea").press("Enter")           # Enter runs
    page.wait_for_selector(ENDED, timeout=240_000)
    assert "Done" in page.locator("#status").inner_text()
    names = page.locator("#downloads").inner_text().replace("\n.", ".")
    assert names.index("all_files.zip") < names.index("results.csv")
    assert page.locator("#downloads .label-clear-button").first.is_hidden()
    page.wait_for_selector("#history :text('run 1')", timeout=10_000)
    assert page.locator("#pick-hint").is_hidden()
    page.get_by_label("Single-example mode: adapt on one image, evaluate on all").check()
    page.wait_for_selector("#pick-hint :text('Suggested, without labels')", timeout=10_000)   # its image
    page.get_by_label("Single-example mode: adapt on one image, evaluate on all").uncheck()
    page.wait_for_function("() => document.getElementById('stale').innerText.trim() === ''", timeout=10_000)
    steps = page.get_by_label("Steps (0 = by epochs)", exact=True)
    steps.fill("3")
    steps.press("Tab")
    page.wait_for_selector("#stale :text('These results are from run 1')", timeout=30_000)
    assert "the settings have changed" in page.locator("#stale").inner_text()
    steps.fill("2")
    steps.press("Tab")
    page.wait_for_function("() => document.getElementById('stale').innerText.trim() === ''", timeout=30_000)
    page.close()


def test_a_visitor_who_closes_the_tab_while_waiting_leaves_the_line(browser, app_url):
    """Gradio closes the Run handler of a closed tab: its place goes, and the next visitor is not held
    behind it (told 2nd, not 3rd, and run once the first run ends)."""
    first, gone, third = (opened(browser, app_url, 1280) for _ in range(3))
    first.click("#run")
    first.wait_for_selector("#status :text('Evaluating')", timeout=60_000)
    gone.click("#run")
    gone.wait_for_selector("#status :text('You are 2nd in line')", timeout=30_000)
    gone.close()
    third.wait_for_timeout(2000)
    third.click("#run")
    third.wait_for_selector("#status :text('You are 2nd in line')", timeout=30_000)
    third.wait_for_selector(ENDED, timeout=240_000)
    assert "Done" in third.locator("#status").inner_text()
    first.close()
    third.close()
