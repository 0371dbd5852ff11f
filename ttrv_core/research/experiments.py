"""Experiment runner: a grid of TTRV settings over seeds on labelled image sets,
written as results tables (CSV/JSON/Markdown) and plotly figures.

    python -m ttrv_core.research.experiments                     # both multiple-choice demos, seeds 0 1 2
    python -m ttrv_core.research.experiments --demos open        # the open-answer demo model
    python -m ttrv_core.research.experiments --quick --seeds 0   # a tiny grid (seconds): smoke test
    python -m ttrv_core.research.experiments --groups reward lr --out runs/exp
    python -m ttrv_core.research.experiments --images DIR --task choice --model M   # your own labelled set

Each demo (ttrv_core/demos.py: a bundled model, its example set and its settings)
is one grid, written to OUT/<demo>/; OUT/summary.md puts their headline rows
side by side. Default: `format` (the model whose reply format is half learned)
and `clean` (its control, which replies cleanly).

Groups (each a list of settings; every setting runs once per seed):
    reward   the defaults with each reward: majority (TTRL), frequency, ttrv (paper,
             alpha 0.75), ttrv_marginal (ours). Also gives the base model's greedy,
             single@T and maj@N (the before-evaluation).
    lr       learning-rate sweep (LR_FACTORS x the grid's lr), reward ttrv, collapse guard
             off: where collapse starts
    guard    the collapse guard on vs off where collapse is induced (adapt on all items,
             and 10x / 30x the lr); the guard-off twins of the high-lr rows are in `lr`
    single   single-example mode (4 copies of one image) on SINGLE_IMAGES chosen images
    shift    test-time corruptions (corruptions.py): base vs after TTRV, per corruption
    epochs   (only when named) 2, 3, 4 epochs, guard off: with `lr`, how the demos'
             settings were chosen on the validation split (docs/RESULTS.md)

Budget. The before-evaluation (greedy + N samples on every item) is most of a
run's time. With a fresh LoRA adapter (B = 0) it is the base model, so it is
measured once per (image set, seed) and reused where it cannot change the run:
engine.adapt uses it only for the collapse guard's baseline, so it is skipped when
the guard is off or in single-example mode (the guard needs MIN_ITEMS distinct
items). Where it is measured again, it is compared with the cached one
(`before_check` in results.json: the largest difference of any eval metric).

Outputs in OUT/<demo>/ (written by report.py): runs.csv (one row per run), table.csv
and table.md (mean and sample std over the runs of each setting), results.json
(both, per-step metrics, checks, timing), figures/*.html and, where plotly's
image export works (kaleido + a Chrome), figures/*.png.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Sequence

import torch

from ttrv_core import inputs
from ttrv_core.config import TTRVConfig
from ttrv_core.demos import DEMOS, by_key
from ttrv_core.inputs.dataset import Item
from ttrv_core.research.grid import DEFAULT_DEMOS, EXTRA_GROUPS, GROUPS, QUICK, QUICK_ITEMS, ROOT, grid, run_grid
from ttrv_core.research.report import load_outcomes, markdown, summary_markdown, write_outputs
from ttrv_core.tasks.prompts import TASKS

# --------------------------------------------------------------------------- CLI

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ttrv_core.research.experiments", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help=f"tiny grid: {QUICK_ITEMS} items, {QUICK}")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", type=Path, default=Path("runs/experiments"))
    ap.add_argument("--demos", nargs="+", choices=[d.key for d in DEMOS], default=list(DEFAULT_DEMOS),
                    help="bundled demos (model + example set + settings, ttrv_core/demos.py), each its own grid "
                         "in OUT/<demo>/ (default: %(default)s)")
    ap.add_argument("--groups", nargs="+", choices=GROUPS + EXTRA_GROUPS, default=list(GROUPS),
                    help="(default: %(default)s; 'epochs' runs only when named)")
    ap.add_argument("--set", nargs="+", default=[], metavar="FIELD=VALUE",
                    help="config fields for every run of the grid, over the demo's settings (e.g. lr=1e-3)")
    ap.add_argument("--images", type=Path, help="your own labelled image folder or .zip instead of the demos "
                                                "(OUT/custom/)")
    ap.add_argument("--questions", type=Path, help="its questions file with answers (default: IMAGES/questions.csv, "
                                                   "else the only .csv / .jsonl among the images)")
    ap.add_argument("--task", choices=TASKS, default="open", help="its task format (default: open)")
    ap.add_argument("--model", default=TTRVConfig.model, help="the model for --images (default: the demo model)")
    ap.add_argument("--no-png", action="store_true", help="figures as HTML only")
    ap.add_argument("--report-only", action="store_true", help="rebuild tables and figures from OUT/*/runs.jsonl")
    a = ap.parse_args(argv)
    from ttrv_core.cli import quiet
    quiet()
    if a.images:
        targets = [("custom", a.images, a.questions, a.task, {"model": a.model})]
    else:
        targets = [(d.key, d.example_dir, d.example_dir / "questions.csv", d.task, {"model": d.model, **d.settings})
                   for d in map(by_key, a.demos)]
    try:
        extra = _settings(a.set)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    targets = [(name, images, questions, task, {**base, **extra}) for name, images, questions, task, base in targets]
    command = "python -m ttrv_core.research.experiments " + " ".join(argv if argv is not None else sys.argv[1:])
    tables = {}
    for name, images, questions, task, base in targets:
        # the one data path of the CLI and the app: a folder in place, a .zip unpacked into OUT/<name>/input,
        # the questions file given or the one among the images; the same problems reported
        ds = inputs.load(inputs.collect(images, a.out / name), questions_file=questions, task=task).dataset
        for problem in ds.problems:
            print(f"warning: {problem}", file=sys.stderr)
        items = ds.items[:QUICK_ITEMS] if a.quick else ds.items
        if not items or any(it.reference is None for it in items):
            print(f"error: the experiments need labeled items (an answer for every image in {images})",
                  file=sys.stderr)
            return 2
        base = {**base, **QUICK} if a.quick else base
        print(f"== {name}: {base['model']} on {images} ({task})", flush=True)
        tables[name] = _grid_outputs(a, name, items, base, command)
    summary = summary_markdown(tables)
    (a.out / "summary.md").write_text(summary)
    print("\n" + summary)
    return 0


def _grid_outputs(a, name: str, items: Sequence[Item], base: dict, command: str) -> list[dict]:
    """Run (or reload, --report-only) one grid into OUT/name/ and write its report; returns its table."""
    out = a.out / name
    out.mkdir(parents=True, exist_ok=True)
    code, load_start = _git_state(), list(_loadavg())   # as the grid starts: files may change while it runs
    t0 = time.time()
    if a.report_only:
        outcomes = load_outcomes(out / "runs.jsonl")
    else:
        settings = grid(items, a.groups, a.quick, base.get("lr", TTRVConfig.lr))
        print(f"{len(settings)} settings x {len(a.seeds)} seeds = {len(settings) * len(a.seeds)} runs on "
              f"{len(items)} items -> {out}", flush=True)
        outcomes = run_grid(settings, a.seeds, items, base, out, log=lambda s: print(s, flush=True))
    wall = time.time() - t0
    meta = {"command": command, "demo": name, "seeds": a.seeds, "items": len(items), "quick": a.quick,
            "config_base": TTRVConfig(**base).to_dict(), "wall_seconds": None if a.report_only else round(wall, 1),
            "runs_seconds_sum": round(sum(o.row["seconds"] for o in outcomes), 1),
            "code": code,
            "machine": {"python": platform.python_version(), "torch": torch.__version__,
                        "cpus": torch.get_num_threads(), "platform": platform.platform(),
                        "loadavg_start": load_start, "loadavg_end": list(_loadavg())}}
    if a.report_only and (out / "results.json").is_file():   # keep what describes the grid's own run
        old = json.loads((out / "results.json").read_text())
        meta.update({k: old[k] for k in ("command", "seeds", "wall_seconds", "code", "machine") if k in old})
    res = write_outputs(out, outcomes, meta, png=not a.no_png)
    checks = res["checks"]
    print("\n" + markdown(res["table"]))
    for d in res["ttrv_vs_frequency"]:
        print(f"ttrv vs frequency, seed {d['seed']}: advantages over each item's N votes differ by at most "
              f"{d['advantage_gap']:.1e}; {d['steps_same_votes']}/{d['steps']} steps sampled the same votes; "
              f"policy loss differs by {d['step1_loss_pg_diff']:.1e} at step 1, at most {d['max_loss_pg_diff']:.1e}; "
              f"after greedy differs by {d['d_after_greedy_acc']:+.1f} points")
    print(f"before-eval re-measured {checks['before_evals_measured_again']} times, largest difference from the "
          f"cached one {checks['before_check_max_abs_diff']:.2g}")
    print(f"figures: {res['png']}\n{len(outcomes)} runs" + ("" if a.report_only else f" in {wall / 60:.1f} min")
          + f"; written to {out}")
    return res["table"]


def _settings(pairs: Sequence[str]) -> dict:
    """--set FIELD=VALUE pairs as config fields, each VALUE read as its field's type.

    >>> _settings(["lr=1e-3", "epochs=3", "reward=frequency"])
    {'lr': 0.001, 'epochs': 3, 'reward': 'frequency'}
    """
    from dataclasses import fields
    types = {f.name: f.type for f in fields(TTRVConfig)}
    out = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        if name not in types or not value:
            raise ValueError(f"--set {pair}: expected FIELD=VALUE with a TTRVConfig field "
                             f"({', '.join(types)})")
        kind = {"int": int, "float": float, "bool": lambda v: v.lower() in ("1", "true", "yes")}.get(types[name], str)
        out[name] = kind(value)
    return out


def _git_state() -> str:
    """HEAD and whether tracked files differ from it (numbers depend on the code that made them)."""
    import subprocess
    try:
        git = ["git", "-C", str(ROOT)]
        head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True).stdout.split("\n")
        changed = [line[3:] for line in dirty if line.strip()]
        return head + (f" + uncommitted edits to {', '.join(changed)}" if changed else "")
    except OSError:
        return "unknown"


def _loadavg() -> tuple[float, ...]:
    try:
        import os
        return os.getloadavg()
    except OSError:
        return ()


if __name__ == "__main__":
    sys.exit(main())
