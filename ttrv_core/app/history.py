"""The runs of one session, side by side: which model, which images, the settings in which they
differ, and what each measured before and after, so that two runs on the same images with other
settings can be read against each other. Gradio-free (markdown).
"""
from __future__ import annotations

from dataclasses import dataclass

from ttrv_core.app.compare import same_images
from ttrv_core.app.live_run import LiveRun, display_name
from ttrv_core.config import TTRVConfig

MEASURES = (("eval/greedy_acc", "strict accuracy"), ("eval/content_acc", "content accuracy"),
            ("eval/greedy_invalid", "invalid replies"), ("eval/top_answer_share", "top answer share"),
            ("eval/majority_share", "majority share"))
"""What a run measured, as the rows of the comparison (those the runs have)."""
SHOWN = 6
"""The runs side by side at most: the latest ones."""


@dataclass
class Entry:
    number: int          # the session's run number, as the page said it
    model: str           # its display name
    config: dict         # TTRVConfig.to_dict()
    data: str            # where its images came from, and how many
    live: LiveRun
    inputs: tuple = ()   # its images and questions (items_key)

    @classmethod
    def of(cls, number: int, cfg: TTRVConfig, where: str, live: LiveRun) -> Entry:
        return cls(number, display_name(cfg.model), cfg.to_dict(), f"{live.n} from {where}", live,
                   items_key(live.items))


def items_key(items) -> tuple:
    """What of the images a run's results depend on: each image's id, question and options."""
    return tuple((it.id, it.question, tuple(it.options or ())) for it in items)


def stale(sess, cfg: TTRVConfig) -> str:
    """A line over the results when the form (`cfg`, the images the session's preview gives) no longer
    describes the run they come from (markdown; "" while it does). sess: a sessions.Session or None."""
    shown = _shown(sess)
    if shown is None:
        return ""
    model, config = cfg.model, cfg.to_dict()
    what = [w for w, moved in (("the model", model != shown.config.get("model")),
                               ("the images or questions", sess.inputs != shown.inputs),
                               ("the settings", {k: v for k, v in config.items() if k != "model"}
                                != {k: v for k, v in shown.config.items() if k != "model"})) if moved]
    if not what:
        return ""
    return (f"⚠️ **These results are from run {shown.number}** ({shown.model}, {shown.data}); "
            f"{_and(what)} changed since. Press Run to see them on what is chosen now.")


def shows_these_images(sess) -> bool:
    """Whether the run on the page was on the images and questions the form gives now."""
    shown = _shown(sess)
    return shown is not None and shown.inputs == sess.inputs


def _shown(sess) -> Entry | None:
    """The entry of the run on the page (sess: a sessions.Session or None)."""
    return next((e for e in sess.history if e.live is sess.shown), None) if sess is not None else None


def _and(words: list[str]) -> str:
    """
    >>> _and(["the model"]), _and(["the settings"]), _and(["a", "b"]), _and(["a", "b", "c"])
    ('the model has', 'the settings have', 'a and b have', 'a, b and c have')
    """
    text = words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]
    return text + (" has" if words == ["the model"] else " have")


def table(entries: list[Entry]) -> str:
    """Markdown: one column per run (the latest SHOWN), rows: model, images, the settings that differ
    between the runs, each measure before -> after, the outcome."""
    done = [e for e in entries if e.live.evals.get("before") is not None][-SHOWN:]
    if not done:
        return ""
    labels = {name: s.label or name for name, s in TTRVConfig.settings().items()}
    differ = [k for k in done[0].config if len({repr(e.config.get(k)) for e in done}) > 1
              and k in labels and k != "model"]
    head = "| | " + " | ".join(f"run {e.number}" for e in done) + " |"
    rows = [head, "|:--|" + "--:|" * len(done),
            "| model | " + " | ".join(e.model for e in done) + " |",
            "| images | " + " | ".join(e.data for e in done) + " |"]
    rows += [f"| {labels[k]} | " + " | ".join(str(e.config.get(k)) for e in done) + " |" for k in differ]
    for key, name in MEASURES:
        cells = [_change(e.live, key) for e in done]
        if any(cells):
            rows.append(f"| {name} | " + " | ".join(c or "–" for c in cells) + " |")
    rows.append("| outcome | " + " | ".join(_outcome(e.live) for e in done) + " |")
    same = "" if len(done) < 2 else (" Only the settings that differ between them are listed." if differ else
                                     " They ran with the same settings (a different seed gives other samples).")
    return (f"**The runs of this session** ({len(done)} shown, the latest on the right).{same}\n\n"
            + "\n".join(rows))


def _change(live: LiveRun, key: str) -> str:
    b, a = same_images(live.evals.get("before"), live.evals.get("after"))
    if b is None or key not in b.metrics:
        return ""
    pct = key != "eval/majority_share"
    fmt = (lambda v: f"{v:.1%}") if pct else (lambda v: f"{v:.2f}")
    return fmt(b.metrics[key]) + (f" → **{fmt(a.metrics[key])}**" if a is not None and key in a.metrics else "")


def _outcome(live: LiveRun) -> str:
    kind = live.outcome()[1] if live.end is not None or live.error is not None else "running"
    steps = len(live.steps) + (live.start.resumed_from if live.start else 0)
    return f"{kind}, {steps} step{'s' * (steps != 1)}"
