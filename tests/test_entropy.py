"""The entropy that is plotted and reported, H / ln N, falls as votes concentrate; the paper's
H / ln M (what the ttrv reward uses) need not, and is kept beside it under *_paper keys."""
import math
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ttrv_core import plots
from ttrv_core.events import ItemVotes, StepEvent
from ttrv_core.rewards import normalized_entropy, vote_entropy, vote_stats

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
def test_moving_a_vote_to_a_more_common_answer_never_raises_it(votes, data):
    counts = Counter(votes)
    src = data.draw(st.sampled_from(sorted(counts)))
    dst = data.draw(st.sampled_from(sorted(a for a in counts if a != src and counts[a] >= counts[src]) or [src]))
    moved = list(votes)
    moved[moved.index(src)] = dst
    assert vote_entropy(moved) <= vote_entropy(votes) + 1e-12


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
