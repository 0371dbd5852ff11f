"""The entropy that is plotted and reported, H / ln N, falls as votes concentrate; the paper's
H / ln M (what the ttrv reward uses) need not, and is kept beside it under *_paper keys."""
import math
from collections import Counter

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ttrv_core.app import plots
from ttrv_core.events import ItemVotes, StepEvent
from ttrv_core.method.rewards import normalized_entropy, vote_entropy, vote_stats

SPREAD = 18 * ["A"] + ["B", "C"]   # shares .9, .05, .05
SHARPER = 18 * ["A"] + 2 * ["B"]    # shares .9, .1: one answer fewer


def test_the_issue_example():
    assert normalized_entropy(SPREAD) == pytest.approx(0.359, abs=1e-3)     # the paper's: rises to
    assert normalized_entropy(SHARPER) == pytest.approx(0.469, abs=1e-3)    # 0.47 as the votes sharpen
    assert vote_entropy(SHARPER) < vote_entropy(SPREAD)
    h = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1))
    assert vote_entropy(SHARPER) == pytest.approx(h / math.log(20))


@pytest.mark.parametrize("votes, want", [
    (["A"], 0.0), ([], 0.0), (["A", "A"], 0.0), (["A", "B"], 1.0), (list("ABCD"), 1.0),
    (["A", "A", "B", "B"], math.log(2) / math.log(4)),
])
def test_vote_entropy_table(votes, want):
    assert vote_entropy(votes) == pytest.approx(want)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from("ABCDEF"), min_size=2, max_size=40), st.data())
def test_moving_a_vote_to_an_answer_at_least_as_common_lowers_it(votes, data):
    """A vote moves from src to another answer dst with count(dst) >= count(src): the votes are then
    more concentrated (the counts majorize the old ones), and H / ln N falls, strictly. Every example
    moves a vote: some answer src always has another at least as common once there are two answers.
    The paper's H / ln M does not pass (it rises on 18 A + B + C -> 18 A + 2 B: test_the_issue_example)."""
    counts = Counter(votes)
    assume(len(counts) >= 2)
    movable = sorted(a for a in counts if any(counts[b] >= counts[a] for b in counts if b != a))
    src = data.draw(st.sampled_from(movable))
    dst = data.draw(st.sampled_from(sorted(b for b in counts if b != src and counts[b] >= counts[src])))
    moved = list(votes)
    moved[moved.index(src)] = dst
    assert Counter(moved)[dst] == counts[dst] + 1 and Counter(moved)[src] == counts[src] - 1
    assert vote_entropy(moved) < vote_entropy(votes)


def test_vote_stats_carry_both():
    s = vote_stats(SPREAD)
    assert s.entropy == vote_entropy(SPREAD) and s.entropy_paper == normalized_entropy(SPREAD)


def test_plot_shows_h_over_ln_n():
    step = StepEvent(1, 1, [ItemVotes("a", {"A": 18, "B": 2}, "A", 0.9, vote_entropy(SHARPER), 0.8,
                                      entropy_paper=normalized_entropy(SHARPER))],
                     {"answers/entropy": vote_entropy(SHARPER)})
    fig = plots.entropy([step])
    assert list(fig.data[0].y) == [pytest.approx(0.1085, abs=1e-4)]
    assert "H / ln N" in fig.layout.yaxis.title.text and "ln M" not in fig.layout.title.text
