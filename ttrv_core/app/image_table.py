"""Each image before and after: the table the app shows once a run has evaluated.

    table       one row per image, in the images' order: thumbnail (a video's: a strip of
                STRIP_FRAMES of its frames), answers before/after with the option text, a
                mark for replies that are not a valid answer and the raw reply (cut, whole
                on hover or a tap), majority share, correctness where answers were given,
                what changed (`kind`: better / worse / other where answers were given);
                `only` keeps the rows of one kind of change (SHOW)
    table_html  the table as the page shows it, in the element #compare: below PHONE px
                wide only the image, the answers before and after (✓/✗) and what changed

Gradio-free (html strings only).
"""
from __future__ import annotations

import base64
import functools
import html
import io
import os
from typing import Sequence

from PIL import Image

from ttrv_core.events import EvalResult
from ttrv_core.inputs.dataset import Item
from ttrv_core.inputs.images import load_image
from ttrv_core.inputs.video import is_video, load_video
from ttrv_core.method.content import changes
from ttrv_core.tasks.prompts import LETTERS

RED, GREEN = "#c0392b", "#2a9d54"
SHOW = (("all", "all"), ("answer changed", "answer_changed"), ("better", "better"), ("worse", "worse"),
        ("format only", "format_only"), ("unchanged", "unchanged"))
"""(label, value) of the table's filter: all rows, or those of one kind of change (content.CHANGES), or,
where answers exist, of a changed answer that became right (better) or wrong (worse) (`kind`)."""
CHANGED = {"answer_changed": "● answer changed", "better": f'<span style="color:{GREEN}">▲ better</span>',
           "worse": f'<span style="color:{RED}">▼ worse</span>', "other": "● other answer",
           "format_only": "format only", "unchanged": ""}
"""The table's 'changed' cell of each kind of change (`kind`)."""
STRIP_FRAMES, STRIP_SIDE = 4, 40
"""A video's strip in the table: STRIP_FRAMES frames sampled as the model's are (video.sample_times),
each fitted in STRIP_SIDE px: enough to see what moves, few enough to stay cheap (one small PNG)."""
COLUMNS = {"image": "image", "file": "file secondary", "adapted on": "adapted secondary",
           "question": "question secondary", "answer (evaluation only)": "answer secondary",
           "before": "before", "after": "after", "majority share": "share secondary", "changed": "changed"}
"""header -> the cell's class: a phone (PHONE) hides the secondary columns, so that the image, the
answers before and after (✓/✗ where answers exist) and what changed fit its width."""
PHONE = 600
"""The page width (px) below which the table keeps its essential columns only."""
REPLY_CHARS = 60
"""A reply longer than this is cut in its cell; the whole of it is in its title (hover) and opens on a tap."""


def table(items: Sequence[Item], before: EvalResult | None, after: EvalResult | None,
          adapted_on: Sequence[str] = (), only: str = "all") -> tuple[list[str], list[list[str]]]:
    """(headers, rows of HTML cells): one row per item, in the items' order; 'question' only when the
    questions differ, the answers column only where answers were given. 'changed' says how the greedy
    reply changed (CHANGED, `kind`); only: "all", or the rows of one kind (SHOW's values) once there is
    an after."""
    b = {e.item_id: e for e in before.items} if before else {}
    a = {e.item_id: e for e in after.items} if after else {}
    changed, trained = changes(items, before, after), set(adapted_on)
    labeled = any(it.answer is not None for it in items)
    several = len({it.question for it in items}) > 1
    heads = [h for h in COLUMNS if (labeled or h != "answer (evaluation only)") and (several or h != "question")]
    rows = []
    for it in items if b or a else ():  # nothing evaluated yet: an empty table
        eb, ea = b.get(it.id), a.get(it.id)
        how = kind(changed.get(it.id, "unchanged"), eb, ea)
        if only != "all" and changed and only not in (how, changed.get(it.id)):
            continue
        cells = {"image": thumbnail(it), "file": html.escape(it.id), "adapted on": "●" if it.id in trained else "",
                 "question": html.escape(it.question), "answer (evaluation only)": html.escape(label(it, it.reference)),
                 "before": answer_cell(it, eb, ea), "after": answer_cell(it, ea, eb),
                 "majority share": " → ".join(f"{e.majority_share:.2f}" for e in (eb, ea) if e is not None),
                 "changed": CHANGED[how]}
        rows.append([cells[h] for h in heads])
    return heads, rows


def kind(how: str, before, after) -> str:
    """A change of answer (content.change), told apart where the reference is known: the answer named
    after right and before not is 'better', the reverse 'worse', another answer as right or wrong 'other'."""
    if how != "answer_changed" or before.content_correct is None or after.content_correct is None:
        return how
    return {(False, True): "better", (True, False): "worse"}.get((before.content_correct, after.content_correct),
                                                                 "other")


def table_html(items: Sequence[Item], before: EvalResult | None, after: EvalResult | None,
               adapted_on: Sequence[str] = (), only: str = "all") -> str:
    """The table (`table`) as the page shows it: an HTML table under a title, in a box that scrolls
    down, styled for the element #compare; below PHONE px wide the secondary columns are hidden."""
    heads, rows = table(items, before, after, adapted_on, only)
    title = '<div class="title">Each image before and after</div>'
    if not rows:
        none = ("" if not (before or after) else
                "Better and worse need the answers (a questions file with an answer column)."
                if only in ("better", "worse") and not any(it.answer is not None for it in items) else
                "No image's greedy reply changed this way.")
        return STYLE + title + (f'<p class="none">{none}</p>' if none else "")
    head = "".join(f'<th class="{COLUMNS[h]}">{h}</th>' for h in heads)
    body = "".join("<tr>" + "".join(f'<td class="{COLUMNS[h]}">{c}</td>' for h, c in zip(heads, r)) + "</tr>"
                   for r in rows)
    return f'{STYLE}{title}<div class="box"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


STYLE = f"""<style>
#compare .title {{font-weight: 600; margin: 4px 0}}
#compare .box {{max-height: 600px; overflow-y: auto}}
#compare table {{border-collapse: collapse; width: 100%; font-size: 14px}}
#compare th {{position: sticky; top: 0; background: var(--background-fill-primary, white); text-align: left}}
#compare th, #compare td {{padding: 4px 6px; vertical-align: top;
  border-bottom: 1px solid var(--border-color-primary, #ddd)}}
#compare td {{overflow-wrap: anywhere}}
#compare .reply {{font-size: 12px; opacity: .8}}
#compare details summary {{cursor: pointer}}
@media (max-width: {PHONE}px) {{
  #compare .secondary {{display: none}}
  #compare th, #compare td {{padding: 3px}}
  #compare table {{font-size: 13px}}
  #compare td.image img {{max-width: 25vw; height: auto}}
}}
</style>"""
"""The table's look, scoped to #compare: a sticky header row, replies in small type, long words broken
so that no column widens the table past the page; on a phone a video's strip shrinks to a quarter of it."""


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


def answer_cell(item: Item, e, other=None) -> str:
    """HTML: the greedy answer (with a ✓/✗ where answers exist, strict), flagged when it is not a valid
    answer (with the answer it names, if any), and under it the raw reply, cut to REPLY_CHARS (`clip`,
    against `other`, the same image's evaluation on the other side): whole on hover, and on a tap."""
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
    shown = f"“{html.escape(clip(reply, ' '.join(other.greedy_text.split()) if other else ''))}”" if reply else \
        "(empty reply)"
    if len(reply) <= REPLY_CHARS:
        return text + f'<div class="reply">{shown}</div>'
    return text + (f'<details class="reply" title="{html.escape(reply)}"><summary>{shown}</summary>'
                   f"{html.escape(reply)}</details>")


def clip(reply: str, other: str = "", n: int = REPLY_CHARS) -> str:
    """The reply cut to n characters; where it begins as `other` does past the cut, the part where the two
    part ways is shown instead, so that two replies that differ never look the same.

    >>> clip("The digit is 7.", n=20)
    'The digit is 7.'
    >>> clip("The digit shown here is a seven, I think", n=20)
    'The digit shown her…'
    >>> clip("The digit shown here is a seven, I think", "The digit shown here is a one", n=20)
    '…here is a seven, I…'
    """
    if len(reply) <= n:
        return reply
    common = len(os.path.commonprefix([reply, other]))
    if common < n - 10:
        return reply[:n - 1] + "…"
    start = common - n // 2
    return "…" + reply[start:start + n - 2] + ("…" if start + n - 2 < len(reply) else "")


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
