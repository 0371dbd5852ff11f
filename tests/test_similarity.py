"""Soft-frequency reward, token F1 and ROUGE-1 (ttrv_core/tasks/similarity.py).

Tables of hand-computed values; a property test that the soft reward under exact match is
the paper's count / N; ROUGE-1 checked against rouge-score itself (the reference
implementation, a test requirement only).
"""
import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rouge_score import rouge_scorer

from ttrv_core.method.rewards import REWARDS, compute_rewards, frequency_reward
from ttrv_core.tasks.similarity import exact, rouge1, soft_counts, soft_frequency_reward, token_f1

# pred, ref, token F1 by hand: 2 * overlap / (|pred| + |ref|) after normalize_open
F1_TABLE = [
    ("left lung", "left lung", 1.0),
    ("The left lung.", "left lung", 1.0),                 # article and punctuation go
    ("left lower lobe", "left lung", 2 * 1 / (3 + 2)),    # 'left'
    ("right lung", "left lung", 2 * 1 / (2 + 2)),         # 'lung'
    ("lung lung", "lung", 2 * 1 / (2 + 1)),               # multiset overlap: one 'lung' only
    ("two nodules", "2 nodules", 1.0),                    # number words become digits
    ("7.0 cm", "7 cm", 1.0),                              # trailing decimal zeros go
    ("heart", "liver", 0.0),
    ("", "", 1.0),                                        # two empty votes are one answer
    ("", "yes", 0.0),
    ("...", "", 1.0),                                     # punctuation alone normalises to empty
    ("mass in the left upper lobe", "left upper lobe mass", 2 * 4 / (5 + 4)),  # 'the' dropped
]


@pytest.mark.parametrize("pred,ref,want", F1_TABLE, ids=[f"{p!r}-{r!r}" for p, r, _ in F1_TABLE])
def test_token_f1_hand_values(pred, ref, want):
    assert token_f1(pred, ref) == pytest.approx(want, abs=1e-12)
    assert token_f1(ref, pred) == pytest.approx(want, abs=1e-12)  # symmetric


# pred, ref, ROUGE-1 F by hand: P = overlap / |pred|, R = overlap / |ref|, F = 2PR / (P + R)
ROUGE_TABLE = [
    ("the left lung", "left lung", 0.8),                  # P 2/3, R 1: articles are tokens here
    ("left lung", "left lung", 1.0),
    ("Left-Lung!", "left lung", 1.0),                     # punctuation splits, case folds
    ("3.5 cm", "3.5cm", 2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2)),  # ['3','5','cm'] vs ['3','5cm']
    ("no", "yes", 0.0),
    ("", "", 0.0),                                        # as rouge-score
    ("lesion lesion", "lesion", 2 * (1 / 2) * 1 / (1 / 2 + 1)),
    ("pleural effusion on the right", "right pleural effusion", 2 * (3 / 5) * 1 / (3 / 5 + 1)),
]


@pytest.mark.parametrize("pred,ref,want", ROUGE_TABLE, ids=[f"{p!r}-{r!r}" for p, r, _ in ROUGE_TABLE])
def test_rouge1_hand_values(pred, ref, want):
    assert rouge1(pred, ref) == pytest.approx(want, abs=1e-12)


SCORER = rouge_scorer.RougeScorer(["rouge1"], use_stemmer=False)
WORDS = ["left", "right", "lung", "the", "a", "mass", "3", "5cm", "Lobe", "no", "yes", "é", "-", ",", "x-ray"]


def test_rouge1_agrees_with_rouge_score():
    """The few lines against the reference implementation, on 500 random texts."""
    rng = random.Random(0)
    for _ in range(500):
        pred = " ".join(rng.choices(WORDS, k=rng.randint(0, 6)))
        ref = " ".join(rng.choices(WORDS, k=rng.randint(0, 6)))
        assert rouge1(pred, ref) == pytest.approx(SCORER.score(ref, pred)["rouge1"].fmeasure, abs=1e-12), (pred, ref)


vote_tables = st.lists(st.sampled_from(["A", "B", "C", "left lung", "lung", "", "heart"]), min_size=1, max_size=40)


@settings(max_examples=300, deadline=None)
@given(vote_tables)
def test_soft_reward_under_exact_match_is_count_over_n(votes):
    """r(a_i) = (1/N) sum_j [a_i == a_j] is count(a_i) / N, exactly, vote for vote."""
    assert soft_frequency_reward(votes, exact) == frequency_reward(votes)
    n, counts = len(votes), Counter(votes)
    assert soft_frequency_reward(votes, exact) == [counts[v] / n for v in votes]


@settings(max_examples=200, deadline=None)
@given(vote_tables)
def test_soft_f1_reward_bounds(votes):
    """Token F1 credits at least what exact match does (s >= [a == b]), at most 1 per vote."""
    soft, hard = soft_frequency_reward(votes), frequency_reward(votes)
    assert all(h - 1e-12 <= s <= 1 + 1e-12 for s, h in zip(soft, hard))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["x1", "y2", "z3", "w4"]), min_size=1, max_size=40))
def test_soft_f1_on_one_word_answers_is_count_over_n(votes):
    """One-token answers share no token unless equal: token F1 is exact match there."""
    assert soft_frequency_reward(votes) == pytest.approx(frequency_reward(votes), abs=1e-12)


def test_soft_reward_table():
    """By hand: s(left lung, lung) = 2/3, s(·, heart) = 0."""
    votes = ["left lung", "left lung", "lung", "heart"]
    assert soft_frequency_reward(votes) == pytest.approx([(2 + 2 / 3) / 4, (2 + 2 / 3) / 4, (4 / 3 + 1) / 4, 1 / 4])
    assert soft_counts(votes) == pytest.approx({"left lung": 2 + 2 / 3, "lung": 4 / 3 + 1, "heart": 1.0})


def test_soft_reward_gives_phrasings_an_advantage_exact_match_does_not():
    """32 phrasings of one answer: the frequency reward is flat (1/N each), the soft one is not."""
    votes = ["left lung", "lung left", "left lungs", "the left lung region"] * 4 + ["heart", "liver", "spleen", "kidney"]
    soft = compute_rewards("soft", votes)[0]
    assert min(soft[:16]) > max(soft[16:])


def test_soft_is_a_named_reward():
    assert "soft" in REWARDS
    total, parts = compute_rewards("soft", ["A", "A", "B"])
    assert total == parts["soft"] == pytest.approx([2 / 3, 2 / 3, 1 / 3])


phrase_votes = st.lists(st.lists(st.sampled_from(["left", "lung", "the", "lobe", "two", "2", "."]), max_size=4)
                        .map(" ".join), min_size=1, max_size=32)


@settings(max_examples=200, deadline=None)
@given(phrase_votes)
def test_soft_reward_is_its_definition(votes):
    """The grouped, symmetric computation equals the formula written out: (1/N) sum_j F1(a_i, a_j)."""
    n = len(votes)
    naive = [sum(token_f1(a, b) for b in votes) / n for a in votes]
    assert soft_frequency_reward(votes) == pytest.approx(naive, abs=1e-12)
    assert soft_frequency_reward(votes, lambda a, b: token_f1(a, b)) == pytest.approx(naive, abs=1e-12)
