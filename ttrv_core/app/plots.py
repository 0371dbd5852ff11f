"""Plotly figures of a run, as pure functions of its events.

    histogram   answer frequencies of one image (or of each step's first image), before training, at
                each step that sampled it, and after; a slider over these snapshots (the latest shown),
                the image, moment and question above. Sideways bars: a long reply reads as a label.
                Given the items, a letter shows its option text ("B · 7"), a reply that is no valid
                answer is red, ✗; open answers (bars: one normalised form each) also show their soft
                votes (similarity.soft_counts) where these differ from the votes
    entropy     answer entropy H / ln N per step (N votes; 0 = all agree): the
                mean, and each image. Not the paper's H / ln M, which can rise
                while the answers sharpen (events.py)
    reward      a panel per unit: the mean reward (r1 - alpha·H_norm can be < 0);
                shares 0..1: majority share, votes with no valid answer, accuracy
                where the user gave answers (evaluation only, never a reward)

Inputs are the engine's events (events.py): a list of StepEvent and the 'before'/'after' EvalResult where
they exist. Nothing here imports gradio; the app, a notebook or a script can call these on a live or a
logged run (`load_events` reads a run folder's events.jsonl back).
"""
from __future__ import annotations

import html
import json
import textwrap
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import plotly.graph_objects as go

from ttrv_core.events import EvalResult, ItemEval, ItemVotes, StepEvent
from ttrv_core.inputs.dataset import Item
from ttrv_core.tasks.answers import is_valid
from ttrv_core.tasks.prompts import LETTERS
from ttrv_core.tasks.similarity import soft_counts

FOLLOW = None
"""`histogram(item_id=FOLLOW)`: at each step, show the first image that step trained on."""

BLUE, GREEN, GREY, ORANGE, PURPLE, RED = "#3b6fd8", "#2a9d54", "#b8bcc6", "#e07b24", "#8a4fd0", "#c0392b"
OTHER = "(other)"
LABEL, ID = 20, 24
"""At most this many characters in an answer's label and of an image id in the histogram's title:
a phone shows a bar beside such a label, and ~40 characters of a title."""
# plotly_white's look, set by hand: applying a named template deep-copies it on every update_layout, most of a live
# redraw's time (bench/RESULTS.md). On a phone legends above the plot run into the title: under it; the toolbar right.
_LAYOUT = dict(template="none", paper_bgcolor="white", plot_bgcolor="white", font=dict(color="#2a3f5f"),
               height=360, margin=dict(l=50, r=30, t=40, b=40), title=dict(x=0.01, xanchor="left", font_size=14),
               legend=dict(orientation="h", yanchor="top", y=-0.14, x=0), modebar=dict(orientation="v"))
_GRID = dict(gridcolor="#ebf0f8", zerolinecolor="#ebf0f8", linecolor="#ebf0f8")


@dataclass(frozen=True)
class Snapshot:
    """One image's vote counts at one moment of the run."""
    label: str                 # "before", "step 3", "after"
    item_id: str
    counts: dict[str, int]     # answer -> votes
    reference: str | None = None
    task: str | None = None    # known: replies that are not a valid answer are marked
    options: tuple[str, ...] = ()
    question: str = ""


def snapshots(steps: Sequence[StepEvent], item_id: str | None = FOLLOW, before: EvalResult | None = None,
              after: EvalResult | None = None, items: Sequence[Item] = ()) -> list[Snapshot]:
    """The snapshots the histogram slides over, in run order.

    With an item id: its eval votes before, every step that sampled it, after.
    With FOLLOW: each step's first image (the eval before/after of the first/last one).
    items: the run's items, for their question, task format and options (labels, validity).

    >>> st = [StepEvent(1, 2, [ItemVotes("a.png", {"7": 3, "1": 1}, "7", .75, .8, .6)])]
    >>> [(s.label, s.item_id, s.counts) for s in snapshots(st)]
    [('step 1', 'a.png', {'7': 3, '1': 1})]
    """
    refs = _references(before, after)
    if item_id is FOLLOW:
        picks = [(f"step {s.step}", s.items[0]) for s in steps if s.items]
        first = picks[0][1].item_id if picks else (before.items[0].item_id if before and before.items else None)
        last = picks[-1][1].item_id if picks else first
    else:
        picks = [(f"step {s.step}", iv) for s in steps for iv in s.items if iv.item_id == item_id]
        # single-example mode repeats one image within a step: keep one snapshot per step
        picks = [p for i, p in enumerate(picks) if i == 0 or p[0] != picks[i - 1][0]]
        first = last = item_id
    by_id = {it.id: it for it in items}

    def snap(label: str, item: str, counts: dict[str, int]) -> Snapshot:
        it = by_id.get(item)
        return Snapshot(label, item, counts, refs.get(item), it.task if it else None, it.options if it else (),
                        it.question if it else "")

    out = []
    if (ev := _eval_of(before, first)) is not None:
        out.append(snap("before", first, ev.counts))
    out += [snap(label, iv.item_id, iv.counts) for label, iv in picks]
    if (ev := _eval_of(after, last)) is not None:
        out.append(snap("after", last, ev.counts))
    return out


def evaluating(ev: ItemEval, item: Item | None = None, label: str = "before (evaluating)") -> Snapshot:
    """The votes of one image just evaluated: what a live view shows before any step."""
    return Snapshot(label, ev.item_id, ev.counts, ev.reference, item.task if item else None,
                    item.options if item else (), item.question if item else "")


def histogram(snaps: Sequence[Snapshot], title: str = "Answer frequencies", top: int = 12,
              waiting: str = "waiting for the first votes") -> go.Figure:
    """Sideways bars of vote shares per answer; a slider over the snapshots, the last one shown.

    Each snapshot shows its `top` most voted answers (the rest as one "(other)" bar), in one order
    kept across the slider so that bars keep their place. The reference answer (the user's answers
    column: evaluation only) is green; where the task is known, a reply that is not a valid answer is
    red. Above the bars: the image and the moment, the question (in full on hover), what the colours
    mean. Labels are cut to LABEL characters ("✗ " and a digit that parts two cut labels included).

    >>> fig = histogram([Snapshot("step 1", "a.png", {"7": 3, "1": 1}, "7")])
    >>> [round(x, 2) for x in fig.data[0].x], list(fig.data[0].y), fig.data[0].marker.color
    ([0.75, 0.25], ['7', '1'], ('#2a9d54', '#3b6fd8'))
    """
    fig = go.Figure()
    if not snaps:
        return _empty(fig, title, waiting)
    last = snaps[-1]
    names = _labels(_answer_order(snaps), width=LABEL - 4, options=last.options if last.task == "choice" else ())
    invalid = {a for s in snaps if s.task for a in s.counts if not is_valid(s.task, a, s.options)}
    for a in invalid:
        names[a] = "✗ " + names[a]
    # what the colours mean, on at most two short lines (a phone is ~60 characters wide here)
    other = ["blue: an answer", "red ✗: not a valid answer" if invalid else "",
             "orange ◆: soft votes" if any(_soft(s) for s in snaps) else "",
             "grey: the rest" if any(len(s.counts) > top for s in snaps) else ""]
    key = ["green: the reference answer (answers column)" if any(s.reference for s in snaps) else "",
           " · ".join(k for k in other if k)]
    key = [f"<span style='font-size:11px;color:#666'>{k}</span>" for k in key if k]
    views, owner = [], []  # the layout of each snapshot; owner: each trace's snapshot (the slider shows its traces)
    for i, s in enumerate(snaps):
        n = sum(s.counts.values()) or 1
        xs = sorted(s.counts, key=lambda a: (-s.counts[a], names[a]))
        shown, rest = sorted(xs[:top], key=list(names).index), xs[top:]
        y, x = [names[a] for a in shown], [s.counts[a] for a in shown]
        if rest:
            y, x = y + [OTHER], x + [sum(s.counts[a] for a in rest)]
        # the question on a phone's line; where it or the id is cut, in full in the bars' hover ('<' reads as a tag)
        q, image = " ".join(s.question.split()), _cut(s.item_id, ID, left=True)
        cut = q != _cut(q, 54) or image != s.item_id
        full = "<br>".join(["", "", *textwrap.wrap(html.escape(f"{s.item_id}: {q}", quote=False), 48)]) * cut
        fig.add_bar(x=[c / n for c in x], y=y, orientation="h", name=s.label, visible=i == len(snaps) - 1,
                    customdata=[[c, a, full] for c, a in zip(x, shown + [OTHER])],
                    marker_color=[GREEN if a == s.reference else RED if a in invalid else BLUE for a in shown]
                    + [GREY] * bool(rest),
                    hovertemplate="%{customdata[1]}: %{customdata[0]} votes (%{x:.0%})%{customdata[2]}<extra></extra>")
        owner.append(i)
        if soft := _soft(s):  # phrase answers: each form's soft vote, its votes plus partial credit (similarity.py)
            fig.add_scatter(x=[soft[a] / n for a in shown], y=y[:len(shown)], mode="markers", name="soft votes",
                            marker=dict(symbol="diamond", size=10, color=ORANGE), visible=i == len(snaps) - 1,
                            hovertemplate="soft votes: %{x:.0%} (token F1 with every vote)<extra></extra>")
            owner.append(i)
        line = html.escape(_cut(q, 54), quote=False)
        asked = [f"<span style='font-size:12px;color:#444'>“{line}”</span>"] if q else []
        views.append({"title.text": "<br>".join([f"{title}: {image}, {s.label} ({n} votes)", *asked, *key]),
                      "yaxis.categoryarray": y})
    top_margin = 24 + 18 * (max(v["title.text"].count("<br>") for v in views) + 1)  # 18 px a line (2 or more:
    # plotly sets a title of several lines 10 px higher than one of one, hence its pad)
    height = top_margin + 50 + max(180, 24 * max(len(v["yaxis.categoryarray"]) for v in views))  # ~24 px a bar
    fig.update_layout(**_LAYOUT | dict(height=height, margin=dict(l=50, r=30, t=top_margin, b=50),
                                       title=dict(text=views[-1]["title.text"], y=1.0, yanchor="top", pad=dict(t=18),
                                                  x=0.01, xanchor="left", font_size=14)), showlegend=False,
                      yaxis=dict(**_GRID, title=None, type="category", categoryorder="array", autorange="reversed",
                                 categoryarray=views[-1]["yaxis.categoryarray"], automargin=True, tickangle=0),
                      xaxis=dict(**_GRID, title="share of votes", range=[0, 1], tickformat=".0%", tickangle=0,
                                 nticks=6, automargin=True))
    if len(snaps) > 1:  # the slider 70 px under the plot, clear of the share axis
        fig.update_layout(height=height + 80, margin=dict(l=50, r=30, t=top_margin, b=130), sliders=[dict(
            active=len(snaps) - 1, currentvalue=dict(visible=False), y=-70 / (height - top_margin - 50),
            yanchor="top", pad=dict(t=0), steps=[dict(label=s.label, method="update", args=[
                {"visible": [j == i for j in owner]}, views[i]]) for i, s in enumerate(snaps)])])
    return fig


def _cut(text: str, width: int, left: bool = False) -> str:
    r"""One line of at most `width` characters, cut at its end or its start (left: a path's tail names the file).

    >>> _cut("What  digit is\nshown?", 12), _cut("photos/2024/IMG_0001.jpg", 13, left=True)
    ('What digit…', '…IMG_0001.jpg')
    """
    text = " ".join(text.split())
    if len(text) <= width:
        return text
    return "…" + text[-(width - 1):].lstrip() if left else text[:width - 1].rstrip() + "…"


def _soft(s: Snapshot) -> dict[str, float]:
    """An open answer's soft votes (similarity.soft_counts), where some answer gets partial credit:
    else ({}) they equal the bars (one-word answers, as the digits) and would only hide them."""
    if s.task != "open":
        return {}
    soft = soft_counts([a for a, c in s.counts.items() for _ in range(c)])
    return soft if any(abs(soft[a] - c) > 1e-9 for a, c in s.counts.items()) else {}


def entropy(steps: Sequence[StepEvent], before: EvalResult | None = None,
            after: EvalResult | None = None, waiting: str = "waiting for the first step") -> go.Figure:
    """Entropy of the answers per step, H / ln N over the N votes: mean line, one dot per image.

    Eval entropies (mean over all images) are drawn at step 0 (before) and
    after the last step (after), where they exist.

    >>> st = [StepEvent(1, 1, [ItemVotes("a", {"1": 2}, "1", 1.0, 0.0, 1.0)], {"answers/entropy": 0.0})]
    >>> [t.name for t in entropy(st).data]
    ['each image', 'mean']
    """
    fig = go.Figure()
    if not steps and before is None:
        return _empty(fig, "Entropy of the votes (0 = all agree)", waiting)
    xs = [s.step for s in steps for _ in s.items]
    fig.add_scatter(x=xs, y=[iv.entropy for s in steps for iv in s.items], mode="markers", name="each image",
                    marker=dict(color=GREY, size=6), text=[iv.item_id for s in steps for iv in s.items],
                    hovertemplate="step %{x} · %{text}: %{y:.2f}<extra></extra>")
    fig.add_scatter(x=[s.step for s in steps], y=[s.metrics.get("answers/entropy") for s in steps],
                    mode="lines+markers", name="mean", line=dict(color=BLUE, width=3))
    _eval_points(fig, steps, before, after, "eval/entropy", "mean over all images (eval)", BLUE)
    fig.update_layout(**_LAYOUT, title_text="Entropy of the votes (0 = all agree)",
                      xaxis=_step_axis(steps), yaxis=dict(**_GRID, title="H / ln N (N votes)", range=[-0.03, 1.03]))
    return fig


def reward(steps: Sequence[StepEvent], before: EvalResult | None = None,
           after: EvalResult | None = None, waiting: str = "waiting for the first step") -> go.Figure:
    """A panel per unit on one step axis. Above, the mean reward (its own scale). Below, shares 0..1:
    majority share, votes with no valid answer and accuracy (where answers exist) per step; the eval
    points greedy accuracy and greedy replies with no valid answer, before (step 0) and after.

    >>> st = [StepEvent(1, 1, [], {"reward/mean": .5, "answers/majority_share": .6, "acc/majority": 1.0})]
    >>> [(t.name, t.yaxis) for t in reward(st).data]
    [('reward (mean)', 'y'), ('majority share', 'y2'), ('accuracy: majority of the votes', 'y2')]
    """
    fig = go.Figure()
    if not steps and before is None:
        return _empty(fig, "Reward, agreement, validity", waiting)
    x = [s.step for s in steps]
    lines = [("reward/mean", "reward (mean)", BLUE, "solid", "y"),
             ("answers/majority_share", "majority share", ORANGE, "solid", "y2"),
             ("answers/invalid", "votes with no valid answer", RED, "dashdot", "y2"),
             ("acc/majority", "accuracy: majority of the votes", GREEN, "dash", "y2"),
             ("acc/single", "accuracy: single vote", PURPLE, "dot", "y2")]
    for key, name, color, dash, axis in lines:
        if any(key in s.metrics for s in steps):
            fig.add_scatter(x=x, y=[s.metrics.get(key) for s in steps], mode="lines+markers", name=name,
                            line=dict(color=color, dash=dash, width=2.5), xaxis=axis.replace("y", "x"), yaxis=axis,
                            hovertemplate=f"step %{{x}}: %{{y:{'.3f' if axis == 'y' else '.0%'}}}<extra>{name}</extra>")
    _eval_points(fig, steps, before, after, "eval/greedy_acc", "accuracy: greedy answer (eval)", GREEN, "y2")
    _eval_points(fig, steps, before, after, "eval/greedy_invalid", "greedy replies with no valid answer (eval)",
                 RED, "y2")
    fig.update_layout(**_LAYOUT | dict(height=460), title_text="Reward, agreement, validity",
                      xaxis=dict(**_step_axis(steps) | dict(showticklabels=False), anchor="y"),
                      xaxis2=dict(**_step_axis(steps), anchor="y2", matches="x"),
                      yaxis=dict(**_GRID, title="reward", domain=[0.58, 1], automargin=True),
                      yaxis2=dict(**_GRID, title="share", domain=[0, 0.5], range=[-0.03, 1.03], tickformat=".0%",
                                  automargin=True))
    return fig


def load_events(run_folder: Path) -> tuple[list[StepEvent], dict[str, EvalResult]]:
    """Steps and evals back from a run folder's events.jsonl (for figures of a finished run)."""
    steps, evals = [], {}
    for line in (Path(run_folder) / "events.jsonl").read_text(encoding="utf-8").splitlines():
        d = json.loads(line)
        if d.get("type") == "step":
            steps.append(StepEvent(d["step"], d["total_steps"], [ItemVotes(**iv) for iv in d["items"]], d["metrics"]))
        elif d.get("type") == "eval":
            evals[d["phase"]] = EvalResult(d["phase"], [ItemEval(**e) for e in d["items"]], d["metrics"])
    return steps, evals


# --------------------------------------------------------------------------- helpers

def _eval_of(ev: EvalResult | None, item_id: str | None) -> ItemEval | None:
    if ev is None or item_id is None:
        return None
    return next((e for e in ev.items if e.item_id == item_id), None)


def _references(*evals: EvalResult | None) -> dict[str, str]:
    return {e.item_id: e.reference for ev in evals if ev for e in ev.items if e.reference is not None}


def _answer_order(snaps: Sequence[Snapshot]) -> list[str]:
    """Answers by total votes over all snapshots, so bars keep their place as the slider moves."""
    total = Counter()
    for s in snaps:
        total.update(s.counts)
    return sorted(total, key=lambda a: (-total[a], a))


def _labels(answers: Sequence[str], width: int = 18, options: Sequence[str] = ()) -> dict[str, str]:
    """answer -> a short, unique axis label; empty answers are votes too and need a visible name;
    with options, an option letter shows its text.

    >>> list(_labels(["7", "", "a very long answer indeed", "a very long answer, again"]).values())
    ['7', '(empty)', 'a very long answer…', 'a very long answer…2']
    >>> list(_labels(["B", "it is 7"], options=["3", "7"]).values())
    ['B · 7', 'it is 7']
    """
    out: dict[str, str] = {}
    for a in answers:
        name = a.strip() or "(empty)"
        if a in tuple(LETTERS[:len(options)]):  # a tuple: "" is in every string
            name = f"{a} · {options[LETTERS.index(a)]}"
        name = _cut(name, width + 1)
        base, k = name, 1
        while name in out.values():
            k += 1
            name = f"{base}{k}"
        out[a] = name
    return out


def _eval_points(fig: go.Figure, steps, before, after, key: str, name: str, color: str, yaxis: str = "y") -> None:
    pts = [(0, before), ((steps[-1].step if steps else 0) + 1, after)]
    pts = [(x, ev.metrics[key]) for x, ev in pts if ev is not None and key in ev.metrics]
    if pts:
        fig.add_scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="markers", name=name,
                        xaxis=yaxis.replace("y", "x"), yaxis=yaxis,
                        marker=dict(color=color, symbol="diamond-open", size=12, line=dict(width=2)),
                        hovertemplate="%{y:.3f}<extra>" + name + "</extra>")


def _step_axis(steps, most: int = 6) -> dict:
    """Steps 1..K, room for the eval points at 0 ('before') and K + 1 ('after'); no title (on a phone it runs
    into the legend: the first step's label says it). At most `most` labels, level, a round stride apart, none
    within half a stride of 'after': else plotly turns them on end, and a phone's plot cuts them.

    >>> _step_axis([StepEvent(2, 2, [])])["ticktext"], _step_axis([StepEvent(20, 20, [])])["ticktext"]
    (['before', 'step 1', '2', 'after'], ['before', 'step 5', '10', '15', 'after'])
    """
    last = steps[-1].step if steps else 0
    every = next(k * 10 ** e for e in range(9) for k in (1, 2, 5) if k * 10 ** e * (most - 1) >= last + 1)
    ticks = [0] + [k for k in range(every, last + 1, every) if last + 1 - k >= every / 2] + [last + 1]
    text = ["before"] + [f"step {k}" if j == 0 else str(k) for j, k in enumerate(ticks[1:-1])] + ["after"]
    return dict(**_GRID, range=[-0.5, last + 1.5], tickvals=ticks, ticktext=text, tickangle=0, automargin=True)


def _empty(fig: go.Figure, title: str, note: str) -> go.Figure:
    fig.update_layout(**_LAYOUT, title_text=title, xaxis=dict(visible=False), yaxis=dict(visible=False),
                      annotations=[dict(text=note, showarrow=False, font=dict(size=14, color="#888"))])
    return fig
