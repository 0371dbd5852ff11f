"""Seconds from the Run handler's start to the first votes (LiveRun.first_votes_s) inside the app's own
process, without a browser: what the server adds to a Run, apart from the page's round trip.

    python bench/bench_first_votes.py [--out FILE]
    python bench/bench_first_votes.py --model /tmp/ttrv_bench_3b_448 --images DIR --steps 1   # a GPU session

The default demo and its settings, or --model (a folder: the menu's "Other") on --images (a folder
with its questions.csv, uploaded as "My images"; the demo's settings, open answers): run 1 loads the
model and evaluates (to the end, --steps steps, so that its before-evaluation is complete); run 2
changes only the learning rate (the model kept, the before-evaluation reused: app.gpu_job); runs 3
and 4 change the eval votes (the model kept, evaluated again; run 3 is stopped during that
evaluation, so run 4 evaluates again too). Runs 2-4 are stopped at their first votes. One JSON line
per run.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path)
    p.add_argument("--model", help="a model folder (default: the app's default demo)")
    p.add_argument("--images", type=Path, help="a folder of images with its questions.csv (with --model)")
    p.add_argument("--steps", type=int, default=0, help="run 1's steps (0: the settings' own)")
    a = p.parse_args()
    sys.path.insert(0, str(HERE))
    import torch

    import app
    from ttrv_core import form, menu
    from ttrv_core.form import EXAMPLE_SET, MY_IMAGES
    from ttrv_core.live import FIRST
    base = dict(zip(form.SETTINGS, form.values(app.DEFAULTS))) | ({"max_steps": a.steps} if a.steps else {})
    if a.model:
        files = [str(f) for f in sorted(a.images.iterdir())] if a.images else []
        where = (MY_IMAGES, None, files, "open", menu.OTHER, a.model)
    else:
        where = (EXAMPLE_SET, app.DEMO.examples, [], app.DEMO.task, menu.default_model(), "")
    source, example, files, task, model, custom = where
    sess = None
    for run, over, stop_early in ((1, {}, False), (2, {"lr": 5e-3}, True), (3, {"lr": 5e-3, "eval_votes": 8}, True),
                                  (4, {"lr": 5e-3, "eval_votes": 8}, True)):
        t0 = time.perf_counter()
        live = None
        for out in app.on_run(sess, source, example, files, [], None, None, task, "", model, custom, False, None,
                              FIRST, **(base | over)):
            sess = out[0]
            live = sess.running or live
            if stop_early and live is not None and live.first_votes_s is not None and len(live.stops) < 3:
                live.stops.extend(["bench"] * 3)   # ends the run where it is (engine.adapt's stop rules)
        before = live.evals.get("before")
        row = {"what": "first_votes_in_process", "model": a.model or app.DEMO.model, "run": run, "changed": over, "first_votes_s": round(live.first_votes_s, 3),
               "handler_s": round(time.perf_counter() - t0, 2), "reused_before": bool(before and before.reused),
               "status": live.outcome()[0].splitlines()[0] if live.end or live.error else live.status()[0][:80],
               "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
               "cpus": os.cpu_count(), "load_1min": round(os.getloadavg()[0], 2)}
        line = json.dumps(row)
        print(line, flush=True)
        if a.out:
            with open(a.out, "a") as f:
                f.write(line + "\n")


if __name__ == "__main__":
    main()
