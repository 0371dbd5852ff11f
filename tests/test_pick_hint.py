"""The single-example hint: which image it suggests from the before-evaluation's votes, and when none."""
import pytest

from ttrv_core.app.pick_hint import MIN_AGREEMENT, suggest, vote_features
from ttrv_core.events import EvalResult, ItemEval


def letter(answer: str) -> bool:
    return len(answer) == 1 and answer in "ABCDEFGHIJ"


def item(item_id: str, counts: dict[str, int]) -> ItemEval:
    n = sum(counts.values())
    invalid = sum(c for a, c in counts.items() if not letter(a)) / n
    return ItemEval(item_id, "", "", max(counts, key=counts.get), max(counts.values()) / n, 0.5, counts,
                    invalid=invalid)


def before(*items: ItemEval) -> EvalResult:
    return EvalResult("before", list(items), {})


@pytest.mark.parametrize("counts, agreement, invalid, top", [
    ({"B": 16, "IT MUST BE TWO": 16}, 1.0, 0.5, "B"),        # the sentences do not count against agreement
    ({"C": 12, "D": 4, "IT IS": 16}, 0.75, 0.5, "C"),
    ({"A": 8, "B": 8, "C": 8, "D": 8}, 0.25, 0.0, "D"),      # a tie: the last letter, reproducibly
    ({"IT IS TWO": 30, "": 2}, 0.0, 1.0, ""),                # no valid vote
])
def test_vote_features(counts, agreement, invalid, top):
    (f,) = vote_features(before(item("x.png", counts)), letter)
    assert (f.agreement, f.invalid, f.top) == (pytest.approx(agreement), pytest.approx(invalid), top)


def test_suggests_the_agreed_image_with_half_its_replies_invalid():
    hint = suggest(before(
        item("disagree.png", {"C": 6, "D": 5, "E": 5, "IT IS": 16}),       # valid votes split: the losses
        item("all_sentences.png", {"B": 1, "IT MUST BE TWO": 31}),          # agreed, but almost no letter
        item("clean.png", {"A": 32}),                                       # nothing left to fix
        item("mostly_letters.png", {"F": 26, "IT IS SIX": 6}),
        item("half.png", {"J": 15, "I": 1, "IT IS NINE": 16}),
    ), letter)
    assert hint.item_id == "half.png"
    assert "half.png" in hint.reason and "J" in hint.reason and "\n" not in hint.reason


def test_agreement_threshold_is_inclusive():
    edge = {"B": int(20 * MIN_AGREEMENT), "C": 20 - int(20 * MIN_AGREEMENT), "IT IS": 20}
    assert suggest(before(item("edge.png", edge)), letter).item_id == "edge.png"


@pytest.mark.parametrize("items", [
    [item("a.png", {"A": 32}), item("b.png", {"B": 30, "C": 2})],         # no invalid vote: a clean model
    [item("a.png", {"A": 5, "B": 5, "IT IS": 22})],                       # no image whose valid votes agree
    [],
])
def test_no_suggestion_where_the_rule_has_nothing_to_read(items):
    assert suggest(before(*items), letter) is None


def test_the_study_reads_the_same_rule():
    from ttrv_core.research.single_pick import RULES, features
    ev = before(item("a.png", {"C": 6, "D": 5, "IT IS": 21}), item("b.png", {"J": 15, "IT IS NINE": 17}))
    assert RULES["agreed, half invalid (the app's hint)"](features(ev)) == suggest(ev, letter).item_id == "b.png"


def test_the_page_suggests_from_the_shown_runs_votes_each_image_by_its_own_options(tmp_path):
    """Under single-example mode: before a run, how to get a suggestion; after one on the same images,
    the image; each image's votes read by its own options (here 'E' is a valid letter of b.png only)."""
    from ttrv_core.app.live_run import LiveRun
    from ttrv_core.app.pick_hint import for_page
    from ttrv_core.inputs.dataset import Item
    items = [Item("a.png", tmp_path / "a.png", "q", "choice", ("1", "2", "3", "4")),
             Item("b.png", tmp_path / "b.png", "q", "choice", ("1", "2", "3", "4", "5"))]
    live = LiveRun(items)
    assert "Run once on all the images" in for_page(live, True)
    live.evals["before"] = before(item("a.png", {"A": 15, "IT IS": 17}), item("b.png", {"E": 16, "IT IS": 16}))
    said = for_page(live, True)
    assert "**b.png**" in said and "held-out" in said          # a.png's 'E' would not be a valid letter of its own
    assert "Run once" in for_page(live, False)                  # the images changed since: no stale suggestion
    live.evals["before"] = before(item("a.png", {"A": 32}), item("b.png", {"B": 32}))
    assert "No image to suggest" in for_page(live, True)
