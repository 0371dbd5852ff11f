"""Seconds from a Run to its first votes (LiveRun.first_votes_s) inside one process, without a browser:
what the server adds to a Run, apart from the page's round trip.

    python bench/bench_first_votes.py [--out FILE]
    python bench/bench_first_votes.py --model /tmp/ttrv_bench_3b_448 --images assets/examples/digits --steps 1

The default demo and its settings, or --model (a folder: the menu's "Other") on --images (a folder
with its questions.csv; the default demo's settings, open answers): run 1 loads the model and
evaluates (to the end, --steps steps, so that its before-evaluation is complete); run 2 changes only
the learning rate (the model kept, the before-evaluation reused); runs 3 and 4 change the eval votes
(the model kept, evaluated again; run 3 is stopped during that evaluation, so run 4 evaluates again
too). Runs 2-4 are stopped at their first votes. One JSON line per run.

Where gradio is installed, through the app's Run handler (app.on_run: the form read, kept_runs.run on
the app's kept model); where it is not (a GPU box with only the wheels that travel), kept_runs.run
itself on a KeptBase of its own, the items read by the CLI's data path (`"path": "library"`).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
RUNS = ((1, {}, False), (2, {"lr": 5e-3}, True), (3, {"lr": 5e-3, "eval_votes": 8}, True),
        (4, {"lr": 5e-3, "eval_votes": 8}, True))


def through_app(a):
    """(changed settings, LiveRun) per run, through app.on_run."""
    import app
    from ttrv_core.app import form_fields, model_menu
    from ttrv_core.app.form_fields import EXAMPLE_SET, MY_IMAGES
    from ttrv_core.app.live_run import FIRST
    base = dict(zip(form_fields.SETTINGS, form_fields.values(app.DEFAULTS))) | ({"max_steps": a.steps} if a.steps else {})
    if a.model:
        files = [str(f) for f in sorted(a.images.iterdir())] if a.images else []
        source, example, task, model, custom = MY_IMAGES, None, "open", model_menu.OTHER, a.model
    else:
        files, source, example, task, model, custom = [], EXAMPLE_SET, app.DEMO.examples, app.DEMO.task, \
            model_menu.default_model(), ""
    sess = None
    for run, over, stop_early in RUNS:
        live = None
        for out in app.on_run(sess, source, example, files, [], None, None, task, "", model, custom, False, None,
                              FIRST, **(base | over)):
            sess = out[0]
            live = sess.running or live
            if stop_early and live is not None and live.first_votes_s is not None and len(live.stops) < 3:
                live.stops.extend(["bench"] * 3)   # ends the run where it is (engine.adapt's stop rules)
        yield run, over, live


def through_library(a):
    """(changed settings, LiveRun) per run, through kept_runs.run on a KeptBase of this script's."""
    from ttrv_core import inputs
    from ttrv_core.app import kept_runs
    from ttrv_core.app.live_run import LiveRun
    from ttrv_core.config import TTRVConfig
    from ttrv_core.demos import DEFAULT
    from ttrv_core.model import kept_base, loading
    folder = a.images or DEFAULT.example_dir
    task = "open" if a.model else DEFAULT.task
    ds = inputs.load(inputs.collect(folder, folder), None, folder / "questions.csv", task, ()).dataset
    cfg = TTRVConfig(model=a.model or DEFAULT.model, **DEFAULT.settings)
    cfg = cfg.with_(max_steps=a.steps) if a.steps else cfg
    loading.import_peft()   # as the app does at startup
    keep, tmp = kept_base.KeptBase(), Path(tempfile.mkdtemp(prefix="first_votes_"))
    for run, over, stop_early in RUNS:
        live = LiveRun(ds.items, tmp / f"run{run}")
        for ev in kept_runs.run(cfg.with_(**over), ds.items, None, live.run_dir, {}, ds.problems, lambda: len(live.stops),
                           keep):
            live.feed(ev)
            if stop_early and live.first_votes_s is not None and len(live.stops) < 3:
                live.stops.extend(["bench"] * 3)
        yield run, over, live


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path)
    p.add_argument("--model", help="a model folder (default: the app's default demo)")
    p.add_argument("--images", type=Path, help="a folder of images with its questions.csv (with --model)")
    p.add_argument("--steps", type=int, default=0, help="run 1's steps (0: the settings' own)")
    p.add_argument("--library", action="store_true", help="kept_runs.run without the app, even where gradio is installed")
    a = p.parse_args()
    sys.path.insert(0, str(HERE))
    import torch
    path = "library" if a.library or importlib.util.find_spec("gradio") is None else "app"
    t0 = time.perf_counter()
    for run, over, live in (through_library(a) if path == "library" else through_app(a)):
        before = live.evals.get("before")
        row = {"what": "first_votes_in_process", "path": path, "model": a.model or "the default demo", "run": run,
               "changed": over, "first_votes_s": round(live.first_votes_s, 3),
               "run_s": round(time.perf_counter() - t0, 2),
               "reused_before": bool(before and before.reused),
               "status": live.outcome()[0].splitlines()[0] if live.end or live.error else live.status()[0][:80],
               "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
               "cpus": os.cpu_count(), "load_1min": round(os.getloadavg()[0], 2)}
        line = json.dumps(row)
        print(line, flush=True)
        if a.out:
            with open(a.out, "a") as f:
                f.write(line + "\n")
        t0 = time.perf_counter()


if __name__ == "__main__":
    main()
