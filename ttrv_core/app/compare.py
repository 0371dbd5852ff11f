"""Before and after, in words and tables: what the app shows once a run has evaluated.

    verdict     one plain sentence on what changed, from the measured numbers: with answers,
                the strict gain split into its reply-format and answers parts (content.py);
                without, the label-free split below
    summary     the before/after measures as a small table (markdown), the verdict first,
                strict and content accuracy side by side, then the label-free split: the
                images whose greedy reply named another answer, changed its form only, or
                stayed unchanged (content.change)
    table       one row per image: thumbnail (a video's: a strip of STRIP_FRAMES of its
                frames), answers before/after with the option text, the raw reply and
                a mark for replies that are not a valid answer, majority share,
                correctness where answers were given, what changed; `only` keeps the
                rows of one kind of change (SHOW)
    amplified   the answers adaptation made much more common than the base votes had them,
                as a warning line (answer_plots.warnings)

An evaluation cut short by Stop covers fewer images: the comparison is then made
on the images evaluated both times, and says so. Gradio-free (html strings only).
"""
from __future__ import annotations

import base64
import functools
import html
import io
from collections import Counter
from typing import Sequence

from PIL import Image

from ttrv_core.app.answer_plots import warnings
from ttrv_core.events import EvalResult
from ttrv_core.inputs.dataset import Item
from ttrv_core.inputs.images import load_image
from ttrv_core.inputs.video import is_video, load_video
from ttrv_core.method.content import changes
from ttrv_core.method.evaluate import summarize
from ttrv_core.tasks.prompts import LETTERS

ROWS = (("eval/greedy_acc", "strict accuracy (greedy)", "acc"),
        ("eval/content_acc", "content accuracy (greedy)", "acc"),
        ("eval/maj_acc", "majority-vote accuracy", "acc"),
        ("eval/single_acc", "single-vote accuracy", "acc"), ("eval/greedy_invalid", "invalid greedy replies", "pct"),
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
SHOW = (("all", "all"), ("answer changed", "answer_changed"), ("format only", "format_only"),
        ("unchanged", "unchanged"))
"""(label, value) of the table's filter: all rows, or those of one kind of change (content.CHANGES)."""
CHANGED = {"answer_changed": "● answer changed", "format_only": "format only", "unchanged": ""}
"""The table's 'changed' cell of each kind of change."""
RED, GREEN = "#c0392b", "#2a9d54"


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
    (content.py); without answers, given the items, with the label-free split of `changes`.

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
    parts = " · ".join(f"{label} **{kinds[k]}** ({kinds[k] / n:.0%})" for label, k in SHOW[1:])
    return f"**Each image's greedy reply, before → after** (label-free, of {n}): {parts}."


def amplified(items: Sequence[Item], before: EvalResult | None, after: EvalResult | None) -> str:
    """Markdown: a warning line per amplified answer (answer_plots.warnings), '' when none is."""
    return "\n\n".join(f"⚠️ {w}." for w in warnings(items, before, after))


def _nowrap(word: str) -> str:
    """A header word the browser may not break: at a phone's width the table's columns shrink below
    their words' width ("befor / e" at 420 px, seen in Chromium)."""
    return f'<span style="white-space:nowrap">{word}</span>'


STRIP_FRAMES, STRIP_SIDE = 4, 40
"""A video's strip in the table: STRIP_FRAMES frames sampled as the model's are (video.sample_times),
each fitted in STRIP_SIDE px: enough to see what moves, few enough to stay cheap (one small PNG)."""
STRIP_WIDTH = "180px"
"""The image column's width when the table holds a video (the strip, 166 px): with the other
columns the table still fits the page of a 1,400-px-wide window (seen in Chromium)."""

COLUMNS = {  # header -> width
    "image": "64px", "file": "160px", "adapted on": "80px", "question": "140px", "answer (evaluation only)": "110px",
    "before": "170px", "after": "170px", "majority share": "110px", "changed": "90px"}


def table(items: Sequence[Item], before: EvalResult | None, after: EvalResult | None,
          adapted_on: Sequence[str] = (), only: str = "all") -> tuple[list[str], list[list], list[str], list[str]]:
    """(headers, rows, datatypes, widths): one row per item; 'question' only when the questions differ,
    the answers column only where answers were given. 'changed' says how the greedy reply changed
    (CHANGED); only: "all", or the rows of one kind of change (SHOW's values) once there is an after."""
    b = {e.item_id: e for e in before.items} if before else {}
    a = {e.item_id: e for e in after.items} if after else {}
    changed, trained = changes(items, before, after), set(adapted_on)
    labeled = any(it.answer is not None for it in items)
    several = len({it.question for it in items}) > 1
    heads = [h for h in COLUMNS if (labeled or h != "answer (evaluation only)") and (several or h != "question")]
    widths = {**COLUMNS, "image": STRIP_WIDTH} if any(it.video for it in items) else COLUMNS
    shown = [it for it in items if only == "all" or not changed or changed.get(it.id) == only]
    rows = []
    for it in shown if b or a else ():  # nothing evaluated yet: an empty table
        eb, ea = b.get(it.id), a.get(it.id)
        cells = {"image": thumbnail(it), "file": it.id, "adapted on": "●" if it.id in trained else "",
                 "question": it.question, "answer (evaluation only)": label(it, it.reference),
                 "before": answer_cell(it, eb), "after": answer_cell(it, ea),
                 "majority share": " → ".join(f"{e.majority_share:.2f}" for e in (eb, ea) if e is not None),
                 "changed": CHANGED.get(changed.get(it.id, "unchanged"), "")}
        rows.append([cells[h] for h in heads])
    kinds = {"image": "html", "answer (evaluation only)": "html", "before": "html", "after": "html"}
    return heads, rows, [kinds.get(h, "str") for h in heads], [widths[h] for h in heads]


def label(item: Item, answer: str | None) -> str:
    """An extracted answer as the page shows it: a letter with its option text, '(empty)'.

    >>> label(Item("a.png", None, "Which digit?", "choice", ("3", "7")), "B")
    'B · 7'
    """
    if answer is None:
        return ""
    if item.task == "choice" and answer in tuple(LETTERS[:len(item.options)]):
        return f"{answer} · {item.options[LETTERS.index(answer)]}"
    return answer if answer.strip() else "(empty)"


def answer_cell(item: Item, e) -> str:
    """HTML: the greedy answer (with a ✓/✗ where answers exist, strict), flagged when it is not a valid
    answer (with the answer it names, if any), and the raw reply where it says more than the answer."""
    if e is None:
        return ""
    if e.greedy_valid:
        text = f"<b>{html.escape(label(item, e.greedy))}</b>"
    else:
        text = f'<span style="color:{RED}">not a valid answer</span>'
    if e.greedy_correct is not None:
        text += f' <span style="color:{GREEN if e.greedy_correct else RED}">{"✓" if e.greedy_correct else "✗"}</span>'
    if not e.greedy_valid and e.named:  # the answer it names all the same, read for content (content.py)
        text += f"<br><small>names <b>{html.escape(label(item, e.named))}</b></small>"
    reply = " ".join(e.greedy_text.split())
    if reply != e.greedy:
        shown = reply if len(reply) <= 60 else reply[:59] + "…"
        text += f"<br><small>reply: “{html.escape(shown)}”</small>"
    return text


def thumbnail(item: Item, side: int = 48) -> str:
    """The image as an inline <img> (PNG when small, JPEG otherwise), `side` px; a video as one strip
    of STRIP_FRAMES of its frames, left to right in time, STRIP_SIDE px high."""
    return _thumbnail(item.path, side)


@functools.lru_cache(maxsize=4096)  # a table is drawn a few times per run
def _thumbnail(path, side: int) -> str:
    video = is_video(path)
    if video:
        side = STRIP_SIDE
        im = strip(load_video(path, STRIP_FRAMES).frames, side)
    else:
        im = load_image(path)
        im.thumbnail((side, side))
    buf = io.BytesIO()
    small = im.height <= 64
    im.save(buf, format="PNG" if small else "JPEG")
    mime = "png" if small else "jpeg"
    title = f' title="{STRIP_FRAMES} frames of the clip, in time order"' if video else ""
    return f'<img src="data:image/{mime};base64,{base64.b64encode(buf.getvalue()).decode()}" height="{side}"{title}>'


def strip(frames, side: int, gap: int = 2) -> Image.Image:
    """Frames side by side on white, in time order, each scaled to fit a side x side box.

    >>> strip([Image.new("RGB", (32, 16))] * 4, 48).size
    (198, 48)
    """
    out = Image.new("RGB", (len(frames) * (side + gap) - gap, side), "white")
    for i, f in enumerate(frames):
        scale = side / max(f.size)
        f = f.resize((max(1, round(f.width * scale)), max(1, round(f.height * scale))), Image.BILINEAR)
        out.paste(f, (i * (side + gap) + (side - f.width) // 2, (side - f.height) // 2))
    return out


def _move(b: dict, a: dict, key: str) -> float:
    return a.get(key, 0.0) - b.get(key, 0.0)


def _f(m: dict, key: str) -> str:
    return f"{m[key]:.3f}" if key in m else "?"


def _fmt(v: float, kind: str) -> str:
    return f"{v:.0%}" if kind == "pct" else f"{v:.3f}"


def _delta(d: float, kind: str) -> str:
    return f"{100 * d:+.1f} points" if kind in ("pct", "acc") else f"{d:+.3f}"
