"""Which reward keeps the reply-format repair without feeding the model's biases: a study over seeds.

    python -m ttrv_core.research.reward_study --sets val --out runs/reward_study            # choose here
    python -m ttrv_core.research.reward_study --sets held clean --variants ttrv cal1 --out runs/reward_study
    python -m ttrv_core.research.reward_study --report-only --out runs/reward_study

Each run is the CLI (`python -m ttrv_core`) in a subprocess, into OUT/<set>/<variant>/s<seed>/; a run
whose summary.json exists is not run again. Sets: `val` the format model on its validation split
(assets/validation/digits_choice, the demo's settings), `held` the format demo (held-out), `clean` its
control, `video` the video demo, `valvideo` the video model on its validation clips. Variants: the
reward flags of each (VARIANTS). The report gives, per set and variant, the mean and sample std over
seeds of strict and content accuracy after, the strict gain split (format / answers), the top answer
share after, and how many seeds meet the three criteria: content after >= before, strict gain >= +30
points, top answer share after <= 0.2. OUT/figures/ holds, for seed 0 of each set and variant, the
answer-share chart and the recall-per-class heatmap (`figures`).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from statistics import mean, stdev

SETS = {
    "val": ["--images", "assets/validation/digits_choice", "--task", "choice", "--model", "assets/demo_choice",
            "--lr", "1e-3", "--epochs", "3"],
    "held": ["--demo", "format"],
    "clean": ["--demo", "clean"],
    "video": ["--demo", "video"],
    "valvideo": ["--images", "assets/validation/digits_video", "--task", "open", "--model", "assets/demo_video",
                 "--lr", "1e-3", "--epochs", "3"],
}
VARIANTS = {
    "ttrv": ["--reward", "ttrv"],
    "cal0": ["--reward", "calibrated", "--prior-weight", "0"],
    "cal05": ["--reward", "calibrated", "--prior-weight", "0.5"],
    "cal1": ["--reward", "calibrated", "--prior-weight", "1"],
    "cal2": ["--reward", "calibrated", "--prior-weight", "2"],
    "cons05": ["--reward", "ttrv", "--consensus", "0.5"],
    "cal1cons03": ["--reward", "calibrated", "--prior-weight", "1", "--consensus", "0.3"],
}
ROOT = Path(__file__).resolve().parents[2]


def run(out: Path, data: str, variant: str, seed: int) -> Path:
    folder = out / data / variant / f"s{seed}"
    if not (folder / "summary.json").is_file():
        cmd = [sys.executable, "-m", "ttrv_core", *SETS[data], *VARIANTS[variant], "--seed", str(seed),
               "--out", str(folder)]
        subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return folder


def _ms(xs: list[float], scale: float = 1.0) -> str:
    xs = [scale * x for x in xs]
    return f"{mean(xs):.3f} ± {stdev(xs):.3f}" if len(xs) > 1 else f"{xs[0]:.3f}"


def report(out: Path) -> str:
    """A markdown table over every run folder under OUT."""
    lines = ["| set | variant | seeds | strict before → after | content before → after | format part | "
             "answers part | top share after (max) | seeds meeting all three |", "|---|---|---|---|---|---|---|---|---|"]
    for data in sorted(p.name for p in out.iterdir() if p.is_dir()):
        for var in sorted(p.name for p in (out / data).iterdir() if p.is_dir()):
            runs = [json.loads(f.read_text()) for f in sorted((out / data / var).glob("s*/summary.json"))]
            if not runs or "after/greedy_acc" not in runs[0]:
                continue
            get = lambda k: [r[k] for r in runs]   # noqa: E731
            met = sum(r["after/content_acc"] >= r["before/content_acc"] and r["gain/strict"] >= 0.30
                      and r["after/top_answer_share"] <= 0.2 for r in runs)
            lines.append(
                f"| {data} | {var} | {len(runs)} | {mean(get('before/greedy_acc')):.3f} → "
                f"{_ms(get('after/greedy_acc'))} | {mean(get('before/content_acc')):.3f} → {_ms(get('after/content_acc'))} "
                f"| {_ms(get('gain/format'), 100)} | {_ms(get('gain/answers'), 100)} | "
                f"{_ms(get('after/top_answer_share'))} ({max(get('after/top_answer_share')):.3f}) | {met} of {len(runs)} |")
    return "\n".join(lines)


def figures(out: Path, seed: int = 0) -> list[Path]:
    """OUT/figures/<set>_<variant>.html (and .png where plotly's image export works): the answer shares
    (answer_plots.shares: each answer's share of the images before and after, and of the base model's
    valid votes) and, beside it in a second file, recall per class, for one seed of each run group."""
    from ttrv_core import cli
    from ttrv_core.app import answer_plots
    from ttrv_core.events import eval_from_json
    written = []
    (out / "figures").mkdir(exist_ok=True)
    for run in sorted(out.glob(f"*/*/s{seed}")):
        if not (run / "summary.json").is_file():
            continue
        evals = {e["phase"]: eval_from_json(e) for e in map(json.loads, (run / "events.jsonl").read_text().splitlines())
                 if e["type"] == "eval"}
        meta = json.loads((run / "config.json").read_text(encoding="utf-8"))
        items = cli._dataset(meta).items
        name = f"{run.parent.parent.name}_{run.parent.name}"
        for kind, fig in (("shares", answer_plots.shares(items, evals.get("before"), evals.get("after"))),
                          ("recall", answer_plots.confusion(items, evals.get("before"), evals.get("after")))):
            path = out / "figures" / f"{name}_{kind}.html"
            fig.write_html(path, include_plotlyjs="cdn")
            written.append(path)
            try:
                fig.write_image(path.with_suffix(".png"), width=900, height=450)
            except Exception:   # no kaleido / Chrome: the HTML is the figure
                pass
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ttrv_core.research.reward_study", description=__doc__.splitlines()[0])
    ap.add_argument("--sets", nargs="+", choices=list(SETS), default=["val"])
    ap.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--out", type=Path, default=Path("runs/reward_study"))
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args(argv)
    if not args.report_only:
        for data in args.sets:
            for seed in args.seeds:
                for var in args.variants:
                    run(args.out, data, var, seed)
    table = report(args.out)
    (args.out / "table.md").write_text(table + "\n", encoding="utf-8")
    print(table)
    print(f"{len(figures(args.out))} figures in {args.out / 'figures'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
