"""Which image to adapt on in single-example mode: a label-free suggestion from the before-evaluation.

The gain of single-example mode comes from the reply habit one image teaches, and it depends on the
image. Per image, the before-evaluation's N votes give (no labels):
  agreement = votes of the most common valid answer / valid votes,
  invalid   = share of the N votes that are no valid answer.
The rule: among the images whose valid votes agree (agreement >= 0.8), the one whose invalid share is
nearest one half. Such an image has a clear answer for the vote reward to reinforce and, beside it,
replies not yet in the asked form for the reward to turn into it. Images whose valid votes disagree,
or whose votes are almost all invalid, gave the losses. Chosen on the format demo's validation digits
and checked on its held-out digits (ttrv_core/research/single_pick.py, docs/RESULTS.md); where no
vote is invalid (a model that already answers in the asked form) the rule has nothing to read and
gives no suggestion.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ttrv_core.events import EvalResult
from ttrv_core.tasks import answers

MIN_AGREEMENT = 0.8
"""Agreement an image's valid votes need to be suggested, chosen on the format demo's validation digits.
An image with almost no valid vote can reach it by chance (one letter of 32 votes agrees with itself):
the rule's preference for half invalid keeps those out."""


MEASURED = ("Measured on the format demo's held-out digits only: this rule's image gained +9.4 strict points, "
            "a random image +4.1 (3 seeds each).")
"""What the suggestion is worth, as measured (docs/RESULTS.md); said beside it on the page."""


@dataclass(frozen=True)
class VoteFeatures:
    """Label-free numbers of one image's before-evaluation votes."""
    item_id: str
    agreement: float   # votes of the most common valid answer / valid votes; 0 when no vote is valid
    invalid: float     # share of the N votes that are no valid answer
    entropy: float     # H / ln N over all N votes
    top: str = ""      # the most common valid answer


@dataclass(frozen=True)
class PickHint:
    item_id: str
    reason: str        # one line, plain words


def vote_features(before: EvalResult, is_valid: Callable[[str], bool]) -> list[VoteFeatures]:
    """Each item's agreement, invalid share and entropy; `is_valid` tells a vote of the asked form."""
    out = []
    for it in before.items:
        valid = {a: c for a, c in it.counts.items() if is_valid(a)}
        top = max(valid, key=lambda a: (valid[a], a)) if valid else ""
        agree = valid[top] / sum(valid.values()) if valid else 0.0
        out.append(VoteFeatures(it.item_id, agree, it.invalid, it.entropy, top))
    return out


def agreed_half_invalid(feats: list[VoteFeatures]) -> VoteFeatures | None:
    """The rule (module docstring); None where no agreed image has both valid and invalid votes."""
    pool = [f for f in feats if f.agreement >= MIN_AGREEMENT and 0 < f.invalid < 1]
    return min(pool, key=lambda f: (abs(f.invalid - 0.5), f.item_id)) if pool else None


def suggest(before: EvalResult, is_valid: Callable[[str], bool]) -> PickHint | None:
    """The image to adapt on and why, from the base model's before-evaluation; None: no suggestion.

    >>> from ttrv_core.events import ItemEval
    >>> item = lambda i, counts, inv: ItemEval(i, "", "", "", 0.0, 0.0, counts, invalid=inv)
    >>> before = EvalResult("before", [item("a.png", {"B": 16, "IT IS TWO": 16}, 0.5),
    ...                                item("b.png", {"C": 9, "D": 7, "IT IS": 16}, 0.5)], {})
    >>> suggest(before, lambda a: len(a) == 1).item_id
    'a.png'
    """
    return _hint(agreed_half_invalid(vote_features(before, is_valid)))


def for_page(live, same_images: bool) -> str:
    """The line under single-example mode (markdown): from the shown run's evaluation before training
    (app/live_run.LiveRun) while the form has its images, each image's votes judged by its own task and
    options; else how to get a suggestion."""
    before = live.evals.get("before") if live is not None and same_images else None
    if before is None:
        return ("*Which image? Run once on all the images: the evaluation before training then suggests one "
                "(no labels used).*")
    items = {it.id: it for it in live.items}
    feats = [f for e in before.items for f in vote_features(
        EvalResult("before", [e], {}), lambda a, it=items.get(e.item_id): it is not None
        and answers.is_valid(it.task, a, it.options))]
    hint = _hint(agreed_half_invalid(feats))
    if hint is None:
        return ("*No image to suggest: the rule needs an image whose valid votes agree and some replies not yet "
                "in the asked form (a model that already answers in the asked form has nothing for it to read).*")
    return (f"*Suggested, without labels:* **{hint.item_id}**: {hint.reason.split(': ', 1)[1]}. *{MEASURED}*")


def _hint(pick: VoteFeatures | None) -> PickHint | None:
    if pick is None:
        return None
    return PickHint(pick.item_id, (
        f"{pick.item_id}: {pick.agreement:.0%} of its valid answers agree on {pick.top} and "
        f"{pick.invalid:.0%} of its replies are not yet in the asked form, so training has a clear answer "
        "to reinforce and a reply form to fix"))
