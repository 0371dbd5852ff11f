"""Similarity of short answers: the soft-frequency reward and the open-answer metrics.

For phrase answers (medical open questions: "left lung", "the left lung", "lung, left")
exact-match votes are too sparse: 32 phrasings of one answer are 32 answers of one
vote each, and count / N rewards nothing. The soft frequency credits partial agreement:

    token F1    s(a, b) = 2 |a ∩ b| / (|a| + |b|) over the multisets of tokens of
                answers.normalize_open(a) and (b) (SQuAD's F1); 1 when both are empty
    soft        r(a_i) = (1 / N) * sum_{j=1..N} s(a_i, a_j)

The mean runs over all N votes, a_i itself included (s(a, a) = 1), as count(a_i) in the
frequency reward r1(a_i) = count(a_i) / N counts a_i itself (method/rewards.py). So with the
exact-match similarity s(a, b) = [a == b] the soft reward IS count / N, term for term
(tests/test_similarity.py checks it over random vote tables). The mean over the N - 1
others, (N r - 1) / (N - 1), is an affine map of r that the z-scored group advantage
cancels: either definition trains the same.

Evaluation against a reference answer (method/evaluate.py):

    token F1    as above, the project's normalisation (case, punctuation, articles,
                number words)
    ROUGE-1     F-measure of unigram overlap, tokens as rouge-score makes them
                (lowercase, runs of [a-z0-9]), no stemming: VQA-Med's metric

Why a few lines and not a package: rouge-score (Google, the implementation HF `evaluate`
wraps) is the reference, but its last release is 2022, an sdist only, and it pulls in
nltk and absl for a stemmer ROUGE-1 does not use here; unigram ROUGE-1 is ten lines. The
tests check these lines against rouge-score itself on random strings and on hand values
(rouge-score is a test requirement only).

Departures: none from the metrics' definitions. One convention: ROUGE-1 of two empty
texts is 0 (as rouge-score), token F1 of two empty answers is 1 (two empty votes are one
answer; SQuAD's F1 does the same).
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Callable, Sequence

from ttrv_core.tasks.answers import normalize_open

Similarity = Callable[[str, str], float]


def _f1(a: Sequence[str], b: Sequence[str]) -> float:
    """F1 of two token lists: 2 |a ∩ b| / (|a| + |b|), multiset overlap (= 2PR / (P + R))."""
    overlap = sum((Counter(a) & Counter(b)).values())
    return 2 * overlap / (len(a) + len(b)) if overlap else 0.0


def token_f1(pred: str, ref: str) -> float:
    """Token F1 after answers.normalize_open; 1.0 when both are empty.

    >>> token_f1("The left lung.", "left lung")
    1.0
    >>> round(token_f1("left lower lobe", "left lung"), 4)   # 2*1 / (3 + 2)
    0.4
    >>> token_f1("two", "2"), token_f1("", ""), token_f1("", "yes")
    (1.0, 1.0, 0.0)
    """
    return _token_f1(normalize_open(pred).split(), normalize_open(ref).split())


def _token_f1(a: Sequence[str], b: Sequence[str]) -> float:
    return 1.0 if not a and not b else _f1(a, b)


_ROUGE_TOKEN = re.compile(r"[a-z0-9]+")


def rouge_tokens(text: str) -> list[str]:
    """rouge-score's default tokeniser: lowercase, runs of [a-z0-9] (other characters split).

    >>> rouge_tokens("The left-lung, 3.5cm")
    ['the', 'left', 'lung', '3', '5cm']
    """
    return _ROUGE_TOKEN.findall(text.lower())


def rouge1(pred: str, ref: str) -> float:
    """ROUGE-1 F-measure of a prediction against a reference (0 when either has no token).

    >>> round(rouge1("the left lung", "left lung"), 4)   # P 2/3, R 1, F 0.8
    0.8
    >>> rouge1("", "")
    0.0
    """
    return _f1(rouge_tokens(pred), rouge_tokens(ref))


def exact(a: str, b: str) -> float:
    """Exact match of two (already extracted) votes: 1.0 or 0.0."""
    return float(a == b)


def soft_counts(votes: Sequence[str], sim: Similarity = token_f1) -> dict[str, float]:
    """Soft vote count of each distinct answer a: sum over all N votes b of s(a, b), s(a, a) = 1.

    The answers are grouped by their (normalised) form as the votes already are; an
    answer's soft count is its own count plus the partial credit of the others. `sim`
    must be symmetric (token F1 and exact match are): M (M - 1) / 2 similarities over the
    M distinct answers, each normalised once (bench/RESULTS.md, "Timings behind the code's choices").

    >>> {a: round(c, 3) for a, c in soft_counts(["left lung", "left lung", "lung", "heart"]).items()}
    {'left lung': 2.667, 'lung': 2.333, 'heart': 1.0}
    """
    counts = Counter(votes)
    keys = list(counts)                                   # (M,) distinct answers
    if sim is token_f1:  # the same F1, each answer's tokens counted once
        bags = [Counter(normalize_open(a).split()) for a in keys]
        sizes = [sum(c.values()) for c in bags]

        def pair(i: int, j: int) -> float:
            if not sizes[i] and not sizes[j]:
                return 1.0
            overlap = sum(min(c, bags[j][t]) for t, c in bags[i].items() if t in bags[j])
            return 2 * overlap / (sizes[i] + sizes[j])
    else:
        def pair(i: int, j: int) -> float:
            return sim(keys[i], keys[j])
    out = [float(counts[a]) for a in keys]               # a's own votes: s(a, a) = 1
    for i in range(len(keys)):
        for j in range(i + 1, len(keys)):
            s = pair(i, j)
            out[i] += counts[keys[j]] * s
            out[j] += counts[keys[i]] * s
    return dict(zip(keys, out))


def soft_frequency_reward(votes: Sequence[str], sim: Similarity = token_f1) -> list[float]:
    """r(a_i) = (1 / N) sum_j s(a_i, a_j), a_i itself included: count / N under exact match.

    >>> soft_frequency_reward(["A", "A", "B", "C"], exact)
    [0.5, 0.5, 0.25, 0.25]
    >>> [round(r, 3) for r in soft_frequency_reward(["left lung", "the left lung", "lung", "heart"])]
    [0.667, 0.667, 0.583, 0.25]
    """
    n = len(votes)
    soft = soft_counts(votes, sim)
    return [soft[v] / n for v in votes]
