"""Would a label-free amplification rule have caught the runs that fed a bias? Replayed from run logs.

    python -m ttrv_core.research.amplification runs/reward_study      # every run folder below it

The collapse guard (guard.py) fires when most images share one majority answer: total collapse. A
run that feeds a bias stops well short of that (one letter on 0.29 of the images, docs/RESULTS.md). The rule
replayed here watches, over the guard's window (each adapted image's latest majority answer over the
last guard.WINDOW steps, at least guard.MIN_ITEMS images), every answer's share of the images against
its share of the base model's valid votes on those images (the before-evaluation, label-free):

    amplified(a)  <=>  share(a) >= FACTOR x votes(a)  and  share(a) >= FACTOR / K

fired when that holds for guard.PATIENCE windows in a row. Each run is labelled from its outcome (with
labels, for this study only): `biased` when its top answer share after is >= BIASED (2.5x chance for
ten options), `healthy` when it is <= 0.2 and content accuracy did not fall by more than 2 points.
The table counts, per FACTOR, the biased runs caught and the healthy runs it would have stopped.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, deque
from pathlib import Path

from ttrv_core.method.guard import MIN_ITEMS, PATIENCE, WINDOW
from ttrv_core.tasks.prompts import LETTERS

BIASED = 0.25
FACTORS = (1.5, 2.0, 2.5, 3.0)


def replay(events: list[dict], factor: float, k: int) -> int | None:
    """The step at which the rule fires on a run's log, or None."""
    start = next(e for e in events if e["type"] == "run_start")
    train = set(start["train_ids"])
    before = next((e for e in events if e["type"] == "eval" and e["phase"] == "before"), None)
    if before is None:
        return None
    pooled: Counter = Counter()
    for it in before["items"]:
        if it["item_id"] in train:
            pooled.update({a: c for a, c in it["counts"].items() if len(a) == 1 and a in LETTERS[:k]})
    total = sum(pooled.values()) or 1
    votes = {a: c / total for a, c in pooled.items()}
    window: deque = deque(maxlen=WINDOW)
    bad = 0
    for ev in (e for e in events if e["type"] == "step"):
        window.append({iv["item_id"]: iv["majority"] for iv in ev["items"]})
        latest: dict[str, str] = {}
        for d in window:
            latest.update(d)
        if len(latest) < MIN_ITEMS:
            continue
        shares = {a: c / len(latest) for a, c in Counter(latest.values()).items() if len(a) == 1}
        hit = any(s >= factor * votes.get(a, 0.0) and s >= factor / k for a, s in shares.items())
        bad = bad + 1 if hit else 0
        if bad >= PATIENCE:
            return ev["step"]
    return None


def _multiple_choice(events: list[dict], k: int) -> bool:
    """Whether most of a run's base votes are option letters (a multiple-choice run)."""
    before = next((e for e in events if e["type"] == "eval" and e["phase"] == "before"), None)
    votes = Counter() if before is None else sum((Counter(it["counts"]) for it in before["items"]), Counter())
    letters = sum(c for a, c in votes.items() if len(a) == 1 and a in LETTERS[:k])
    return letters > 0.2 * sum(votes.values())


def label(summary: dict) -> str:
    top = summary.get("after/top_answer_share", 0.0)
    if top >= BIASED:
        return "biased"
    if top <= 0.2 and summary["after/content_acc"] >= summary["before/content_acc"] - 0.02:
        return "healthy"
    return "between"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ttrv_core.research.amplification", description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path)
    ap.add_argument("--k", type=int, default=10, help="options per item (default: the digits' 10)")
    args = ap.parse_args(argv)
    runs = []
    for summ in sorted(args.root.rglob("summary.json")):
        s = json.loads(summ.read_text())
        if "after/content_acc" not in s:
            continue
        events = [json.loads(x) for x in (summ.parent / "events.jsonl").read_text().splitlines() if x.strip()]
        if not _multiple_choice(events, args.k):   # the rule reads option letters: other runs are left out
            continue
        runs.append((summ.parent.relative_to(args.root), label(s), events))
    print(f"{len(runs)} runs: " + ", ".join(f"{n} {lab}" for lab, n in Counter(r[1] for r in runs).items()))
    print("| factor | biased runs caught | healthy runs stopped | between runs stopped |")
    print("|---|---|---|---|")
    for f in FACTORS:
        fired = {str(name): replay(ev, f, args.k) is not None for name, _, ev in runs}
        cell = lambda lab: (f"{sum(fired[str(n)] for n, lb, _ in runs if lb == lab)} of "   # noqa: E731
                            f"{sum(lb == lab for _, lb, _ in runs)}")
        print(f"| {f} | {cell('biased')} | {cell('healthy')} | {cell('between')} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
