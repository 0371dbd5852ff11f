"""Headless TTRV runs: `python -m ttrv_core --images DIR --questions FILE --out DIR`.

With no --images, runs on the bundled digits example set and the demo model.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from pathlib import Path

from tqdm import tqdm

from .config import TTRVConfig
from .data import collect_uploads, load_dataset
from .events import EvalResult, Progress, RunEnd, RunStart, StepEvent
from .errors import TTRVError
from .models import ModelLoadError, load_policy
from .prompts import TASKS
from .rewards import REWARDS

EXAMPLES = Path(__file__).resolve().parent.parent / "assets" / "examples" / "digits"

# config fields exposed as flags: flag -> field
FLAGS = {"votes": "n_votes", "train": "n_train", "temperature": "temperature", "top-p": "top_p",
         "max-new-tokens": "max_new_tokens", "reward": "reward", "alpha": "alpha", "beta": "beta",
         "lr": "lr", "train-items": "train_items", "epochs": "epochs", "steps": "max_steps",
         "prompts-per-step": "prompts_per_step", "lora-r": "lora_r", "seed": "seed", "precision": "precision",
         "eval-votes": "eval_votes", "single-copies": "single_copies"}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ttrv_core", description=__doc__.splitlines()[0])
    p.add_argument("--images", type=Path, help="folder (or .zip) of images (default: the bundled digits example set)")
    p.add_argument("--question", help="one question for every image")
    p.add_argument("--questions", type=Path, help="CSV or JSONL: image, question[, options][, answer]")
    p.add_argument("--task", choices=TASKS, default="open", help="answer format (default: open)")
    p.add_argument("--options", default="", help="options / class names for every image, separated by '|'")
    p.add_argument("--model", default=TTRVConfig.model, help="hub id or folder (default: bundled demo model)")
    p.add_argument("--out", type=Path, default=Path("runs/latest"), help="run folder (default: runs/latest)")
    p.add_argument("--single", metavar="IMAGE", help="single-example mode: adapt on this image only")
    p.add_argument("--naive", action="store_true", help="full-row forwards instead of the shared prefix")
    p.add_argument("--no-guard", action="store_true", help="switch off the collapse guard (ttrv_core/guard.py)")
    p.add_argument("--device", help="cpu or cuda (default: cuda if available)")
    defaults = TTRVConfig()
    types = {f.name: f.type for f in fields(TTRVConfig)}
    for flag, name in FLAGS.items():
        kind = {"int": int, "float": float}.get(types[name], str)
        extra = {"choices": REWARDS} if name == "reward" else {}
        p.add_argument(f"--{flag}", type=kind, default=getattr(defaults, name), dest=name,
                       help=f"(default: {getattr(defaults, name)})", **extra)
    return p


def quiet() -> None:
    """Keep the terminal for the progress bar: no loading bars or library chatter."""
    import warnings

    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    quiet()
    if args.images is None:
        args.images, args.questions = EXAMPLES, args.questions or EXAMPLES / "questions.csv"
    options = tuple(o.strip() for o in args.options.split("|") if o.strip())
    try:
        cfg = TTRVConfig(model=args.model, shared_prefix=not args.naive, collapse_guard=not args.no_guard,
                         **{name: getattr(args, name) for name in FLAGS.values()})
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    problems = []
    if args.images.suffix.lower() == ".zip" and args.images.is_file():
        args.images, found, problems = collect_uploads([str(args.images)], args.out / "input")
        args.questions = args.questions or (None if args.question else found)
    ds = load_dataset(args.images, args.question, args.questions, args.task, options)
    ds.problems = problems + ds.problems
    for pr in ds.problems:
        print(f"warning: {pr}", file=sys.stderr)
    if not ds.items:
        print("error: no usable items; nothing to run", file=sys.stderr)
        return 2
    try:
        policy = load_policy(cfg.model, cfg.precision, args.device, cfg.lora_r, cfg.lora_alpha, cfg.seed)
    except ModelLoadError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    from .engine import run
    from .runs import RunDir, record

    out = RunDir(args.out)
    out.write_json("config.json", {"config": cfg.to_dict(), "images": str(args.images),
                                   "questions": str(args.questions) if args.questions else None,
                                   "question": args.question, "task": args.task, "single": args.single})
    out.write_problems(ds.problems)
    try:
        events = record(run(cfg, policy, ds.items, single=args.single), out, policy, ds.items)
        _show(events, len(ds.items))
    except (ValueError, TTRVError) as e:  # the run folder keeps what was computed before
        print(f"error: {e}", file=sys.stderr)
        print(f"run folder (partial): {out.root}", file=sys.stderr)
        return 2
    print(f"run folder: {out.root}")
    return 0


def _show(events, n_items: int) -> None:
    """A progress bar over eval-before items, steps, eval-after items."""
    bar, steps = None, 0
    for ev in events:
        if isinstance(ev, RunStart):
            steps = ev.total_steps
            bar = tqdm(total=2 * n_items + steps, unit="it", dynamic_ncols=True)
        elif isinstance(ev, Progress):
            bar.set_description(f"eval {ev.phase}")
            bar.n = ev.done + (0 if ev.phase == "before" else n_items + steps)
            bar.refresh()
        elif isinstance(ev, EvalResult):
            bar.write(_line(ev.phase, ev.metrics))
        elif isinstance(ev, StepEvent):
            m = ev.metrics
            bar.n = n_items + ev.step
            bar.set_description(f"step {ev.step}/{ev.total_steps}")
            bar.set_postfix(H=f"{m['answers/entropy']:.2f}", maj=f"{m['answers/majority_share']:.2f}",
                            s=f"{m['time/step_s']:.2f}")
        elif isinstance(ev, RunEnd):
            if ev.stopped:  # the after-eval follows the last completed step
                bar.total = bar.n + n_items
            bar.close()
            print(f"done in {ev.seconds:.1f} s" + (" (stopped)" if ev.stopped else ""))
            if ev.guard:
                print(ev.guard)


def _line(phase: str, m: dict) -> str:
    parts = [f"{phase:>6}:"]
    for key, name in (("eval/greedy_acc", "greedy"), ("eval/single_acc", "single@T"), ("eval/maj_acc", "maj@N"),
                      ("eval/entropy", "entropy"), ("eval/majority_share", "maj share")):
        if key in m:
            parts.append(f"{name} {m[key]:.3f}")
    return "  ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
