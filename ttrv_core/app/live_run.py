"""One run as a person watches it: fed the engine's events, it says where the run is,
how long is left, what Stop will do, and how the run ended, and draws its figures.

Time left is measured, never guessed: the evaluation's pace comes from the images
evaluated so far, a step's from the steps done. Before the first step the training
time is unknown, and the status says so.
Gradio-free: the app shows these strings (status_html) and figures.
"""
from __future__ import annotations

import html
import time
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean

from ttrv_core.app import plots
from ttrv_core.config import TTRVConfig
from ttrv_core.errors import TTRVError, is_oom, oom_message
from ttrv_core.events import EvalResult, ItemEval, Progress, RunEnd, RunStart, StepEvent
from ttrv_core.inputs.dataset import Item

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
    rows: str = "all"                              # the table's rows shown: all or one kind of change (compare.SHOW)
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

    def status(self) -> tuple[str, float]:
        """A line on where the run is, and the fraction done (by the time measured and left)."""
        phase, s = self.phase, self.start
        elapsed = time.time() - self.t0
        if phase == "ended":
            return self.outcome()[0], 1.0
        if phase == "loading":
            return f"Loading the model … ({elapsed:.0f} s)", 0.0
        p = self.progress
        left, complete = self.left_s()
        when = "" if left is None else f" · about {_duration(left)} left" + (
            "" if complete else " for the evaluations; the training time is known after step 1")
        if phase == "before":
            done = p.done if p else 0
            text = f"Evaluating the model before training: {done}/{self.n} images{when}"
        elif phase == "train":
            text = f"Training: {len(self.steps) + s.resumed_from} of {s.total_steps} steps done"
            if self.steps:
                m = self.steps[-1].metrics
                text += (f" · majority share {m['answers/majority_share']:.2f} · votes with no valid answer "
                         f"{m.get('answers/invalid', 0):.0%} · {m['time/step_s']:.1f} s/step")
            text += when
            if "before" in self.evals and self.evals["before"].reused:
                text += "\n" + REUSED
        else:
            done = p.done if p and p.phase == "after" else 0
            text = f"Evaluating the adapted model: {done}/{self.n} images{when}"
        if self.stops:
            text += "\n" + self.stop_message()
        frac = elapsed / (elapsed + left) if left is not None else 0.0
        return text, min(frac, 1.0)

    def stop_message(self) -> str:
        """What the last Stop press does, truthfully (engine.adapt's stop rules), by the phase it was
        pressed in and the phase the run is in now."""
        pressed = self.stops[-1] if self.stops else self.phase
        if pressed == "loading":
            return ("Stopping: a model load cannot be interrupted; the run ends as soon as it is loaded, "
                    "with nothing trained.")
        if pressed == "before":
            return "Stopping the evaluation before training: nothing will be trained, so there will be no adapter."
        if pressed == "train" and self.phase == "after":
            return (f"Training stopped; evaluating the adapted model on all {self.n} images "
                    "(press Stop again to skip it).")
        if pressed == "train":
            return (f"Stopping training within one image; a step cut short is undone. Then the adapted model is "
                    f"evaluated on all {self.n} images (press Stop again to skip that).")
        if pressed == "after":
            return ("Stopping the evaluation after training: the comparison will cover the images evaluated "
                    "so far; the adapter is kept.")
        return ""

    def outcome(self) -> tuple[str, str]:
        """(message, kind) once the run has ended: done, stopped or error."""
        s, steps = self.start, len(self.steps) + (self.start.resumed_from if self.start else 0)
        total = s.total_steps if s else 0
        before, after = self.evals.get("before"), self.evals.get("after")
        took = f" in {self.end.seconds:.0f} s" if self.end else ""
        if self.end is not None and not self.end.stopped:
            msg = f"Done: {steps} steps{took}."
            kind = "done"
        elif self.end is not None:
            kind = "stopped"
            if steps == 0:
                got = f"{len(before.items)} of {self.n} images evaluated" if before else "no image evaluated"
                msg = f"Stopped before training ({got}): nothing was trained, so there is no adapter."
            else:
                msg = f"Stopped after step {steps} of {total}" if steps < total else f"All {total} steps done"
                if after is not None and len(after.items) < self.n:
                    msg += (f"; the evaluation after training was stopped at {len(after.items)} of {self.n} images, "
                            "and the comparison covers those.")
                elif after is not None:
                    msg += f"; the adapted model was evaluated on all {self.n} images."
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


def _duration(s: float) -> str:
    """
    >>> _duration(8.2), _duration(75), _duration(120), _duration(3 * 3600)
    ('8 s', '1 min 15 s', '2 min', '180 min')
    """
    s = round(s)
    if s < 60:
        return f"{s} s"
    if s < 600 and s % 60:
        return f"{s // 60} min {s % 60} s"
    return f"{round(s / 60)} min"


def status_html(text: str, frac: float | None = None, kind: str = "info") -> str:
    """The status line as the page shows it: a coloured edge by kind, a progress bar, the text."""
    colors = {"info": "#3b6fd8", "done": "#2a9d54", "error": "#c0392b", "stopped": "#e07b24"}
    bar = "" if frac is None else (f'<progress value="{frac:.4f}" max="1" '
                                   'style="width:100%;height:14px;margin-bottom:4px"></progress>')
    return (f'<div id="ttrv-status" data-kind="{kind}" style="border-left:4px solid {colors[kind]};'
            f'padding:6px 10px">{bar}<div style="white-space:pre-line">{html.escape(text)}</div></div>')
