"""Which image to adapt on in single-example mode: is there a label-free rule that picks a good one?

    python -m ttrv_core.research.single_pick --sets val --seeds 0 1 --out runs/single_pick   # choose here
    python -m ttrv_core.research.single_pick --sets held --seeds 0 1 --out runs/single_pick  # report here
    python -m ttrv_core.research.single_pick --report-only --out runs/single_pick

In single-example mode the gain depends on the image adapted on (docs/RESULTS.md: one digit lowers
greedy accuracy on the whole set, another raises it on every seed). The app evaluates the base model
before training anyway, so a rule computed from that evaluation (no labels) could suggest the image.

Per image, from the before-evaluation's N votes (`ItemEval`):
  agreement  = votes of the most common valid answer / valid votes (0 when no vote is valid),
  invalid    = share of the N votes with no valid answer,
  entropy    = H / ln N over all N votes.
Candidates: 12 images at evenly spaced ranks of agreement (a stratified sample, so their mean gain
stands for a random pick), plus the images the rules below pick where they are not among them. Each
candidate is a CLI run (`--single IMAGE`, the demo's settings) in OUT/<set>/<image>/s<seed>/; a run
whose summary.json exists is not run again. The gain of a run is on every image of the set (the adapted
one included: 1 of 200 or 240). The rules see seed 0's before-evaluation, the one the first run makes.
A rule helps if its image's mean strict gain beats the mean over the 12 stratified candidates by more
than the spread over seeds (the sample std of its image's gains). "agreed, half invalid" is the rule the
app suggests with (app/pick_hint.py), read from there; the report also gives the mean gain of the
stratified images whose valid votes agree (>= pick_hint.MIN_AGREEMENT) and of the others.
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path
from statistics import mean, stdev

from ttrv_core.app.pick_hint import (
    MIN_AGREEMENT,
    VoteFeatures,
    agreed_half_invalid,
    vote_features,
)
from ttrv_core.events import EvalResult, eval_from_json
from ttrv_core.tasks.prompts import LETTERS

SETS = {
    "val": ["--images", "assets/validation/digits_choice", "--task", "choice", "--model", "assets/demo_choice"],
    "held": ["--demo", "format"],
}
PROBE = {"val": "digit_0000.png", "held": "digit_0000.png"}   # the first run, whose before-evaluation the rules read
N_STRATA = 12
ROOT = Path(__file__).resolve().parents[2]


def is_valid_digit_letter(answer: str) -> bool:
    """A vote of the digit demos: one of the ten option letters A-J."""
    return len(answer) == 1 and answer in LETTERS[:10]


def features(before: EvalResult) -> list[VoteFeatures]:
    return vote_features(before, is_valid_digit_letter)


def _median_of(feats: list[VoteFeatures], key) -> str:
    ranked = sorted(feats, key=lambda f: (key(f), f.item_id))
    return ranked[len(ranked) // 2].item_id


# rule name -> picks one item id from the features (ties broken by item id, so the pick is reproducible)
RULES = {
    "most agreed (valid votes)": lambda fs: max(fs, key=lambda f: (f.agreement, -f.invalid, f.item_id)).item_id,
    "least agreed (valid votes)": lambda fs: min(fs, key=lambda f: (f.agreement, f.item_id)).item_id,
    "median agreement": lambda fs: _median_of(fs, lambda f: f.agreement),
    "fewest invalid votes": lambda fs: min(fs, key=lambda f: (f.invalid, f.item_id)).item_id,
    "most invalid votes": lambda fs: max(fs, key=lambda f: (f.invalid, f.item_id)).item_id,
    "median invalid share": lambda fs: _median_of(fs, lambda f: f.invalid),
    "agreed, half invalid (the app's hint)": lambda fs: agreed_half_invalid(fs).item_id,
    "lowest entropy": lambda fs: min(fs, key=lambda f: (f.entropy, f.item_id)).item_id,
    "highest entropy": lambda fs: max(fs, key=lambda f: (f.entropy, f.item_id)).item_id,
}


def run(out: Path, data: str, item: str, seed: int) -> dict:
    folder = out / data / Path(item).stem / f"s{seed}"
    if not (folder / "summary.json").is_file():
        cmd = [sys.executable, "-m", "ttrv_core", *SETS[data], "--single", item, "--seed", str(seed),
               "--out", str(folder)]
        subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return json.loads((folder / "summary.json").read_text())


def before_eval(folder: Path) -> EvalResult:
    for line in (folder / "events.jsonl").read_text().splitlines():
        e = json.loads(line)
        if e.get("type") == "eval" and e["phase"] == "before":
            return eval_from_json(e)
    raise ValueError(f"{folder}: no before-evaluation")


def candidates(feats: list[VoteFeatures]) -> tuple[list[str], dict[str, str]]:
    """12 items at evenly spaced ranks of agreement, and each rule's pick."""
    ranked = sorted(feats, key=lambda f: (f.agreement, f.item_id))
    strata = [ranked[round(i * (len(ranked) - 1) / (N_STRATA - 1))].item_id for i in range(N_STRATA)]
    return strata, {name: rule(feats) for name, rule in RULES.items()}


def gains(out: Path, data: str, item: str) -> tuple[list[float], list[float]]:
    """Strict and content accuracy gains (points) of every stored seed of one image."""
    runs = [json.loads(p.read_text()) for p in sorted((out / data / Path(item).stem).glob("s*/summary.json"))]
    return ([100 * r["gain/strict"] for r in runs],
            [100 * (r["after/content_acc"] - r["before/content_acc"]) for r in runs])


def _ms(xs: list[float]) -> str:
    return f"{mean(xs):+.1f} ± {stdev(xs):.1f}" if len(xs) > 1 else f"{xs[0]:+.1f}"


def study(out: Path, data: str, seeds: list[int]) -> None:
    run(out, data, PROBE[data], 0)
    feats = features(before_eval(out / data / Path(PROBE[data]).stem / "s0"))
    strata, picks = candidates(feats)
    (out / data / "plan.json").write_text(json.dumps({"strata": strata, "picks": picks}, indent=1))
    for item in dict.fromkeys([*strata, *picks.values()]):
        for seed in seeds:
            run(out, data, item, seed)
            print(f"{data} {item} s{seed}", flush=True)


def _by_agreement(out: Path, data: str, strata: list[str], feats: dict[str, VoteFeatures]) -> str:
    """The stratified images' mean strict gain with valid votes agreed (>= MIN_AGREEMENT) and not."""
    parts = []
    for name, keep in (("agreed", lambda a: a >= MIN_AGREEMENT), ("not agreed", lambda a: a < MIN_AGREEMENT)):
        means = [mean(s) for s, _ in (gains(out, data, i) for i in strata if keep(feats[i].agreement)) if s]
        if means:
            parts.append(f"{name} (agreement {'>=' if name == 'agreed' else '<'} {MIN_AGREEMENT}): "
                         f"{len(means)} images, mean strict {mean(means):+.1f}, {sum(m > 0 for m in means)} gain")
    return "; ".join(parts) + "."


def report(out: Path, data: str) -> str:
    plan = json.loads((out / data / "plan.json").read_text())
    feats = {f.item_id: f for f in features(before_eval(out / data / Path(PROBE[data]).stem / "s0"))}
    rows = ["| image | agreement | invalid | entropy | seeds | Δ strict (points) | Δ content (points) |",
            "|---|---|---|---|---|---|---|"]
    for item in dict.fromkeys([*plan["strata"], *plan["picks"].values()]):
        s, c = gains(out, data, item)
        if not s:
            continue
        f = feats[item]
        tag = "" if item in plan["strata"] else " (rule pick)"
        rows.append(f"| {item}{tag} | {f.agreement:.2f} | {f.invalid:.2f} | {f.entropy:.2f} | {len(s)} | "
                    f"{', '.join(f'{x:+.1f}' for x in s)} ({_ms(s)}) | {_ms(c)} |")
    per_image = [gains(out, data, i) for i in plan["strata"]]
    per_image = [(mean(s), mean(c)) for s, c in per_image if s]
    base_s, base_c = mean(p[0] for p in per_image), mean(p[1] for p in per_image)
    spread_images = stdev(p[0] for p in per_image)
    rows += ["", (f"Random pick (mean over the {len(per_image)} stratified images): strict {base_s:+.1f}, "
                  f"content {base_c:+.1f}; spread between images (std of their means): strict {spread_images:.1f}."),
             "", _by_agreement(out, data, plan["strata"], feats), "",
             "| rule | picks | Δ strict | Δ content | strict − random pick | helps? |", "|---|---|---|---|---|---|"]
    for name, item in plan["picks"].items():
        s, c = gains(out, data, item)
        if not s:
            continue
        spread = stdev(s) if len(s) > 1 else math.inf
        helps = "yes" if mean(s) - base_s > spread else "no"
        rows.append(f"| {name} | {item} | {_ms(s)} | {_ms(c)} | {mean(s) - base_s:+.1f} | {helps} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sets", nargs="+", choices=list(SETS), default=["val"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--out", type=Path, default=Path("runs/single_pick"))
    p.add_argument("--report-only", action="store_true")
    a = p.parse_args(argv)
    for data in a.sets:
        if not a.report_only:
            study(a.out, data, a.seeds)
        if (a.out / data / "plan.json").is_file():
            print(f"\n### {data}\n\n{report(a.out, data)}")


if __name__ == "__main__":
    main()
