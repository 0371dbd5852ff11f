"""Before and after, in words: what the app shows once a run has evaluated (each image: image_table.py).

    verdict     one plain sentence on what changed, from the measured numbers: with answers,
                the strict gain split into its reply-format and answers parts (content.py);
                without, the label-free split below; led by a warning when almost no vote
                was a valid answer (there was nothing for the reward to favour)
    summary     the before/after measures as a small table (markdown), the verdict first,
                strict and content accuracy side by side, then the label-free split: the
                images whose greedy reply named another answer, changed its form only, or
                stayed unchanged (content.change)
    amplified   the answers adaptation made much more common than the base votes had them,
                as a warning line (answer_plots.warnings)

An evaluation cut short by Stop covers fewer images: the comparison is then made
on the images evaluated both times, and says so. Gradio-free (markdown strings only).
"""
from __future__ import annotations

from collections import Counter
from typing import Sequence

from ttrv_core.app import answer_plots, image_table
from ttrv_core.app.answer_plots import warnings
from ttrv_core.app.image_table import SHOW
from ttrv_core.events import EvalResult
from ttrv_core.inputs.dataset import Item
from ttrv_core.method.content import CHANGES, changes
from ttrv_core.method.evaluate import summarize

ROWS = (("eval/greedy_acc", "strict accuracy (greedy)", "acc"),
        ("eval/content_acc", "content accuracy (greedy)", "acc"),
        ("eval/maj_acc", "majority-vote accuracy", "acc"),
        ("eval/single_acc", "single-vote accuracy", "acc"), ("eval/greedy_invalid", "invalid greedy replies", "pct"),
        ("eval/invalid", "votes with no valid answer", "pct"),
        ("eval/open_f1", "token F1 (open answers)", "acc"), ("eval/open_rouge1", "ROUGE-1 (open answers)", "acc"),
        ("eval/top_answer_share", "top answer share", "pct"), ("eval/majority_share", "majority share", "num"),
        ("eval/entropy", "entropy", "num"))
"""Short names: the table must fit a phone. Strict: the authors' extraction (a reply that names no
option letter is wrong); content: the answer the reply names (content.py). Invalid = no valid answer
(answers.is_valid); the last three are label-free."""
KEY = ("*Strict: the greedy reply as the authors score it (a reply that names no option is wrong). "
       "Content: the answer it names, in a sentence too (\"It must be two.\" names 2). "
       "Top answer share: the share of the images on the most common answer named.*")
"""The footnote under the table, where content accuracy is shown."""
NOTHING_VALID = 0.9
"""When at least this share of the base model's votes names no valid answer, the reward had almost
nothing to favour: the verdict says so first, before any measure that moved."""


def same_images(before: EvalResult | None, after: EvalResult | None) -> tuple[EvalResult | None, EvalResult | None]:
    """Both evaluations restricted to the images evaluated both times (a stop cuts one short)."""
    if before is None or after is None or len(before.items) == len(after.items):
        return before, after
    ids = {e.item_id for e in before.items} & {e.item_id for e in after.items}

    def cut(r: EvalResult) -> EvalResult:
        kept = [e for e in r.items if e.item_id in ids]
        return EvalResult(r.phase, kept, summarize(kept))
    return cut(before), cut(after)


def verdict(before: EvalResult | None, after: EvalResult | None, items: Sequence[Item] = ()) -> str:
    """One sentence on what changed, or '' before there is an after. With strict and content accuracy
    both times, it leads with the strict gain split: the reply-format part and the answers part
    (content.py); without answers, given the items, with the label-free split of `changes`. When almost
    no base vote was a valid answer (NOTHING_VALID), a sentence saying so comes first: a reward that
    counts agreeing answers had nothing to count.

    >>> from ttrv_core.events import EvalResult
    >>> b = EvalResult("before", [], {"eval/greedy_acc": .688, "eval/majority_share": .638, "eval/greedy_invalid": 0.})
    >>> a = EvalResult("after", [], {"eval/greedy_acc": .679, "eval/majority_share": .652, "eval/greedy_invalid": 0.})
    >>> verdict(b, a)
    'Greedy accuracy fell from 0.688 to 0.679 (-0.9 points) while the votes agreed more (majority share 0.638 → 0.652): the model became surer of its own answers, not more often right.'
    >>> b.metrics |= {"eval/content_acc": .804, "eval/greedy_invalid": .72}
    >>> a.metrics |= {"eval/greedy_acc": .713, "eval/content_acc": .779, "eval/greedy_invalid": .09}
    >>> verdict(b, a)
    'Strict accuracy rose from 0.688 to 0.713 (+2.5 points), of which reply format +5.0 and answers -2.5: more replies take the form the strict scoring reads (no valid answer 72% → 9%), but the right answer is named less often (content accuracy 0.804 → 0.779).'
    """
    before, after = same_images(before, after)
    if before is None or after is None:
        return ""
    invalid = before.metrics.get("eval/invalid", 0.0)
    return (f"Almost no vote was a valid answer ({invalid:.0%} of the base model's votes named none): there was "
            "nothing for the reward to favour, so what moved is not learned from votes that agree. "
            if invalid >= NOTHING_VALID else "") + _moved(before, after, items)


def _moved(before: EvalResult, after: EvalResult, items: Sequence[Item]) -> str:
    """The verdict's sentence on the measures that moved (`verdict`)."""
    b, a = before.metrics, after.metrics
    share = _move(b, a, "eval/majority_share")
    agree = ("the votes agreed more" if share > 0.005 else "the votes agreed less" if share < -0.005 else
             "the votes agreed about as much") + f" (majority share {_f(b, 'eval/majority_share')} → " \
                                                 f"{_f(a, 'eval/majority_share')})"
    inv_b, inv_a = b.get("eval/greedy_invalid", 0.0), a.get("eval/greedy_invalid", 0.0)
    invalid = (f"greedy replies with no valid answer went from {inv_b:.0%} to {inv_a:.0%}"
               if max(inv_b, inv_a) > 0 else "")
    if "eval/greedy_acc" not in b:
        kinds = Counter(changes(items, before, after).values())
        moved = (f"the greedy reply named another answer on {kinds['answer_changed'] / sum(kinds.values()):.0%} "
                 f"of the images and changed its form only on {kinds['format_only'] / sum(kinds.values()):.0%}; "
                 if kinds else "")
        return (f"No answers were given, so accuracy is unknown; label-free, {moved}{agree}"
                + (f" and {invalid}" if invalid else "") + ".")
    d = _move(b, a, "eval/greedy_acc")
    acc = f"from {b['eval/greedy_acc']:.3f} to {a['eval/greedy_acc']:.3f} ({100 * d:+.1f} points)"
    if "eval/content_acc" in b and "eval/content_acc" in a:
        return _split(b, a, acc, f"no valid answer {inv_b:.0%} → {inv_a:.0%}" if invalid else "")
    if d >= 0.005:
        why = f", as {invalid}" if invalid and inv_a < inv_b else f" and {agree}"
        return f"Greedy accuracy rose {acc}{why}."
    if d <= -0.005:
        if share > 0.005:
            return (f"Greedy accuracy fell {acc} while {agree}: the model became surer of its own answers, "
                    "not more often right.")
        return f"Greedy accuracy fell {acc} and {agree}" + (f"; {invalid}" if invalid else "") + "."
    same = f"{b['eval/greedy_acc']:.3f} → {a['eval/greedy_acc']:.3f}, {100 * d:+.1f} points"
    return f"Greedy accuracy stayed about the same ({same}) and {agree}" + (f"; {invalid}" if invalid else "") + "."


def _split(b: dict, a: dict, acc: str, invalid: str) -> str:
    """The verdict with content accuracy: the strict gain = reply-format part + answers part, in words."""
    d, ans = _move(b, a, "eval/greedy_acc"), _move(b, a, "eval/content_acc")
    fmt = d - ans
    moved = "rose" if d >= 0.005 else "fell" if d <= -0.005 else "stayed about the same,"
    form = ("more replies take the form the strict scoring reads" if fmt >= 0.005 else
            "fewer replies take the form the strict scoring reads" if fmt <= -0.005 else
            "about as many replies take the form the strict scoring reads") + (f" ({invalid})" if invalid else "")
    named = ("more often" if ans >= 0.005 else "less often" if ans <= -0.005 else "about as often as before")
    but = "but" if abs(fmt) >= 0.005 and abs(ans) >= 0.005 and (fmt > 0) != (ans > 0) else "and"
    return (f"Strict accuracy {moved} {acc}, of which reply format {100 * fmt:+.1f} and answers {100 * ans:+.1f}: "
            f"{form}, {but} the right answer is named {named} (content accuracy {b['eval/content_acc']:.3f} → "
            f"{a['eval/content_acc']:.3f}).")


def summary(before: EvalResult | None, after: EvalResult | None, n_items: int, items: Sequence[Item] = ()) -> str:
    """Markdown: the verdict, then a measure | before | after table; given the items, the label-free
    split of what changed (`split`)."""
    if before is None:
        return ""
    full_before = before
    before, after = same_images(before, after)
    lines = []
    if after is not None:
        lines.append(f"**What changed:** {verdict(before, after, items)}")
        if len(after.items) < n_items:
            lines.append(f"*Compared on the {len(after.items)} of {n_items} images evaluated after training "
                         "(the evaluation was stopped).*")
    elif len(full_before.items) < n_items:
        lines.append(f"*Evaluated before training: {len(full_before.items)} of {n_items} images (stopped).*")
    rows = [f"| measure | {_nowrap('before')} | {_nowrap('after')} |", "|:--|--:|--:|"]
    for key, name, kind in ROWS:
        if key in before.metrics:
            b = before.metrics[key]
            a = after.metrics.get(key) if after else None
            rows.append(f"| {name} | {_fmt(b, kind)} | " + ("…" if a is None else
                                                             f"**{_fmt(a, kind)}** ({_delta(a - b, kind)})") + " |")
    rows.append(f"| images evaluated | {len(before.items)} | {len(after.items) if after else '…'} |")
    if "eval/greedy_acc" not in before.metrics:
        lines.append("No answers given: accuracy is not available; the label-free measures are below.")
    tail = [KEY] if "eval/content_acc" in before.metrics else []
    if after is not None:
        tail.append(split(items, before, after) or "The greedy answer changed on **{}** of {} images.".format(
            sum(e.greedy != f.greedy for e, f in zip(before.items, after.items)), len(after.items)))
    return "\n\n".join(lines + ["\n".join(rows)] + tail)


def split(items: Sequence[Item], before: EvalResult | None, after: EvalResult | None) -> str:
    """Markdown, label-free: how many images' greedy reply named another answer, changed its form only,
    or stayed unchanged ('' without both evaluations of some item)."""
    kinds = Counter(changes(items, before, after).values())
    n = sum(kinds.values())
    if not n:
        return ""
    parts = " · ".join(f"{label} **{kinds[k]}** ({kinds[k] / n:.0%})" for label, k in SHOW if k in CHANGES)
    return f"**Each image's greedy reply, before → after** (label-free, of {n}): {parts}."


def results(live) -> tuple:
    """(summary, table, amplified, answer shares, confusion) of a run (app/live_run.LiveRun), as the
    page shows them after an evaluation."""
    b, a = live.evals.get("before"), live.evals.get("after")
    return (summary(b, a, live.n, live.items), rows(live), amplified(live.items, b, a),
            answer_plots.shares(live.items, b, a), answer_plots.confusion(live.items, b, a))


def rows(live) -> str:
    """The before/after table of a run (HTML), the rows it is set to show (LiveRun.rows)."""
    b, a = live.evals.get("before"), live.evals.get("after")
    return image_table.table_html(live.items, b, a, live.start.train_ids if live.start else (), live.rows)


def amplified(items: Sequence[Item], before: EvalResult | None, after: EvalResult | None) -> str:
    """Markdown: a warning line per amplified answer (answer_plots.warnings), '' when none is."""
    return "\n\n".join(f"⚠️ {w}." for w in warnings(items, before, after))


def _nowrap(word: str) -> str:
    """A header word the browser may not break: at a phone's width the table's columns shrink below
    their words' width ("befor / e" at 420 px, seen in Chromium)."""
    return f'<span style="white-space:nowrap">{word}</span>'


def _move(b: dict, a: dict, key: str) -> float:
    return a.get(key, 0.0) - b.get(key, 0.0)


def _f(m: dict, key: str) -> str:
    return f"{m[key]:.3f}" if key in m else "?"


def _fmt(v: float, kind: str) -> str:
    return f"{v:.0%}" if kind == "pct" else f"{v:.3f}"


def _delta(d: float, kind: str) -> str:
    return f"{100 * d:+.1f} points" if kind in ("pct", "acc") else f"{d:+.3f}"
