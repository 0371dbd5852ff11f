"""What a reply names, read for its content; and, label-free, what adaptation changed.

The authors' extraction (answers.extract_answer) is strict: a multiple-choice reply that
names no option letter is wrong, whatever it says. Read for its content, a reply names:

    choice    its option letter, when it has a valid one (the strict answer); else the one
              option whose text stands in the reply as whole words after normalisation
              (case, punctuation, articles, number words -> digits: "It must be two." names
              the option "2"); else nothing ("")
    classify  the class answers.extract_class maps it to, when that is one of the classes
    open      the normalised reply itself (answers.normalize_open)

Content accuracy: the named answer is the reference (choice, classify); for open answers the
normalised reference stands in the normalised reply as whole words ("it is 3" is right for
"3"). So content accuracy >= strict accuracy, and a strict gain splits in two parts:

    answers part  = content after - content before       (what the model answers)
    format part   = strict gain - answers part           (how it replies)

Label-free, per item, the greedy reply before and after (`change`):

    unchanged       the same answer named, in the same form
    format only     the same answer named, in another form: a sentence became the letter, or
                    (open) one reply's words stand in the other's ("it is 3" -> "3")
    answer changed  another answer named (naming nothing counts as an answer here)

Answer shares, label-free: the share of items whose greedy reply names each answer (among
the items that name one), before and after, and the share of each answer among the base
model's valid sampled votes (pooled over items). An answer whose share of items after is at
least twice its share of the base votes, and at least twice chance (1/K for K options), is
amplified: TTRV rewards what the model already says most, so it feeds the biases it finds.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Sequence

from ttrv_core.events import EvalResult, ItemEval
from ttrv_core.inputs.dataset import Item
from ttrv_core.tasks.answers import extract_answer, extract_class, is_valid, normalize_open
from ttrv_core.tasks.prompts import LETTERS, Task

AMPLIFY = 2.0
"""An answer is amplified when its share of items after >= AMPLIFY x its share of the base votes
and >= AMPLIFY / K: twice what the model already said, and twice chance."""


def _words_in(needle: str, hay: str) -> bool:
    """`needle` stands in `hay` as whole words (both normalised)."""
    return bool(needle) and re.search(rf"(?<!\S){re.escape(needle)}(?!\S)", hay) is not None


def named_answer(task: Task, reply: str, options: Sequence[str] = ()) -> str:
    """The answer a reply names, read for content (module docstring); "" when it names none.

    >>> named_answer("choice", "It must be two.", [str(i) for i in range(10)])
    'C'
    >>> named_answer("choice", "B", ["cat", "dog"]), named_answer("choice", "cat or dog", ["cat", "dog"])
    ('B', '')
    >>> named_answer("open", "It is 3.")
    'it is 3'
    """
    strict = extract_answer(task, reply, options)
    if task == "open":
        return strict
    if is_valid(task, strict, options):
        return strict
    if task == "classify":
        return ""
    text = normalize_open(reply)
    found = [i for i, o in enumerate(options) if _words_in(normalize_open(o), text)]
    return LETTERS[found[0]] if len(found) == 1 else ""


def content_correct(task: Task, reply: str, reference: str | None, options: Sequence[str] = (),
                    answer: str | None = None) -> bool | None:
    """Whether the reply names the reference (None without one). reference: in the space of
    extracted answers (answers.canonical_reference); answer: the reference as the user gave it.

    >>> content_correct("open", "It is the digit 3.", "3")
    True
    >>> content_correct("choice", "It must be two.", "C", [str(i) for i in range(10)])
    True
    """
    if reference is None:
        return None
    if task == "open":
        return _words_in(normalize_open(answer if answer is not None else reference), normalize_open(reply))
    if task == "classify":
        return extract_class(reply, options) == reference
    return named_answer(task, reply, options) == reference


CHANGES = ("unchanged", "format_only", "answer_changed")


def change(task: Task, before_reply: str, after_reply: str, options: Sequence[str] = ()) -> str:
    """How the greedy reply of one item changed (module docstring): one of CHANGES.

    >>> opts = [str(i) for i in range(10)]
    >>> [change("choice", b, a, opts) for b, a in (("C", "C."), ("It must be two.", "C"), ("C", "D"))]
    ['unchanged', 'format_only', 'answer_changed']
    >>> change("open", "It is 3.", "3"), change("open", "3", "5")
    ('format_only', 'answer_changed')
    """
    nb, na = named_answer(task, before_reply, options), named_answer(task, after_reply, options)
    if task == "open":
        if nb == na:
            return "unchanged"
        return "format_only" if nb and na and (_words_in(nb, na) or _words_in(na, nb)) else "answer_changed"
    if nb != na:
        return "answer_changed"
    vb = is_valid(task, extract_answer(task, before_reply, options), options)
    va = is_valid(task, extract_answer(task, after_reply, options), options)
    return "unchanged" if vb == va else "format_only"


def shares(answers: Sequence[str]) -> dict[str, float]:
    """Share of each answer among the non-empty ones, most common first.

    >>> shares(["A", "A", "B", ""])
    {'A': 0.6666666666666666, 'B': 0.3333333333333333}
    """
    named = [a for a in answers if a]
    return {a: c / len(named) for a, c in Counter(named).most_common()} if named else {}


@dataclass(frozen=True)
class Amplified:
    """An answer that adaptation made much more common than the base model's votes had it."""
    answer: str
    after: float      # share of the items whose greedy reply names it, after
    votes: float      # its share of the base model's valid votes

    def __str__(self) -> str:
        return (f"'{self.answer}' is the answer on {self.after:.0%} of the images after adaptation, "
                f"{self.after / self.votes if self.votes else float('inf'):.1f}x its share of the base model's "
                f"valid votes ({self.votes:.0%}): TTRV rewards what the model already says most")


def amplified(after: dict[str, float], votes: dict[str, float], k: int = 0) -> list[Amplified]:
    """The answers whose share after is >= AMPLIFY x their share of the base votes and >= AMPLIFY / K.

    K: the answers an item can have (its options); 0 (open answers): the distinct answers of the votes.

    >>> [a.answer for a in amplified({"J": 0.3, "B": 0.2}, {"J": 0.1, "B": 0.26}, k=10)]
    ['J']
    """
    k = k or len(votes)
    floor = AMPLIFY / k if k else 1.0
    return [Amplified(a, s, votes.get(a, 0.0)) for a, s in after.items()
            if s >= floor and s >= AMPLIFY * votes.get(a, 0.0)]


def vote_shares(items: Sequence[Item], evals: Sequence[ItemEval]) -> dict[str, float]:
    """The share of each answer among the valid sampled votes of an evaluation, pooled over items."""
    by_id = {it.id: it for it in items}
    pooled: Counter = Counter()
    for e in evals:
        it = by_id.get(e.item_id)
        if it is not None:
            pooled.update({a: c for a, c in e.counts.items() if is_valid(it.task, a, it.options)})
    total = sum(pooled.values())
    return {a: c / total for a, c in pooled.most_common()} if total else {}


def answer_count(items: Sequence[Item]) -> int:
    """K, the answers an item can have: the fewest options among the items (0: open answers)."""
    return min((len(it.options) for it in items if it.task != "open"), default=0)


def changes(items: Sequence[Item], before: EvalResult | None, after: EvalResult | None) -> dict[str, str]:
    """item id -> how its greedy reply changed (`change`: one of CHANGES), for the items evaluated both
    times; {} without both evaluations."""
    if before is None or after is None:
        return {}
    by_id, b = {it.id: it for it in items}, {e.item_id: e for e in before.items}
    return {e.item_id: change(it.task, b[e.item_id].greedy_text, e.greedy_text, it.options)
            for e in after.items if e.item_id in b and (it := by_id.get(e.item_id)) is not None}


def run_summary(items: Sequence[Item], before: EvalResult | None, after: EvalResult | None) -> dict[str, float]:
    """What changed between two evaluations of the same items, under stable keys:

        votes/top_answer_share    the largest share of one answer among the base model's valid votes
        changed/unchanged, changed/format_only, changed/answer_changed   shares of the items (label-free)
        amplified/answers         how many answers are amplified (`amplified`), label-free
        amplified/top_ratio       the most common answer after: its share of items over its share of the
                                  base votes (absent when no valid base vote gave it)
        gain/strict, gain/answers, gain/format   with answers: strict gain = answers part + format part
    """
    m: dict[str, float] = {}
    if before is not None:
        votes = vote_shares(items, before.items)
        m["votes/top_answer_share"] = max(votes.values(), default=0.0)
    if before is None or after is None:
        return m
    if kinds := Counter(changes(items, before, after).values()):
        m |= {f"changed/{k}": kinds[k] / sum(kinds.values()) for k in CHANGES}
    after_shares = shares([e.named for e in after.items])
    amp = amplified(after_shares, votes, answer_count(items))
    m["amplified/answers"] = float(len(amp))
    top = next(iter(after_shares), None)
    if votes.get(top):
        m["amplified/top_ratio"] = after_shares[top] / votes[top]
    keys = ("eval/greedy_acc", "eval/content_acc")
    if all(k in r.metrics for k in keys for r in (before, after)):
        strict = after.metrics["eval/greedy_acc"] - before.metrics["eval/greedy_acc"]
        answers = after.metrics["eval/content_acc"] - before.metrics["eval/content_acc"]
        m |= {"gain/strict": strict, "gain/answers": answers, "gain/format": strict - answers}
    return m


def amplified_answers(items: Sequence[Item], before: EvalResult, after: EvalResult) -> list[Amplified]:
    """The amplified answers of a run (`amplified`), from its two evaluations."""
    return amplified(shares([e.named for e in after.items]), vote_shares(items, before.items), answer_count(items))


def gain_sentence(summary: dict[str, float]) -> str | None:
    """The strict gain split in words, from a run summary (None without answers).

    >>> gain_sentence({"gain/strict": 0.438, "gain/format": 0.463, "gain/answers": -0.025})
    'strict +43.8 points, of which reply format +46.3 and answers -2.5'
    """
    if "gain/strict" not in summary:
        return None
    s, f, a = (100 * summary[f"gain/{k}"] for k in ("strict", "format", "answers"))
    return f"strict {s:+.1f} points, of which reply format {f:+.1f} and answers {a:+.1f}"
