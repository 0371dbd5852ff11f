"""The experiment grid: its settings (Setting, grid) and how one runs them (run_setting, run_grid),
each run the engine's own loop on a fresh LoRA adapter. experiments.py is its command line;
report.py turns what it measured into tables and figures.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from ttrv_core.config import TTRVConfig
from ttrv_core.events import EvalResult, RunEnd, RunStart, StepEvent
from ttrv_core.inputs.dataset import Item
from ttrv_core.method.engine import adapt
from ttrv_core.method.grpo import group_advantages
from ttrv_core.method.guard import concentration
from ttrv_core.method.rewards import compute_rewards
from ttrv_core.model.loading import load_policy
from ttrv_core.model.policy import Policy
from ttrv_core.model.threads import set_threads_for
from ttrv_core.research.corruptions import CORRUPTIONS, corrupted_items
from ttrv_core.research.report import ACCS, LABEL_FREE, Outcome, sci

ROOT = Path(__file__).resolve().parents[2]
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

    Rewards go in as float32, as step.score hands them over; group_advantages z-scores
    in float64. What is left is float32 rounding: r1 - alpha * H_norm rounds differently
    from r1, so the two can differ by a rounding step or two (at most 2.4e-7 in the full
    grid, docs/RESULTS.md). The engine z-scores the first G votes, whose order the events
    do not keep, so this check covers the N; a group of G equal answers gets exactly zero
    advantages under both rewards (tests/test_rewards.py)."""
    gap = 0.0
    for s in steps:
        for iv in s.items:
            votes = [a for a, c in iv.counts.items() for _ in range(c)]
            a = group_advantages(torch.tensor(compute_rewards("ttrv", votes, alpha)[0]))   # float32, as step.score
            b = group_advantages(torch.tensor(compute_rewards("frequency", votes)[0]))
            gap = max(gap, float((a - b).abs().max()))
    return gap


class Policies:
    """One loaded model per seed, its fresh LoRA weights kept and put back before every run:
    the same start as a new load_policy(seed=...) without the load."""

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
    # the before-eval reaches training only through the guard's baseline (engine.adapt), and
    # the guard never judges single-example runs (fewer than guard.MIN_ITEMS distinct items)
    guard_reads_it = cfg.collapse_guard and s.single is None
    measure = cached_before is None or guard_reads_it
    start, evals, steps, end = None, {}, [], None
    for ev in adapt(cfg, policy, items, single=s.single, evaluate_before=measure):
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
