"""The experiment grid's report: runs -> one table (mean and sample std over seeds),
the ttrv-vs-frequency check, plotly figures, and the files they go to
(runs.csv, table.csv / table.md, results.json, figures/*.html and *.png).
experiments.py runs the grid; this file only reads what it measured.

Beside strict accuracy, content accuracy (content.py: the answer a greedy reply names): the strict
gain splits into a reply-format part (Δ format = Δ strict - Δ content) and an answers part (Δ content),
with the top answer share (label-free), in the tables and in figures/split. The per-answer shares
(the app's chart, answer_plots.shares) need each run's per-image answers, which a grid's rows do not
keep: a run folder's events.jsonl has them (plots.load_events).
"""
from __future__ import annotations

import csv
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

ACCS = ("greedy_acc", "single_acc", "maj_acc", "content_acc")
"""Accuracies: greedy (strict: the authors' extraction), single@T, maj@N, and the greedy reply read for
the answer it names (content.py: a sentence that names the right option counts)."""
LABEL_FREE = ("concentration", "greedy_invalid", "top_answer_share")
"""Eval metrics that need no labels: the share of images on the most common greedy answer, the
share whose greedy reply is no valid answer (answers.is_valid), and the share of images on the most
common answer named (content.py; images that name none left out)."""


def sci(x: float) -> str:
    """A learning rate as settings and axes name it.

    >>> sci(3e-05), sci(0.001)
    ('3e-5', '1e-3')
    """
    m, e = f"{x:.0e}".split("e")
    return f"{m}e{int(e)}"


@dataclass
class Outcome:
    row: dict                                      # flat: goes to runs.csv
    steps: list[dict] = field(default_factory=list)
    before: dict | None = None                     # eval metrics, when measured in this run


def load_outcomes(path: Path) -> list[Outcome]:
    """The runs back from a grid's runs.jsonl (for --report-only)."""
    return [Outcome(d["row"], d["steps"]) for d in map(json.loads, Path(path).read_text().splitlines())]


def before_checks(rows: Sequence[dict]) -> dict:
    diffs = [r["before_check"] for r in rows if r.get("before_check", "") != ""]
    return {"before_evals_measured_again": len(diffs), "before_check_max_abs_diff": max(diffs, default=0.0)}


def _ms(xs: Sequence[float]) -> tuple[float, float]:
    xs = [x for x in xs if not (isinstance(x, float) and math.isnan(x))]
    if not xs:
        return math.nan, math.nan
    return statistics.mean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0


def aggregate(rows: Sequence[dict]) -> list[dict]:
    """One row per setting: mean and sample std over its runs (seeds; images x seeds for single)."""
    order = list(dict.fromkeys((r["group"], r["setting"]) for r in rows))
    groups = [(g, n, [r for r in rows if (r["group"], r["setting"]) == (g, n)]) for g, n in order]
    if any(g == "single" for g, _, _ in groups):   # all chosen images pooled, as one more row
        pooled = [r for r in rows if r["group"] == "single"]
        groups.append(("single", f"single example, all {len({r['single'] for r in pooled})} images", pooled))
    out = []
    for g, name, rs in groups:
        t = {"group": g, "setting": name, "runs": len(rs)}
        for k in (*ACCS, *LABEL_FREE):   # .get: a runs.jsonl row may lack a metric (nan)
            for p in ("before", "after"):
                t[f"{p}_{k}_mean"], t[f"{p}_{k}_std"] = _ms([r.get(f"{p}_{k}", math.nan) for r in rs])
            t[f"d_{k}_mean"], t[f"d_{k}_std"] = _ms([r.get(f"d_{k}", math.nan) for r in rs])
        # the strict gain's reply-format part: strict gain - answers part (content accuracy's gain), per run
        t["d_format_mean"], t["d_format_std"] = _ms([r["d_greedy_acc"] - r.get("d_content_acc", math.nan)
                                                     for r in rs])
        t["guard_fired"] = sum(r["guard_fired_step"] != "" for r in rs)
        t["guard_fired_steps"] = " ".join(str(int(r["guard_fired_step"])) for r in rs if r["guard_fired_step"] != "")
        t["seconds_mean"] = statistics.mean(r["seconds"] for r in rs)
        out.append(t)
    return out


def reward_identity(outcomes: Sequence[Outcome]) -> list[dict]:
    """ttrv vs frequency with the same seed: per-step and final differences."""
    by = {(o.row["setting"], o.row["seed"]): o for o in outcomes if o.row["group"] == "reward"}
    res = []
    for (name, seed), a in by.items():
        b = by.get(("reward frequency", seed))
        if name != "reward ttrv" or b is None:
            continue
        pairs = list(zip(a.steps, b.steps))
        # same sampled votes at a step <=> same vote statistics; the losses then differ by rounding only
        same = [i for i, (x, y) in enumerate(pairs, 1)
                if all(x.get(k) == y.get(k) for k in ("answers/entropy", "answers/majority_share", "acc/single"))]
        res.append({"seed": seed, "advantage_gap": a.row["adv_gap_vs_frequency"],
                    "step1_loss_pg_diff": abs(pairs[0][0]["loss/pg"] - pairs[0][1]["loss/pg"]) if pairs else math.nan,
                    "max_loss_pg_diff": max((abs(x["loss/pg"] - y["loss/pg"]) for x, y in pairs), default=math.nan),
                    "steps_same_votes": len(same), "steps": len(pairs),
                    **{f"d_after_{k}": 100 * (a.row[f"after_{k}"] - b.row[f"after_{k}"]) for k in ACCS}})
    return res


# --------------------------------------------------------------------------- figures

def figures(outcomes: Sequence[Outcome], table: Sequence[dict]) -> dict[str, go.Figure]:
    """name -> plotly figure, from the runs and the aggregated table (only groups that ran)."""
    figs = {}
    rows = [t for t in table if not (t["group"] == "single" and t["runs"] <= _n_seeds(outcomes))]
    if rows:
        fig = go.Figure()
        for k, name, color in (("greedy_acc", "greedy", BLUE), ("single_acc", "single@T", PURPLE),
                               ("maj_acc", "maj@N", GREEN)):
            fig.add_bar(x=[t["setting"] for t in rows], y=[t[f"d_{k}_mean"] for t in rows], name=name,
                        marker_color=color, error_y=dict(type="data", array=[t[f"d_{k}_std"] for t in rows]))
        _layout(fig, "Accuracy change after TTRV (points; mean ± std over runs)", "setting", "after - before, points")
        fig.update_layout(height=560, xaxis_tickangle=-35, xaxis_title=None,   # the legend above: the labels need the room
                          legend=dict(orientation="h", x=1, xanchor="right", y=1.02, yanchor="bottom"))
        figs["change"] = fig
    if rows and any(not math.isnan(t["d_content_acc_mean"]) for t in rows):
        figs["split"] = split_figure(rows)
    reward_runs = [o for o in outcomes if o.row["group"] == "reward" and o.steps]
    if reward_runs:
        fig = make_subplots(rows=1, cols=2, subplot_titles=("single@T on the step's items (acc/single)",
                                                            "majority of N on the step's items (acc/majority)"))
        for i, name in enumerate(dict.fromkeys(o.row["setting"] for o in reward_runs)):
            runs = [o for o in reward_runs if o.row["setting"] == name]
            for col, key in ((1, "acc/single"), (2, "acc/majority")):
                steps = sorted({s["step"] for o in runs for s in o.steps})
                ys = [statistics.mean(s[key] for o in runs for s in o.steps if s["step"] == st) for st in steps]
                fig.add_scatter(x=steps, y=ys, mode="lines+markers", name=name, legendgroup=name, showlegend=col == 1,
                                line=dict(color=PALETTE[i % len(PALETTE)], dash=DASHES[i % len(DASHES)]),
                                row=1, col=col)
        _layout(fig, "Accuracy per step on the adapted items (mean over seeds; ttrv and frequency overlap)",
                "step", "accuracy")
        fig.update_xaxes(title="step")
        figs["steps"] = fig
    if any("answers/invalid" in s for o in reward_runs for s in o.steps):
        fig = go.Figure()
        for i, name in enumerate(dict.fromkeys(o.row["setting"] for o in reward_runs)):
            runs = [o for o in reward_runs if o.row["setting"] == name]
            steps = sorted({s["step"] for o in runs for s in o.steps})
            ys = [statistics.mean(1 - s["answers/invalid"] for o in runs for s in o.steps if s["step"] == st)
                  for st in steps]
            fig.add_scatter(x=steps, y=ys, mode="lines+markers", name=name,
                            line=dict(color=PALETTE[i % len(PALETTE)], dash=DASHES[i % len(DASHES)]))
        _layout(fig, "Share of the votes that are a valid answer, per step (label-free; mean over seeds)",
                "step", "valid votes / all votes")
        figs["valid_votes"] = fig
    lr_rows = [t for t in table if t["group"] == "lr"]
    if lr_rows:
        lrs = [float(t["setting"].split()[1].rstrip(",")) for t in lr_rows]
        fig = go.Figure()
        fig.add_scatter(x=lrs, y=[t["after_greedy_acc_mean"] for t in lr_rows], name="greedy after",
                        error_y=dict(type="data", array=[t["after_greedy_acc_std"] for t in lr_rows]),
                        mode="lines+markers", line=dict(color=BLUE))
        fig.add_scatter(x=lrs, y=[t["after_concentration_mean"] for t in lr_rows], mode="lines+markers",
                        name="concentration after (share of images on the most common answer)",
                        error_y=dict(type="data", array=[t["after_concentration_std"] for t in lr_rows]),
                        line=dict(color=ORANGE, dash="dot"))
        fig.add_hline(y=lr_rows[0]["before_greedy_acc_mean"], line_dash="dash", line_color=GREY,
                      annotation_text="greedy before")
        _layout(fig, "Learning-rate sweep (reward ttrv, guard off; mean ± std over seeds)", "learning rate", "")
        fig.update_xaxes(type="log", tickvals=lrs, ticktext=[sci(x) for x in lrs])
        figs["lr_sweep"] = fig
    shift_rows = [t for t in table if t["group"] == "shift"]
    if shift_rows:
        fig = go.Figure()
        for p, color in (("before", GREY), ("after", BLUE)):
            fig.add_bar(x=[t["setting"].removeprefix("shift ") for t in shift_rows], name=f"greedy {p}",
                        y=[t[f"{p}_greedy_acc_mean"] for t in shift_rows], marker_color=color,
                        error_y=dict(type="data", array=[t[f"{p}_greedy_acc_std"] for t in shift_rows]))
        _layout(fig, "Corrupted inputs: greedy accuracy before and after TTRV (defaults)", "corruption", "accuracy")
        figs["shift"] = fig
    by_name = {t["setting"]: t for t in table}
    pairs = [(n.replace(", guard on", ""), by_name.get(n.replace("guard on", "guard off")), t)
             for n, t in by_name.items() if t["group"] == "guard" and n.endswith("guard on")]
    pairs = [p for p in pairs if p[1] is not None]
    if pairs:
        fig = go.Figure()
        for i, (label, color) in enumerate((("guard off", GREY), ("guard on", GREEN)), 1):
            fig.add_bar(x=[p[0] for p in pairs], y=[p[i]["d_greedy_acc_mean"] for p in pairs], name=label,
                        marker_color=color, error_y=dict(type="data", array=[p[i]["d_greedy_acc_std"] for p in pairs]))
        _layout(fig, "Collapse guard: greedy change where collapse is induced (points)", "setting", "points")
        figs["guard"] = fig
    single_rows = [t for t in table if t["group"] == "single" and t["runs"] <= _n_seeds(outcomes)]
    if single_rows:
        fig = go.Figure()
        for k, name, color in (("greedy_acc", "greedy", BLUE), ("single_acc", "single@T", PURPLE)):
            fig.add_bar(x=[t["setting"].removeprefix("single ") for t in single_rows], name=name, marker_color=color,
                        y=[t[f"d_{k}_mean"] for t in single_rows],
                        error_y=dict(type="data", array=[t[f"d_{k}_std"] for t in single_rows]))
        _layout(fig, "Single-example mode: change on all items after adapting on one image (points)",
                "adapted image", "points")
        figs["single"] = fig
    return figs


def split_figure(rows: Sequence[dict]) -> go.Figure:
    """Per setting: the strict gain and its two parts, reply format and answers (content.py), in points;
    beside it the top answer share before and after (label-free: how much one answer took over)."""
    fig = make_subplots(rows=1, cols=2, column_widths=[0.62, 0.38], horizontal_spacing=0.1,
                        subplot_titles=("Strict gain = reply format + answers (points)",
                                        "Top answer share (label-free)"))
    x = [t["setting"] for t in rows]
    for k, name, color in (("d_greedy_acc", "strict gain", BLUE), ("d_format", "of which reply format", PURPLE),
                           ("d_content_acc", "of which answers (content accuracy)", GREEN)):
        fig.add_bar(x=x, y=[t[f"{k}_mean"] for t in rows], name=name, marker_color=color,
                    error_y=dict(type="data", array=[t[f"{k}_std"] for t in rows]), row=1, col=1)
    for p, color in (("before", GREY), ("after", ORANGE)):
        fig.add_bar(x=x, y=[t[f"{p}_top_answer_share_mean"] for t in rows], name=f"top answer share {p}",
                    marker_color=color, error_y=dict(type="data", array=[t[f"{p}_top_answer_share_std"] for t in rows]),
                    row=1, col=2)
    _layout(fig, "What the gain is made of (mean ± std over runs)", "", "")
    fig.update_layout(height=560, xaxis_tickangle=-35, xaxis2_tickangle=-35, margin=dict(l=60, r=20, t=80, b=60),
                      legend=dict(orientation="h", x=0, y=-0.3, yanchor="top"))
    fig.update_yaxes(tickformat=".0%", range=[0, 1], row=1, col=2)
    return fig


BLUE, GREEN, GREY, ORANGE, PURPLE = "#3b6fd8", "#2a9d54", "#9aa0ab", "#e07b24", "#8a4fd0"
PALETTE = (BLUE, ORANGE, GREEN, PURPLE, "#d0413b")
DASHES = ("solid", "dash", "dot", "dashdot")


def _n_seeds(outcomes: Sequence[Outcome]) -> int:
    return len({o.row["seed"] for o in outcomes})


def _layout(fig: go.Figure, title: str, x: str, y: str) -> None:
    fig.update_layout(template="plotly_white", title=title, height=450, barmode="group",
                      margin=dict(l=60, r=20, t=70, b=60), legend=dict(orientation="h", y=-0.25),
                      xaxis_title=x, yaxis_title=y)


# --------------------------------------------------------------------------- writing

def _fmt(t: dict, k: str, pts: bool = False) -> str:
    m, s = t[f"{k}_mean"], t[f"{k}_std"]
    return "-" if math.isnan(m) else (f"{m:+.1f} ± {s:.1f}" if pts else f"{m:.3f}")


def markdown(table: Sequence[dict]) -> str:
    head = ("| group | setting | runs | greedy before -> after | Δ greedy | content before -> after | Δ format "
            "| Δ single@T | Δ maj@N | invalid greedy before -> after | concentration after | top answer share after "
            "| guard fired | s/run |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    lines = [f"| {t['group']} | {t['setting']} | {t['runs']} | {_fmt(t, 'before_greedy_acc')} -> "
             f"{_fmt(t, 'after_greedy_acc')} | {_fmt(t, 'd_greedy_acc', True)} | {_fmt(t, 'before_content_acc')} -> "
             f"{_fmt(t, 'after_content_acc')} | {_fmt(t, 'd_format', True)} | {_fmt(t, 'd_single_acc', True)} | "
             f"{_fmt(t, 'd_maj_acc', True)} | {_fmt(t, 'before_greedy_invalid')} -> {_fmt(t, 'after_greedy_invalid')} "
             f"| {_fmt(t, 'after_concentration')} | {_fmt(t, 'after_top_answer_share')} | {t['guard_fired']}"
             f"{' (' + t['guard_fired_steps'] + ')' if t['guard_fired_steps'] else ''} | {t['seconds_mean']:.1f} |"
             for t in table]
    return head + "\n".join(lines) + "\n"


def summary_markdown(tables: dict[str, Sequence[dict]]) -> str:
    """The headline rows of each grid side by side: the default setting (reward ttrv), the pooled
    single-example row, the learning rates and the guard."""
    head = ("| demo | setting | runs | greedy before -> after | Δ greedy | content before -> after | Δ format "
            "| invalid greedy before -> after | top answer share after | Δ maj@N | guard fired |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for name, table in tables.items():
        for t in table:
            pooled = t["group"] == "single" and t["setting"].startswith("single example, all")
            if t["setting"] == "reward ttrv" or pooled or t["group"] in ("lr", "guard"):
                lines.append(f"| {name} | {t['setting']} | {t['runs']} | {_fmt(t, 'before_greedy_acc')} -> "
                             f"{_fmt(t, 'after_greedy_acc')} | {_fmt(t, 'd_greedy_acc', True)} | "
                             f"{_fmt(t, 'before_content_acc')} -> {_fmt(t, 'after_content_acc')} | "
                             f"{_fmt(t, 'd_format', True)} | "
                             f"{_fmt(t, 'before_greedy_invalid')} -> {_fmt(t, 'after_greedy_invalid')} | "
                             f"{_fmt(t, 'after_top_answer_share')} | {_fmt(t, 'd_maj_acc', True)} | "
                             f"{t['guard_fired']} |")
    return head + "\n".join(lines) + "\n"


def _write_csv(path: Path, rows: Sequence[dict]) -> None:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)


def write_outputs(out: Path, outcomes: Sequence[Outcome], meta: dict, png: bool) -> dict:
    rows = [o.row for o in outcomes]
    table = aggregate(rows)
    identity = reward_identity(outcomes)
    _write_csv(out / "runs.csv", rows)
    _write_csv(out / "table.csv", table)
    (out / "table.md").write_text(markdown(table))
    figs = figures(outcomes, table)
    fig_dir = out / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    png_note = None if png else "PNG export not asked for (--no-png)"
    for name, fig in figs.items():
        fig.write_html(fig_dir / f"{name}.html", include_plotlyjs="cdn")
        if png_note is None:
            try:
                fig.write_image(fig_dir / f"{name}.png", width=900, height=450, scale=2)
            except Exception as e:  # noqa: BLE001 - kaleido missing, or no Chrome for it: HTML only
                png_note = f"PNG export failed, HTML only ({type(e).__name__}: {str(e).splitlines()[0][:200]})"
    result = {**meta, "checks": before_checks(rows), "ttrv_vs_frequency": identity, "png": png_note or "written",
              "table": table, "runs": [{**o.row, "steps": o.steps} for o in outcomes]}
    (out / "results.json").write_text(json.dumps(result, indent=1, default=float))
    return result
