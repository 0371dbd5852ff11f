"""Mirror a run's events to an experiment tracker: TensorBoard or Weights & Biases (`--report-to`).

`mirror` wraps the event stream as `record` does (folder.py): the caller iterates it exactly as the
bare stream, every event passes through unchanged, and each is mirrored before it is passed on. The
run folder's events.jsonl stays the record; the tracker is a view of it, written here and nowhere else.

What is mirrored, at global step = the training step:

    StepEvent   every scalar metric under its own key (reward/mean, reward/std, answers/entropy,
                answers/invalid, loss/*, grad/norm, lr, time/*, memory/*, acc/*, guard/*), at its
                step; and two histograms over the step's items: items/majority_share (each item's
                majority share of its N votes) and items/entropy (each item's H / ln N)
    EvalResult  its metrics eval/x as before/x or after/x, at the step the phase follows
                (before: the step the run starts from, 0 for a new run; after: the last step)
    RunEnd      the summary's scalars (gain/*, changed/*, votes/*, amplified/*, and before/*,
                after/* where no evaluation of this stream gave them), and a before/after table
                of the evaluation metrics: TensorBoard a text summary (before_after), W&B a
                wandb.Table; W&B also gets the whole summary as the run's summary

TensorBoard writes event files under RUN_DIR/tensorboard/ (`tensorboard --logdir RUN_DIR/tensorboard`),
through torch.utils.tensorboard. W&B: wandb.init(project="ttrv", dir=RUN_DIR, config=the run's
config.json record); its mode comes from the environment (WANDB_MODE=offline keeps the run in
RUN_DIR/wandb/, `wandb sync` uploads it later). Progress events are not mirrored.

The tracker is closed in a `finally`, however the run ends (finished, stopped, an error, a caller that
stops iterating); W&B marks a run whose stream did not reach its end as failed (exit code 1).
"""
from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Iterator, Sequence

from ttrv_core.events import EvalResult, Event, RunEnd, RunStart, StepEvent

TRACKERS = ("none", "tensorboard", "wandb")
"""The values of --report-to."""

TENSORBOARD_DIR = "tensorboard"
"""TensorBoard's event files: RUN_DIR/tensorboard/."""


def missing_library(to: str) -> str | None:
    """What to install when the library of tracker `to` does not import, else None."""
    module = {"wandb": "wandb", "tensorboard": "torch.utils.tensorboard"}.get(to)
    try:
        if module:
            importlib.import_module(module)
    except ImportError:
        return f"--report-to {to} needs `pip install {to}`"
    return None


class TensorBoard:
    """Scalars, histograms and text into RUN_DIR/tensorboard/ (torch.utils.tensorboard.SummaryWriter)."""

    def __init__(self, run_dir: Path, config: dict):
        from torch.utils.tensorboard import SummaryWriter
        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / TENSORBOARD_DIR))
        self.writer.add_text("config", "```\n" + json.dumps(config, indent=2, default=str) + "\n```")

    def scalars(self, metrics: dict[str, float], step: int) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)

    def histogram(self, key: str, values: Sequence[float], step: int) -> None:
        import numpy as np
        self.writer.add_histogram(key, np.asarray(values, dtype=np.float64), step)

    def table(self, key: str, rows: list[tuple[str, float | None, float | None]], step: int) -> None:
        lines = ["| metric | before | after |", "|---|---|---|"]
        lines += [f"| {m} | {_num(b)} | {_num(a)} |" for m, b, a in rows]
        self.writer.add_text(key, "\n".join(lines), step)

    def summary(self, summary: dict[str, float]) -> None:
        pass  # TensorBoard has no run summary: its scalars are written by scalars()

    def close(self, ok: bool) -> None:
        self.writer.close()


class WandB:
    """A W&B run: wandb.log at each step, the run's summary at the end."""

    def __init__(self, run_dir: Path, config: dict):
        import wandb
        self.wandb = wandb
        self.run = wandb.init(project="ttrv", dir=str(run_dir), config=config)  # mode: WANDB_MODE

    def scalars(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(dict(metrics), step=step)

    def histogram(self, key: str, values: Sequence[float], step: int) -> None:
        self.run.log({key: self.wandb.Histogram(list(values))}, step=step)

    def table(self, key: str, rows: list[tuple[str, float | None, float | None]], step: int) -> None:
        self.run.log({key: self.wandb.Table(columns=["metric", "before", "after"], data=[list(r) for r in rows])},
                     step=step)

    def summary(self, summary: dict[str, float]) -> None:
        self.run.summary.update(summary)

    def close(self, ok: bool) -> None:
        self.run.finish(exit_code=0 if ok else 1)


def open_tracker(to: str, run_dir: Path, config: dict) -> TensorBoard | WandB:
    return {"tensorboard": TensorBoard, "wandb": WandB}[to](run_dir, config)


def mirror(events: Iterator[Event], to: str, run_dir: Path, config: dict) -> Iterator[Event]:
    """Pass every event through unchanged, mirroring it to the tracker `to` (TRACKERS; "none": the
    stream as it is). The tracker opens at the first event asked for and closes however the loop ends."""
    if to == "none":
        yield from events
        return
    tracker, ok = open_tracker(to, run_dir, config), False
    step = 0                     # the last training step seen (a resumed run starts after its resumed_from)
    logged: set[str] = set()     # before/* and after/* keys written from this stream's evaluations
    try:
        for ev in events:
            if isinstance(ev, RunStart):
                step = ev.resumed_from
            elif isinstance(ev, StepEvent):
                step = ev.step
                tracker.scalars(_scalars(ev.metrics), step)
                if ev.items:
                    tracker.histogram("items/majority_share", [it.majority_share for it in ev.items], step)
                    tracker.histogram("items/entropy", [it.entropy for it in ev.items], step)
            elif isinstance(ev, EvalResult):
                phased = {f"{ev.phase}/{k.removeprefix('eval/')}": v for k, v in _scalars(ev.metrics).items()}
                tracker.scalars(phased, step)
                logged |= phased.keys()
            elif isinstance(ev, RunEnd):
                summary = _scalars(ev.summary)
                tracker.scalars({k: v for k, v in summary.items() if k not in logged}, step)
                tracker.summary(summary)
                if rows := before_after(summary):
                    tracker.table("before_after", rows, step)
            yield ev
        ok = True
    finally:
        tracker.close(ok)


def before_after(summary: dict[str, float]) -> list[tuple[str, float | None, float | None]]:
    """(metric, before, after) for each evaluation metric in a RunEnd summary, in the summary's order."""
    names = dict.fromkeys(k.split("/", 1)[1] for k in summary if k.startswith(("before/", "after/")))
    return [(n, summary.get(f"before/{n}"), summary.get(f"after/{n}")) for n in names]


def _scalars(metrics: dict) -> dict[str, float]:
    """The numbers of a metrics dict (a None, a list or a string is not a scalar)."""
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}


def _num(v: float | None) -> str:
    return "" if v is None else f"{v:.4g}"
