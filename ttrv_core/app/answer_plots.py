"""Plotly figures of what a run did to the answers across images, as pure functions of its two
evaluations (and the items, for their task and options). Beside plots.py, which follows the votes
of one image and the steps; the same look.

    shares      label-free: per answer, the share of the images whose greedy reply names it
                (content.named_answer) before and after, and its share of the base model's
                valid sampled votes (content.vote_shares, the before-evaluation's). TTRV
                rewards what the model already says most: an answer whose after bar towers
                over its votes bar was amplified (content.amplified; `warnings` says it in words)
    confusion   with answers (multiple choice, classification): the reference (rows) against
                the answer the greedy reply names (columns; "(none)": it names no option), each
                cell the number of images, each row's recall in its label; after adaptation,
                with a button for before

Multiple-choice answers are labelled with their option text ("J · 9") where the items share their
options. Nothing here imports gradio.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import plotly.graph_objects as go

from ttrv_core.app.plots import _GRID, _LAYOUT, BLUE, GREY, ORANGE, OTHER, _empty, _labels
from ttrv_core.events import EvalResult
from ttrv_core.inputs.dataset import Item
from ttrv_core.method import content
from ttrv_core.tasks.prompts import LETTERS

NONE = "(none)"
"""The confusion's column for greedy replies that name no option."""
SHARES_TITLE = "Share of images per answer"
CONFUSION_TITLE = "Recall per class"
"""Short titles: a phone shows about 40 characters of a title (and the confusion's buttons beside it)."""


def _common_options(items: Sequence[Item]) -> tuple[str, ...]:
    """The options every item shares (multiple choice, classification), else ()."""
    opts = {it.options for it in items if it.task != "open"}
    return next(iter(opts)) if len(opts) == 1 and all(it.task != "open" for it in items) else ()


def _order(items: Sequence[Item], series: Sequence[dict[str, float]], top: int) -> list[str]:
    """The answers on the x axis: every option (in option order) where the items share their options;
    else the `top` answers by their largest share in any series."""
    opts = _common_options(items)
    if opts and items[0].task == "choice":
        return list(LETTERS[:len(opts)])
    if opts:
        return list(opts)
    seen = {a for s in series for a in s}
    return sorted(seen, key=lambda a: (-max(s.get(a, 0.0) for s in series), a))[:top]


def shares(items: Sequence[Item], before: EvalResult | None, after: EvalResult | None, top: int = 12,
           waiting: str = "waiting for the evaluation before training") -> go.Figure:
    """Three bars per answer: its share of the images before and after (greedy reply, the answer it
    names, among the images that name one) and its share of the base model's valid votes; a dotted
    line at 1/K (K options: every answer as common). Open answers: the `top` most common, the rest
    as one (other) bar.

    >>> it = Item("a.png", None, "q", "choice", ("3", "7"), "3")
    >>> from ttrv_core.events import ItemEval
    >>> b = EvalResult("before", [ItemEval("a.png", "", "It is 3.", "A", 1, 0, {"A": 3, "B": 1}, named="A")], {})
    >>> [(t.name, list(t.x), list(t.y)) for t in shares([it], b, None).data if t.type == "bar"]
    [('before', ['A · 3', 'B · 7'], [1.0, 0.0]), ("base model's valid votes", ['A · 3', 'B · 7'], [0.75, 0.25])]
    """
    fig = go.Figure()
    if before is None and after is None:
        return _empty(fig, SHARES_TITLE, waiting)
    series = [(name, color, s) for name, color, s in (
        ("before", GREY, content.shares([e.named for e in before.items]) if before else None),
        ("after", BLUE, content.shares([e.named for e in after.items]) if after else None),
        ("base model's valid votes", ORANGE, content.vote_shares(items, before.items) if before else None))
        if s is not None]
    answers = _order(items, [s for _, _, s in series], top)
    opts = _common_options(items)
    names = _labels(answers, options=opts if items and items[0].task == "choice" else ())
    for name, color, s in series:
        rest = sum(v for a, v in s.items() if a not in names)
        x = [names[a] for a in answers] + [OTHER] * (rest > 1e-9)
        y = [s.get(a, 0.0) for a in answers] + [rest] * (rest > 1e-9)
        what = "of the valid votes" if name.startswith("base") else f"of the images, {name}"
        fig.add_bar(x=x, y=y, name=name, marker_color=color, hovertemplate=f"%{{x}}: %{{y:.0%}} {what}<extra></extra>")
    k = content.answer_count(items)
    if k:  # the line, and a legend entry that names it (a label on the line runs into the bars)
        chance = dict(color="#888", dash="dot", width=1)
        fig.add_hline(y=1 / k, line=chance)
        fig.add_scatter(x=[None], y=[None], mode="lines", line=chance, name=f"1/K = 1/{k}: all equally common")
    fig.update_layout(**_LAYOUT, title_text=SHARES_TITLE, barmode="group",
                      xaxis=dict(**_GRID, type="category", automargin=True),
                      yaxis=dict(**_GRID, title="share", tickformat=".0%", rangemode="tozero"))
    return fig


def warnings(items: Sequence[Item], before: EvalResult | None, after: EvalResult | None) -> list[str]:
    """One plain sentence per amplified answer (content.amplified_answers), a letter with its option text."""
    if before is None or after is None:
        return []
    opts = _common_options(items)
    names = _labels(list(LETTERS[:len(opts)]), options=opts) if opts and items[0].task == "choice" else {}
    return [str(replace(a, answer=names.get(a.answer, a.answer)))
            for a in content.amplified_answers(items, before, after)]


def counts(items: Sequence[Item], ev: EvalResult, classes: Sequence[str]) -> list[list[int]]:
    """(C, C + 1) images: row = reference class, column = the answer named (the last: none of the classes).

    >>> from ttrv_core.events import ItemEval
    >>> it = [Item(f"{i}", None, "q", "choice", ("3", "7"), a) for i, a in enumerate("337")]
    >>> ev = EvalResult("after", [ItemEval(i.id, "", "", "", 1, 0, {}, i.reference, named=n)
    ...                           for i, n in zip(it, ["A", "B", ""])], {})
    >>> counts(it, ev, ["A", "B"])
    [[1, 1, 0], [0, 0, 1]]
    """
    col = {c: j for j, c in enumerate(classes)}
    m = [[0] * (len(classes) + 1) for _ in classes]
    for e in ev.items:
        if e.reference in col:
            m[col[e.reference]][col.get(e.named, len(classes))] += 1
    return m


def confusion(items: Sequence[Item], before: EvalResult | None, after: EvalResult | None,
              waiting: str = "waiting for the evaluation before training") -> go.Figure:
    """Heatmap of reference vs named answer (`counts`), after (before while there is no after);
    a button switches to before. Row labels carry the class's recall: its diagonal cell over its row."""
    fig = go.Figure()
    labeled = [it for it in items if it.reference is not None]
    if not labeled or any(it.task == "open" for it in labeled):
        return _empty(fig, CONFUSION_TITLE, "needs answers to multiple-choice or class questions")
    if before is None and after is None:
        return _empty(fig, CONFUSION_TITLE, waiting)
    opts = _common_options(labeled)
    choice = labeled[0].task == "choice"
    if opts:
        classes = list(LETTERS[:len(opts)]) if choice else list(opts)
    else:
        classes = sorted({it.reference for it in labeled})
    names = _labels(classes, options=opts if choice else ())
    cols = [names[c] for c in classes] + [NONE]
    evals = [(p, ev) for p, ev in (("after", after), ("before", before)) if ev is not None]
    ticks = {}
    for i, (phase, ev) in enumerate(evals):
        m = counts(labeled, ev, classes)
        ticks[phase] = [f"{names[c]} · {row[j] / sum(row):.2f}" if sum(row) else names[c]
                        for j, (c, row) in enumerate(zip(classes, m))]
        fig.add_heatmap(z=m, x=cols, y=ticks[phase] if i == 0 else ticks[evals[0][0]], name=phase,
                        visible=i == 0, text=[[str(v) if v else "" for v in row] for row in m],
                        texttemplate="%{text}", colorscale=[[0, "#ffffff"], [1, BLUE]], zmin=0, showscale=False,
                        hovertemplate=f"{phase}: %{{z}} image(s), reference %{{y}}, named %{{x}}<extra></extra>",
                        xgap=1, ygap=1)
    fig.update_layout(**_LAYOUT | dict(height=440, margin=dict(l=50, r=30, t=50, b=40)),
                      title_text=f"{CONFUSION_TITLE}, {evals[0][0]}",
                      xaxis=dict(title="answer named (greedy reply)", type="category", automargin=True),
                      yaxis=dict(title="reference · its recall", type="category", autorange="reversed",
                                 automargin=True))
    if len(evals) > 1:  # beside the title, clear of the axis labels
        fig.update_layout(updatemenus=[dict(
            type="buttons", direction="right", x=1, xanchor="right", y=1.02, yanchor="bottom", showactive=True,
            pad=dict(t=0, b=0, l=0, r=0),
            buttons=[dict(label=phase, method="update",
                          args=[{"visible": [j == i for j in range(len(evals))], "y": [ticks[phase]] * len(evals)},
                                {"title.text": f"{CONFUSION_TITLE}, {phase}"}])
                     for i, (phase, _) in enumerate(evals)])])
    return fig
