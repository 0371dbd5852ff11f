"""A crowd on one app: N visitors press Run at once, as on a busy Space.

    python bench/bench_crowd.py --clients 4 --quick     # ~1 min on a 2-core CPU
    python bench/bench_crowd.py --clients 8             # each visitor 12 images at the default demo's settings

Starts `python app.py` on a free local port and sends N runs at once through gradio_client, each
visitor its own session, its own uploaded digits (named after it) and its own question. Checks:
- every visitor got its own complete results: a run that ended "Done", results.csv listing exactly its
  own images, a run log (events.jsonl, with its times and votes) no one else got (distinct_runs);
- no request failed (errors);
- the place in line each visitor was first told matches what happened: told k-th, exactly k - 1 runs
  started before its own and were still going when it was told (position_mismatches).
--quick: 4 images per visitor, 2 steps of 8 votes; otherwise 12 images at the default demo's settings.
The last line is one JSON object: clients, completed, errors, distinct_runs, position_mismatches,
p95_wait_s (seconds from Run to the run starting), runs_s (each run's seconds, first to last), estimates (the
visitors told a wait in seconds: it is known once a run has measured its pace), estimate_off_median_s (the
median of |first wait told in seconds - the wait from then on|), wall_s.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ttrv_core import demos  # noqa: E402
from ttrv_core.config import TTRVConfig  # noqa: E402

DIGITS = ROOT / "assets" / "examples" / "digits"
QUICK = dict(n_votes=8, n_train=4, max_steps=2, eval_votes=4, prompts_per_step=4)
IN_LINE = re.compile(r"You are (\d+)\w\w in line")
ABOUT = re.compile(r"in line, about (?:(\d+) min)? ?(?:(\d+) s)?")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(port: int, log: Path) -> subprocess.Popen:
    env = os.environ | {"GRADIO_SERVER_PORT": str(port), "GRADIO_SERVER_NAME": "127.0.0.1",
                        "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=log.open("w"),
                            stderr=subprocess.STDOUT)
    for _ in range(240):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1)
            return proc
        except OSError:
            if proc.poll() is not None:
                raise SystemExit(f"the app exited (log: {log})")
            time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"the app did not answer in 120 s (log: {log})")


def visitor_files(work: Path, who: int, n: int, rows: list[dict]) -> list[Path]:
    """n digits renamed after the visitor, with its own question and the answers (for evaluation)."""
    d = work / f"visitor{who}"
    d.mkdir(parents=True)
    mine = rows[who * n:(who + 1) * n]
    for r in mine:
        shutil.copy(DIGITS / r["image"], d / f"v{who}_{r['image']}")
    with open(d / "questions.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "question", "answer"])
        w.writerows([f"v{who}_{r['image']}", f"Visitor {who}: which digit is this?", r["answer"]] for r in mine)
    return sorted(d.iterdir())


def visit(url: str, who: int, files: list[Path], settings: dict, go: threading.Barrier, out: dict) -> None:
    """One visitor: press Run with the others, watch the status, keep what came back."""
    from gradio_client import Client, handle_file
    rec = out[who] = {"told": None, "told_s": None, "start_s": None, "end_s": None, "error": None, "estimate_s": None}
    try:
        client = Client(url, verbose=False)
        args = dict(source="My images", example=None, uploads=[handle_file(str(p)) for p in files], folder=None,
                    question="", qfile=None, task="open", options="", model=demos.DEFAULT.model, custom="",
                    single=False, single_item=None, hist_choice="the first image step 1 trains on") | settings
        go.wait()
        rec["submit_s"] = time.time()
        job = client.submit(**args, api_name="/run")
        last = None
        for last in job:   # each output as the server streams it
            now, status = time.time(), last[0]
            m = IN_LINE.search(status)
            if m and rec["told"] is None:
                rec["told"], rec["told_s"] = int(m.group(1)), now
            est = ABOUT.search(status) if m else None
            if est and (est.group(1) or est.group(2)) and rec["estimate_s"] is None:  # the first wait in seconds
                rec["estimate_s"], rec["estimated_s"] = int(est.group(1) or 0) * 60 + int(est.group(2) or 0), now
            if not m and rec["start_s"] is None:
                rec["start_s"] = now
            if 'data-kind="done"' in status or 'data-kind="error"' in status:
                rec["end_s"] = rec["end_s"] or now   # as streamed, before the downloads are fetched
        last = job.result()
        rec["end_s"] = rec["end_s"] or time.time()
        rec["status"], files_out = last[0], last[6]
        files_out = files_out.get("value", files_out) if isinstance(files_out, dict) else files_out  # an update
        rec["files"] = [f if isinstance(f, str) else f.get("path", "") for f in (files_out or [])]
    except Exception as e:  # a failed request is counted, not raised: the others go on
        rec["error"] = f"{type(e).__name__}: {e}"


def check(who: int, rec: dict, files: list[Path]) -> tuple[bool, str | None]:
    """(complete with its own images, its run folder)."""
    if rec["error"] or 'data-kind="done"' not in rec.get("status", ""):
        return False, None
    csv_path = next((Path(f) for f in rec["files"] if Path(f).name == "results.csv"), None)
    if csv_path is None:
        return False, None
    with open(csv_path, newline="") as f:
        got = {r["item"] for r in csv.DictReader(f)}
    mine = {p.name for p in files if p.suffix == ".png"}
    log = next((Path(f) for f in rec["files"] if Path(f).name == "events.jsonl"), None)
    run = hashlib.sha256(log.read_bytes()).hexdigest()[:12] if log else None   # a run's own log: times, votes
    return got == mine, run


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--quick", action="store_true", help="4 images each, 2 short steps")
    ap.add_argument("--images", type=int, default=None, help="images per visitor (default 4 quick, 12 otherwise)")
    args = ap.parse_args(argv)
    n = args.images or (4 if args.quick else 12)
    with open(DIGITS / "questions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    if args.clients * n > len(rows):
        raise SystemExit(f"{args.clients} visitors x {n} images is more than the {len(rows)} digits")
    cfg = TTRVConfig().with_(**demos.DEFAULT.settings)
    settings = {k: getattr(cfg, k) for k in ("n_votes", "n_train", "max_steps", "eval_votes", "prompts_per_step")}
    settings |= QUICK if args.quick else {}
    work = Path(tempfile.mkdtemp(prefix="ttrv-crowd-"))
    port = free_port()
    proc = start_app(port, work / "app.log")
    t0 = time.time()
    try:
        files = {who: visitor_files(work, who, n, rows) for who in range(args.clients)}
        go, recs = threading.Barrier(args.clients), {}
        threads = [threading.Thread(target=visit, args=(f"http://127.0.0.1:{port}/", who, files[who], settings, go,
                                                        recs)) for who in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    wall = time.time() - t0
    done = {who: check(who, r, files[who]) for who, r in recs.items()}
    mismatches = []
    for who, r in recs.items():
        if r["start_s"] is None:
            continue
        told_at = r["told_s"] or r["submit_s"]
        ahead = sum(1 for o, q in recs.items() if o != who and q["start_s"] and q["end_s"]
                    and q["start_s"] < r["start_s"] and q["end_s"] > told_at)
        if (r["told"] or 1) != ahead + 1:
            mismatches.append({"visitor": who, "told": r["told"] or 1, "ahead": ahead})
    waits = sorted(r["start_s"] - r["submit_s"] for r in recs.values() if r["start_s"])
    p95 = waits[min(len(waits) - 1, int(round(0.95 * (len(waits) - 1))))] if waits else None
    for who, r in sorted(recs.items()):
        print(f"visitor {who}: told {r['told'] or 'no wait'}, waited "
              f"{(r['start_s'] or 0) - r['submit_s']:.1f} s, own images {done[who][0]}, run {done[who][1]}"
              + (f", error {r['error']}" if r["error"] else ""))
    for m in mismatches:
        print(f"position mismatch: {m}")
    misses = sorted(abs(r["estimate_s"] - (r["start_s"] - r["estimated_s"])) for r in recs.values()
                    if r["estimate_s"] is not None and r["start_s"])
    runs_s = sorted(round(r["end_s"] - r["start_s"], 1) for r in recs.values() if r["start_s"] and r["end_s"])
    result = {"clients": args.clients, "completed": sum(ok for ok, _ in done.values()),
              "errors": sum(1 for r in recs.values() if r["error"]),
              "distinct_runs": len({run for ok, run in done.values() if ok and run}),
              "position_mismatches": len(mismatches), "p95_wait_s": p95 and round(p95, 1), "runs_s": runs_s,
              "estimates": len(misses), "estimate_off_median_s": round(misses[len(misses) // 2], 1) if misses else None,
              "wall_s": round(wall, 1), "quick": args.quick, "images_each": n}
    shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
