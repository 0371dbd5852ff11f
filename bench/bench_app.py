"""The app in a browser, old code against new: seconds from the Run click to the first votes
(the histogram of the first image evaluated) and to the end, for a first and further runs.

    python bench/bench_app.py --old /tmp/main_wt --new /tmp/new_wt --runs 3 --out bench/raw/cpu_app_2026-11-27.jsonl

Each tree's app (`import app; app.demo.launch(...)`, as `python app.py`) runs in its own process
on a free port; one headless Chromium (/usr/bin/chromium, driven by Playwright as
tests/test_browser.py does) opens each page, waits until the default demo's 240 images are
ready, and presses Run, `--runs` times on the same page, the trees taking turns run by run.
Run 1 of a process is the one that loads the model (the old code loads it on every run; the new
keeps it, kept_base.KeptBase). First votes: the histogram shows bars under a title that says the
image is being evaluated, or was before training (plots.evaluating: "before (evaluating)", or
"before training" when the app reused the last run's before-evaluation, app.gpu_job; the last
run's final histogram says "after"); done: the status says the run ended. The page's
default demo and settings are used as they are (no field is touched).
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench_run import emit  # bench/ is on the path: these run as scripts

HERE = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
SERVER = ("import sys, app; app.demo.launch(server_name='127.0.0.1', server_port=int(sys.argv[1]), quiet=True, "
          "max_file_size=app.MAX_FILE_SIZE)")
FIRST_VOTES = ("() => { const t = document.querySelector('#histogram .gtitle');"
               " return !!(t && t.textContent.includes('before') && document.querySelector('#histogram .bars .point')); }")
KIND = "() => document.querySelector('#status [data-kind]')?.dataset.kind"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(root: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    log = tempfile.NamedTemporaryFile(prefix="bench_app_", suffix=".log", delete=False)
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(port)], cwd=root,
                            env=dict(os.environ, PYTHONPATH=str(root)), stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    for _ in range(600):
        if proc.poll() is not None:                   # it crashed: say why, do not wait for a port
            raise RuntimeError(f"the app in {root} exited: {Path(log.name).read_text()[-3000:]}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return proc, url
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"the app in {root} did not start (log: {log.name})")


def run_once(page) -> dict:
    """Press Run; the seconds to the first votes and to the end, and the status line."""
    page.wait_for_function("() => !document.querySelector('#run').disabled", timeout=60_000)
    t0 = time.time()
    page.click("#run")
    page.wait_for_function(f"() => ({KIND})() !== 'done'", timeout=60_000)      # the last run's end is gone
    page.wait_for_function(FIRST_VOTES, timeout=600_000, polling=50)
    first = time.time() - t0
    page.wait_for_function(f"() => ['done', 'stopped', 'error'].includes(({KIND})())", timeout=1_200_000,
                           polling=100)
    return {"first_votes_s": round(first, 2), "done_s": round(time.time() - t0, 2),
            "status": page.locator("#status").inner_text().splitlines()[0]}


def main() -> None:
    from playwright.sync_api import sync_playwright
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--old", type=Path, required=True)
    p.add_argument("--new", type=Path, default=HERE)
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--out", type=Path)
    a = p.parse_args()
    trees = {"old": a.old.resolve(), "new": a.new.resolve()}
    from bench_run import git_head
    tag = {tree: git_head(root) for tree, root in trees.items()}
    servers = {tree: serve(root) for tree, root in trees.items()}
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
            pages = {}
            for tree, (_, url) in servers.items():
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.goto(url)
                page.wait_for_selector("#data-info :text('240 image(s) ready')", timeout=120_000)
                pages[tree] = page
            for run in range(1, a.runs + 1):
                for tree in (("old", "new") if run % 2 else ("new", "old")):
                    row = {"what": "app_run", "tree": tree, "commit": tag[tree], "run": run, "cpus": os.cpu_count(),
                           "load_1min": round(os.getloadavg()[0], 2), **run_once(pages[tree])}
                    emit(row, a.out)
            browser.close()
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(timeout=30)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
