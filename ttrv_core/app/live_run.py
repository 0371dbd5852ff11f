"""One run as a person watches it: fed the engine's events, it says where the run is,
how long is left, what Stop will do, and how the run ended, and draws its figures.

Time left is measured, never guessed: the evaluation's pace comes from the images
evaluated so far, a step's from the steps done. Before the first step the training
time is unknown, and the status says so. It names the run's parts ("2/3 Training"), the model
as the menu does (display_name), the items by their kind (noun: images, clips).
Gradio-free: the app shows these strings (status_html) and figures.
"""
from __future__ import annotations

import functools
import html
import time
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean
from typing import Sequence

from ttrv_core import demos
from ttrv_core.app import plots
from ttrv_core.config import TTRVConfig
from ttrv_core.errors import TTRVError, is_oom, oom_message
from ttrv_core.events import EvalResult, ItemEval, Progress, RunEnd, RunStart, StepEvent
from ttrv_core.inputs.dataset import Item
from ttrv_core.runs import model_card

FIRST = "the first image step 1 trains on"
"""Histogram choice: follow that one image through the run (before, the steps that sample it, after)."""
DRAW_EVERY_S = 1.0
"""Redraw the plots at most this often while a run streams (a redraw costs tens of ms of plotly on a CPU)."""
REUSED = ("The evaluation before training is the last run's, not run again: the same model, images, questions "
          "and evaluation settings give the same answers.")


@dataclass
class Redraw:
    """What a batch of events changes on the page."""
    started: bool = False      # the run started: it replaces the last one on the page
    figures: str = ""          # "" (none), "votes" (the histogram only) or "all"
    table: bool = False        # an evaluation arrived (or the run started: an empty table)


@dataclass
class LiveRun:
    items: list[Item]
    run_dir: Path | None = None
    model: str = ""                                # as the run's config names it (display_name shows it)
    t0: float = field(default_factory=time.time)   # Run was pressed
    start: RunStart | None = None
    steps: list[StepEvent] = field(default_factory=list)
    evals: dict[str, EvalResult] = field(default_factory=dict)
    latest: ItemEval | None = None                 # the image evaluated last (Progress.latest)
    progress: Progress | None = None
    end: RunEnd | None = None
    error: str | None = None
    stops: list[str] = field(default_factory=list)  # the phase of each Stop press (engine.adapt counts them)
    first_votes_s: float | None = None             # seconds from Run to the first votes
    rows: str = "all"                              # the table's rows shown: all or one kind of change (image_table.SHOW)
    _began: dict = field(default_factory=dict)     # "before" / "train" -> when it began
    _pace: dict = field(default_factory=dict)      # phase -> (time, images done) of its first and last progress
    _step_times: list = field(default_factory=list)
    _drawn: float = 0.0

    # ----------------------------------------------------------------- events in

    def feed(self, ev) -> None:
        now = time.time()
        if isinstance(ev, RunStart):
            self.start = ev
            self._began["before"] = now
        elif isinstance(ev, Progress):
            self.progress = ev
            first = self._pace.get(ev.phase, [(self._began.get(ev.phase), 0)])[0]  # after: from its 1st progress
            self._pace[ev.phase] = [first if first[0] is not None else (now, ev.done), (now, ev.done)]
            if ev.latest is not None:
                self.latest = ev.latest
                self.first_votes_s = self.first_votes_s or now - self.t0
        elif isinstance(ev, EvalResult):
            self.evals[ev.phase] = ev
            if ev.phase == "before":
                self._began["train"] = now
            if ev.reused and ev.items:  # not evaluated now: its pace is the one it had, its votes are here
                self._pace[ev.phase] = [(0.0, 0), (ev.seconds, len(ev.items))]
                self.latest = self.latest or ev.items[0]
                self.first_votes_s = self.first_votes_s or now - self.t0
        elif isinstance(ev, StepEvent):
            self.steps.append(ev)
            self._step_times.append(now)
            self.first_votes_s = self.first_votes_s or now - self.t0
        elif isinstance(ev, RunEnd):
            self.end = ev

    @property
    def n(self) -> int:
        return len(self.items)

    @functools.cached_property
    def nouns(self) -> tuple[str, str]:
        """(one, many): what the items are called, e.g. ("clip", "clips") (noun; read once, a GIF is opened)."""
        return noun(self.items, 1), noun(self.items)

    @property
    def phase(self) -> str:
        """loading, before, train, after or ended."""
        if self.end is not None or self.error is not None:
            return "ended"
        if self.start is None:
            return "loading"
        before = self.evals.get("before")
        if "before" in self.start.phases and not self.steps and (before is None or len(before.items) < self.n):
            return "before"  # under way, or cut short by a stop (the run is ending)
        if self.progress is not None and self.progress.phase == "after" or \
                len(self.steps) >= self.start.steps_to_run:
            return "after"
        return "train"

    # ----------------------------------------------------------------- words out

    def take(self, batch: list) -> Redraw:
        """Feed a batch (background.background) and say what to redraw: everything at the start, at an
        evaluation's result and at a step (at most every DRAW_EVERY_S); during an evaluation only
        the votes, at its first image and then at most every DRAW_EVERY_S."""
        for ev in batch:
            self.feed(ev)
        kinds = {type(ev) for ev in batch}
        now, first = time.time(), any(isinstance(ev, Progress) and ev.done == 1 for ev in batch)
        due = now - self._drawn >= DRAW_EVERY_S
        big = bool(kinds & {RunStart, EvalResult})
        figures = "all" if big or StepEvent in kinds and due else "votes" if first or due and Progress in kinds else ""
        self._drawn = now if figures else self._drawn
        return Redraw(RunStart in kinds, figures, big)

    def fail(self, e: BaseException, cfg: TTRVConfig) -> str:
        """Record why the run failed, in words for the person (the traceback goes elsewhere)."""
        msg = str(e) if isinstance(e, (TTRVError, ValueError)) else f"{type(e).__name__}: {e}"
        if is_oom(e) and not isinstance(e, TTRVError):  # outside the engine's explain_oom blocks
            msg = oom_message("running", cfg.n_votes, cfg.n_train, precision=cfg.precision,
                              checkpointing=cfg.gradient_checkpointing)
        self.error = msg
        return msg

    def request_stop(self) -> str:
        """Count a Stop press (engine.adapt's should_stop is the count) and say what it will do."""
        self.stops.append(self.phase)
        return self.stop_message()

    def eval_pace(self) -> float | None:
        """Seconds per image evaluated, measured: the after-evaluation's own pace once it has one,
        else the before-evaluation's (the same work per image)."""
        for phase in ("after", "before"):
            (t0, d0), (t1, d1) = self._pace.get(phase, [(0, 0), (0, 0)])
            if d1 - d0 >= 3:  # the first image carries warm-up: wait for a few
                return (t1 - t0) / (d1 - d0)
        return None

    def step_pace(self) -> float | None:
        """Seconds per step, measured from the steps done (their events' arrival)."""
        t = [self._began.get("train")] + self._step_times
        gaps = [b - a for a, b in zip(t, t[1:]) if a is not None]
        return mean(gaps) if gaps else None

    def left_s(self) -> tuple[float | None, bool]:
        """(seconds left, complete): complete is False while the training time is unknown."""
        phase, pace, step = self.phase, self.eval_pace(), self.step_pace()
        if phase in ("loading", "ended") or pace is None or self.start is None:
            return None, False
        p = self.progress
        steps_left = self.start.steps_to_run - len(self.steps)
        if phase == "before":
            evals = (p.total - p.done) * pace + self.n * pace
            return (evals + steps_left * step, True) if step else (evals, False)
        if phase == "train":
            return ((steps_left * step if step else 0.0) + self.n * pace, step is not None)
        return (p.total - p.done) * pace if p is not None and p.phase == "after" else self.n * pace, True

    def work_done(self) -> float:
        """The fraction of the run's work done (RunStart.work: each evaluation's items and each step)."""
        s, p = self.start, self.progress
        if s is None or not s.work:
            return 0.0
        evaluated = [len(self.evals[ph].items) if ph in self.evals else p.done if p and p.phase == ph else 0
                     for ph in s.phases if ph != "train"]
        return min((sum(evaluated) + len(self.steps)) / s.work, 1.0)

    def status(self) -> tuple[str, float, str]:
        """(line, fraction, kind) as status_html takes them: where the run is and the fraction done, by the
        time measured and left while that is known, else by the work done; once ended, the outcome, its bar
        where the run ended (full only when it finished)."""
        phase, s = self.phase, self.start
        elapsed = time.time() - self.t0
        if phase == "ended":
            msg, kind = self.outcome()
            return msg, 1.0 if kind == "done" else self.work_done(), kind
        if phase == "loading":
            name = f" {display_name(self.model)}" if self.model else ""
            return f"Loading the model{name} … ({elapsed:.0f} s)", 0.0, "info"
        p, many = self.progress, self.nouns[1]
        part = f"{s.phases.index(phase) + 1}/{len(s.phases)} " if phase in s.phases else ""
        left, complete = self.left_s()
        when = "" if left is None else f" · about {duration(left)} left" + (
            "" if complete else " for the evaluations; the training time is known after step 1")
        if phase == "train" and not self.steps:  # the before-evaluation is done, step 1 is under way
            text = (f"{part}Training: step {s.resumed_from + 1} of {s.total_steps} under way · "
                    "the time left is known after it")
        elif phase == "train":
            m = self.steps[-1].metrics
            text = (f"{part}Training: {len(self.steps) + s.resumed_from} of {s.total_steps} steps done"
                    f" · majority share {m['answers/majority_share']:.2f} · votes with no valid answer "
                    f"{m.get('answers/invalid', 0):.0%} · {m['time/step_s']:.1f} s/step{when}")
        else:
            done = p.done if p and p.phase == phase else 0
            what = "the model before training" if phase == "before" else "the adapted model"
            text = f"{part}Evaluating {what}: {done}/{self.n} {many}{when}"
        if phase == "train" and "before" in self.evals and self.evals["before"].reused:
            text += "\n" + REUSED
        if self.stops:
            text += "\n" + self.stop_message()
        frac = elapsed / (elapsed + left) if left is not None and complete else self.work_done()
        return text, min(frac, 1.0), "info"

    def stop_message(self) -> str:
        """What the last Stop press does, truthfully (engine.adapt's stop rules), by the phase it was
        pressed in and the phase the run is in now."""
        pressed = self.stops[-1] if self.stops else self.phase
        one, many = self.nouns
        if pressed == "loading":
            return ("Stopping: a model load cannot be interrupted; the run ends as soon as it is loaded, "
                    "with nothing trained.")
        if pressed == "before":
            return "Stopping the evaluation before training: nothing will be trained, so there will be no adapter."
        if pressed == "train" and self.phase == "after":
            return (f"Training stopped; evaluating the adapted model on all {self.n} {many} "
                    "(press Stop again to skip it).")
        if pressed == "train":
            return (f"Stopping training within one {one}; a step cut short is undone. Then the adapted model is "
                    f"evaluated on all {self.n} {many} (press Stop again to skip that).")
        if pressed == "after":
            return (f"Stopping the evaluation after training: the comparison will cover the {many} evaluated "
                    "so far; the adapter is kept.")
        return ""

    def outcome(self) -> tuple[str, str]:
        """(message, kind) once the run has ended: done, stopped or error."""
        s, steps = self.start, len(self.steps) + (self.start.resumed_from if self.start else 0)
        total = s.total_steps if s else 0
        before, after = self.evals.get("before"), self.evals.get("after")
        took = f" in {self.end.seconds:.0f} s" if self.end else ""
        one, many = self.nouns
        if self.end is not None and not self.end.stopped:
            kind, msg = "done", f"Done: {steps} steps{took}."
        elif self.end is not None:
            kind = "stopped"
            if steps == 0:
                got = f"{len(before.items)} of {self.n} {many} evaluated" if before else f"no {one} evaluated"
                msg = f"Stopped before training ({got}): nothing was trained, so there is no adapter."
            else:
                msg = f"Stopped after step {steps} of {total}" if steps < total else f"All {total} steps done"
                if after is not None and len(after.items) < self.n:
                    msg += (f"; the evaluation after training was stopped at {len(after.items)} of {self.n} {many}, "
                            "and the comparison covers those.")
                elif after is not None:
                    msg += f"; the adapted model was evaluated on all {self.n} {many}."
                msg += f" The adapter holds {steps} step(s) (downloads)."
        else:
            kind, msg = "error", f"Run failed: {self.error}"
            if self.evals:
                msg += f"\nThe results so far ({steps} step(s)) are below and in the downloads."
        if self.end is not None and self.end.guard:
            msg += "\n" + self.end.guard[0].upper() + self.end.guard[1:] + "."
        if before is not None and before.reused:
            msg += "\n" + REUSED
        return msg, kind

    # ----------------------------------------------------------------- figures

    def followed(self, choice: str | None) -> str | None:
        """The image id the histogram shows: a chosen one, or FIRST (None until known)."""
        if choice and choice != FIRST:
            return choice
        if self.steps and self.steps[0].items:
            return self.steps[0].items[0].item_id
        if self.start and self.start.mode == "single":
            return self.start.train_ids[0]
        return None

    def figures(self, choice: str | None = None):
        """(histogram, entropy, reward) as plotly figures."""
        b, a = self.evals.get("before"), self.evals.get("after")
        item = self.followed(choice)
        if item is not None:
            snaps = plots.snapshots(self.steps, item, b, a, self.items)
        elif self.latest is not None:  # before step 1: the image evaluated last
            it = next((i for i in self.items if i.id == self.latest.item_id), None)
            snaps = [plots.evaluating(self.latest, it, "before training" if b else "before (evaluating)")]
        else:
            snaps = []
        wait = "the evaluation before training comes first" if self.phase == "before" else "waiting for the first step"
        return (plots.histogram(snaps, title="Votes"), plots.entropy(self.steps, b, a, waiting=wait),
                plots.reward(self.steps, b, a, waiting=wait))


def duration(s: float) -> str:
    """
    >>> duration(8.2), duration(75), duration(120), duration(3 * 3600)
    ('8 s', '1 min 15 s', '2 min', '180 min')
    """
    s = round(s)
    if s < 60:
        return f"{s} s"
    if s < 600 and s % 60:
        return f"{s // 60} min {s % 60} s"
    return f"{round(s / 60)} min"


def display_name(model: str) -> str:
    """The model as the page names it: a bundled demo by its menu label, a Hub id as it is, a local
    folder by its name (model_card.model_name; where it lies is this machine's business).

    >>> display_name("Qwen/Qwen2.5-VL-3B-Instruct"), display_name("/home/me/models/my-vlm")
    ('Qwen/Qwen2.5-VL-3B-Instruct', 'my-vlm')
    """
    demo = demos.by_model(model)
    return demo.label if demo is not None else model_card.model_name(model)


def noun(items: Sequence[Item], count: int = 2) -> str:
    """What `count` of these items are called: clips when all are videos (Item.video), images when
    none is, items when they are mixed."""
    kinds = {it.video for it in items}
    word = "clip" if kinds == {True} else "item" if len(kinds) > 1 else "image"
    return word if count == 1 else word + "s"


def refusal(text: str, shown: LiveRun | None) -> str:
    """The status of a run refused or failed before it started: why, and that nothing was run; the
    results on the page are the last run's only where there are some (`shown`, the session's)."""
    kept = shown is not None and bool(shown.evals)
    return f"{text}\nNothing was run" + ("; the results below are still the last run's." if kept else ".")


COLORS = {"info": "#3b6fd8", "done": "#2a9d54", "error": "#c0392b", "stopped": "#e07b24"}  # by kind: edge, bar


def status_html(text: str, frac: float | None = None, kind: str = "info") -> str:
    """The status line as the page shows it: a coloured edge by kind, a progress bar of that colour, the text."""
    bar = "" if frac is None else (f'<progress value="{frac:.4f}" max="1" style="width:100%;height:14px;'
                                   f'margin-bottom:4px;accent-color:{COLORS[kind]}"></progress>')
    return (f'<div id="ttrv-status" data-kind="{kind}" style="border-left:4px solid {COLORS[kind]};'
            f'padding:6px 10px">{bar}<div style="white-space:pre-line">{html.escape(text)}</div></div>')
