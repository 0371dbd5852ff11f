"""Experiment runner: a grid of TTRV settings over seeds on labelled image sets,
written as results tables (CSV/JSON/Markdown) and plotly figures.

    python -m ttrv_core.experiments                     # both multiple-choice demos, seeds 0 1 2
    python -m ttrv_core.experiments --demos open        # the first demo model (open answers)
    python -m ttrv_core.experiments --quick --seeds 0   # a tiny grid (seconds): smoke test
    python -m ttrv_core.experiments --groups reward lr --out runs/exp
    python -m ttrv_core.experiments --images DIR --task choice --model M   # your own labelled set

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
engine.run uses it only for the collapse guard's baseline, so it is skipped when
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
import math
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from .config import TTRVConfig
from .corruptions import CORRUPTIONS, corrupted_items
from .data import Item, load_dataset
from .demos import DEMOS, by_key
from .engine import run
from .events import EvalResult, RunEnd, RunStart, StepEvent
from .grpo import group_advantages
from .guard import concentration
from .models import Policy, load_policy, set_threads_for
from .prompts import TASKS
from .report import ACCS, LABEL_FREE, Outcome, load_outcomes, markdown, sci, summary_markdown, write_outputs
from .rewards import compute_rewards

ROOT = Path(__file__).resolve().parent.parent
GROUPS = ("reward", "lr", "guard", "single", "shift")
EXTRA_GROUPS = ("epochs",)
"""Groups run only when named (--groups epochs): the sweeps that chose a demo's settings."""
DEFAULT_DEMOS = ("format", "clean")
SINGLE_IMAGES = 10
EPOCHS = (2, 3, 4)
LR_FACTORS = (0.3, 1, 3, 10, 30)
"""The learning-rate sweep, as multiples of the grid's own lr; the guard runs at 10x and 30x."""
STEP_KEYS = ("acc/majority", "acc/single", "answers/entropy", "answers/majority_share", "reward/mean",
             "loss/total", "loss/pg", "guard/concentration", "answers/invalid")
QUICK = dict(n_votes=4, n_train=2, eval_votes=4, max_steps=2, prompts_per_step=4, train_items=8)
"""--quick: a handful of votes and two steps per run, on QUICK_ITEMS items."""
QUICK_ITEMS = 12


@dataclass(frozen=True)
class Setting:
    group: str
    name: str
    overrides: tuple[tuple[str, object], ...] = ()   # TTRVConfig fields
    single: str | None = None                         # item id: single-example mode
    corruption: str | None = None                     # corruptions.CORRUPTIONS key

    def config(self, seed: int, base: dict) -> TTRVConfig:
        return TTRVConfig(**{**base, **dict(self.overrides), "seed": seed})


def grid(items: Sequence[Item], groups: Sequence[str] = GROUPS, quick: bool = False,
         lr: float = TTRVConfig.lr) -> list[Setting]:
    """The settings of each group, in run order. `lr`: the grid's own learning rate (a demo's
    setting, or the default); the sweep and the guard's high-lr rows are multiples of it."""
    off = ("collapse_guard", False)
    lrs = [round(lr * k, 12) for k in ((1, 10) if quick else LR_FACTORS)]
    n_single = 1 if quick else SINGLE_IMAGES
    out = []
    if "reward" in groups:
        rewards = ("ttrv", "frequency") if quick else ("ttrv", "frequency", "majority", "ttrv_marginal")
        out += [Setting("reward", f"reward {r}", (("reward", r),)) for r in rewards]
    if "lr" in groups:
        out += [Setting("lr", f"lr {sci(x)}, guard off", (("lr", x), off)) for x in lrs]
    if "guard" in groups:
        out += [Setting("guard", f"all items, lr {sci(lr)}, guard {g}",
                        (("train_items", 0), ("collapse_guard", g == "on"))) for g in ("off", "on")]
        out += [Setting("guard", f"lr {sci(x)}, guard on", (("lr", x),)) for x in lrs if x >= 10 * lr]
    if "single" in groups:
        chosen = [items[i * len(items) // n_single].id for i in range(n_single)]
        out += [Setting("single", f"single {c}", single=c) for c in chosen]
    if "shift" in groups:
        out += [Setting("shift", f"shift {c}", corruption=c) for c in (("invert",) if quick else CORRUPTIONS)]
    if "epochs" in groups:
        out += [Setting("epochs", f"epochs {e}, guard off", (("epochs", e), off)) for e in ((1, 2) if quick else EPOCHS)]
    return out


# --------------------------------------------------------------------------- one run

def _eval_row(prefix: str, ev: EvalResult | dict) -> dict:
    m = ev.metrics if isinstance(ev, EvalResult) else ev
    return {f"{prefix}_{k}": m.get(f"eval/{k}", math.nan) for k in (*ACCS, *LABEL_FREE)}


def _with_concentration(ev: EvalResult) -> dict:
    """eval metrics plus eval/concentration: the largest share of items with the same greedy
    answer (label-free; 1.0 = collapsed onto one answer)."""
    return {**ev.metrics, "eval/concentration": concentration([e.greedy for e in ev.items])}


def _advantage_gap(steps: Sequence[StepEvent], alpha: float) -> float:
    """Largest |A_ttrv - A_frequency| over every item's N votes at every step: the entropy
    term is one number per group, so z-scoring within the group removes it.

    Rewards go in as float32, as engine.py hands them over; group_advantages z-scores
    in float64. What is left is float32 rounding: r1 - alpha * H_norm rounds differently
    from r1, so the two can differ by a rounding step or two (at most 2.4e-7 in the full
    grid, docs/RESULTS.md). The engine z-scores the first G votes, whose order the events
    do not keep, so this check covers the N; a group of G equal answers gets exactly zero
    advantages under both rewards (tests/test_rewards.py)."""
    gap = 0.0
    for s in steps:
        for iv in s.items:
            votes = [a for a, c in iv.counts.items() for _ in range(c)]
            a = group_advantages(torch.tensor(compute_rewards("ttrv", votes, alpha)[0]))   # float32, as engine.py
            b = group_advantages(torch.tensor(compute_rewards("frequency", votes)[0]))
            gap = max(gap, float((a - b).abs().max()))
    return gap


class Policies:
    """One loaded model per seed, its fresh LoRA weights kept and put back before every run:
    the same start as a new load_policy(seed=...) without the load (about 1.5 s a run)."""

    def __init__(self) -> None:
        self._loaded: dict[tuple, tuple[Policy, dict[str, torch.Tensor]]] = {}

    def fresh(self, cfg: TTRVConfig) -> Policy:
        key = (cfg.model, cfg.precision, cfg.lora_r, cfg.lora_alpha, cfg.seed)
        if key not in self._loaded:
            policy = load_policy(cfg.model, cfg.precision, "cpu", cfg.lora_r, cfg.lora_alpha, cfg.seed)
            set_threads_for(policy)  # process-wide (torch.set_num_threads): one for a small model on a CPU
            init = {n: p.detach().clone() for n, p in policy.model.named_parameters() if p.requires_grad}
            self._loaded = {key: (policy, init)}   # seeds run one after another: keep one model
        policy, init = self._loaded[key]
        with torch.no_grad():
            for n, p in policy.model.named_parameters():
                if n in init:
                    p.copy_(init[n])
        return policy


def run_setting(s: Setting, seed: int, items: Sequence[Item], base: dict, cached_before: dict | None,
                policies: Policies | None = None) -> Outcome:
    cfg = s.config(seed, base)
    t0 = time.time()
    policy = (policies or Policies()).fresh(cfg)
    # the before-eval reaches training only through the guard's baseline (engine.run), and
    # the guard never judges single-example runs (fewer than guard.MIN_ITEMS distinct items)
    guard_reads_it = cfg.collapse_guard and s.single is None
    measure = cached_before is None or guard_reads_it
    start, evals, steps, end = None, {}, [], None
    for ev in run(cfg, policy, items, single=s.single, evaluate_before=measure):
        if isinstance(ev, RunStart):
            start = ev
        elif isinstance(ev, EvalResult):
            evals[ev.phase] = _with_concentration(ev)
        elif isinstance(ev, StepEvent):
            steps.append(ev)
        elif isinstance(ev, RunEnd):
            end = ev
    before = evals.get("before", cached_before)
    after = evals.get("after", before)   # no step ran: the model is the base model
    row = {"group": s.group, "setting": s.name, "seed": seed, "single": s.single or "",
           "corruption": s.corruption or "", "reward": cfg.reward, "lr": cfg.lr, "train_items": cfg.train_items,
           "guard": cfg.collapse_guard, "before_source": "measured" if "before" in evals else "cached",
           **_eval_row("before", before), **_eval_row("after", after)}
    for k in (*ACCS, *LABEL_FREE):
        row[f"d_{k}"] = 100 * (row[f"after_{k}"] - row[f"before_{k}"])   # points
    row.update(steps_done=len(steps), total_steps=start.total_steps,
               guard_fired_step=end.summary.get("guard/fired_step", ""),
               adv_gap_vs_frequency=_advantage_gap(steps, cfg.alpha) if cfg.reward == "ttrv" else "",
               seconds=round(time.time() - t0, 2))
    step_rows = [{"step": e.step, **{k: e.metrics[k] for k in STEP_KEYS if k in e.metrics}} for e in steps]
    return Outcome(row, step_rows, evals.get("before"))


# --------------------------------------------------------------------------- the grid

def _eval_key(cfg: TTRVConfig, corruption: str | None) -> tuple:
    """What the before-evaluation depends on."""
    return (corruption, cfg.seed, cfg.temperature, cfg.top_p, cfg.votes_for_eval, cfg.max_new_tokens, cfg.model)


def run_grid(settings: Sequence[Setting], seeds: Sequence[int], items: Sequence[Item], base: dict,
             work: Path, log=print) -> list[Outcome]:
    """Every setting x seed, in seed order; each finished run is appended to work/runs.jsonl."""
    shifted = {c: corrupted_items(items, c, work / "corrupted" / c) for c in {s.corruption for s in settings} if c}
    cache: dict[tuple, dict] = {}
    outcomes: list[Outcome] = []
    log_file = work / "runs.jsonl"   # one line per finished run: a cut-short grid keeps its runs
    log_file.unlink(missing_ok=True)
    jobs = [(s, seed) for seed in seeds for s in settings]
    policies = Policies()
    t0 = time.time()
    for k, (s, seed) in enumerate(jobs, 1):
        key = _eval_key(s.config(seed, base), s.corruption)
        o = run_setting(s, seed, shifted.get(s.corruption, items), base, cache.get(key), policies)
        o.row["before_check"] = ""
        if o.before is not None:
            if key in cache:   # the same base model evaluated again: must match the cache
                o.row["before_check"] = max(abs(o.before[m] - cache[key][m]) for m in cache[key])
            cache.setdefault(key, o.before)
        outcomes.append(o)
        with open(log_file, "a") as f:
            f.write(json.dumps({"row": o.row, "steps": o.steps}) + "\n")
        r = o.row
        eta = (time.time() - t0) / k * (len(jobs) - k)
        fired = f", guard fired at step {int(r['guard_fired_step'])}" if r["guard_fired_step"] != "" else ""
        log(f"[{k}/{len(jobs)}] {s.name} seed {seed}: greedy {r['before_greedy_acc']:.3f} -> "
            f"{r['after_greedy_acc']:.3f} ({r['d_greedy_acc']:+.1f}), single@T {r['d_single_acc']:+.1f}, "
            f"maj@N {r['d_maj_acc']:+.1f}{fired}; {r['seconds']:.1f} s (before {r['before_source']}), "
            f"eta {eta / 60:.1f} min")
    return outcomes


# --------------------------------------------------------------------------- CLI

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ttrv_core.experiments", description=__doc__.splitlines()[0])
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
    ap.add_argument("--images", type=Path, help="your own labelled image folder instead of the demos (OUT/custom/)")
    ap.add_argument("--questions", type=Path, help="its questions file with answers (default: IMAGES/questions.csv)")
    ap.add_argument("--task", choices=TASKS, default="open", help="its task format (default: open)")
    ap.add_argument("--model", default=TTRVConfig.model, help="the model for --images (default: the demo model)")
    ap.add_argument("--no-png", action="store_true", help="figures as HTML only")
    ap.add_argument("--report-only", action="store_true", help="rebuild tables and figures from OUT/*/runs.jsonl")
    a = ap.parse_args(argv)
    from .cli import quiet
    quiet()
    if a.images:
        targets = [("custom", a.images, a.questions or a.images / "questions.csv", a.task, {"model": a.model})]
    else:
        targets = [(d.key, d.example_dir, d.example_dir / "questions.csv", d.task, {"model": d.model, **d.settings})
                   for d in map(by_key, a.demos)]
    try:
        extra = _settings(a.set)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    targets = [(name, images, questions, task, {**base, **extra}) for name, images, questions, task, base in targets]
    command = "python -m ttrv_core.experiments " + " ".join(argv if argv is not None else sys.argv[1:])
    tables = {}
    for name, images, questions, task, base in targets:
        ds = load_dataset(images, questions_file=questions, task=task)
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
