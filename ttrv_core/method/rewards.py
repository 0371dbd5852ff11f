"""Rewards: pure functions over the N extracted answers ("votes") of one prompt.

As in the authors' code (TTRV, a fork of TTRL on verl), for votes a_1..a_N
with distinct answers k = 1..M and shares p_k = count_k / N:

    frequency   r1(a_i) = count(a_i) / N
    majority    1 if a_i is the majority answer else 0          (TTRL)
    entropy     H_norm = -sum_k p_k ln p_k / ln M   (0 when M = 1; `normalized_entropy`)
    ttrv        r(a_i) = r1(a_i) - alpha * H_norm,   alpha = 0.75
    soft        r(a_i) = (1/N) sum_j s(a_i, a_j), s = token F1 (ours, for phrase
                answers; tasks/similarity.py): count / N when s is exact match

The paper writes r2 = sum_k p_k log p_k and r = r1 + alpha * r2, the same
thing up to the normalisation by ln M that the code applies.

NOTE, stated plainly: H_norm is one number for the whole group of a prompt,
and the GRPO advantage (r - mean) / (std + 1e-6) is taken within that group,
so the entropy term cancels exactly. With group-normalised advantages the
published method trains on the frequency reward alone; `ttrv` and
`frequency` give the same update to numerical precision.

A variant in which the entropy term can act (ours):

    ttrv_marginal   r(a_i) = r1(a_i) + alpha * N * (H_loo(i) - H(all)) / ln N

where H_loo(i) is the entropy (nats) of the votes with vote i left out: each
vote is credited with how much it lowers the entropy of the answer
distribution. The term differs between answers, so it survives the
group normalisation; it is a concave reshaping of r1 that favours the
majority more strongly when the distribution is flat. The factor N / ln N
puts it on the scale of r1 (a leave-one-out difference is O(1/N)).

A reward that keeps the reply-format repair without feeding the model's biases (ours):

    calibrated  r(a_i) = count(a_i) / N - lambda * prior(a_i)   for a valid vote (answers.is_valid)
                r(a_i) = 0                                    for an invalid one
                prior(a) = (c_a + 1) / (C + K): the add-one-smoothed share of answer a among
                the C valid votes of all the step's prompts (c_a of them for a), K answers

Departures from the paper, in `calibrated`: (1) an invalid vote never counts toward an answer
and earns 0, so a sentence or an empty reply is never a winning "answer" (EVOL-RL scores such
replies -1); (2) what the whole step votes for, regardless of the image, is subtracted, so an
answer earns by being common for this image, not by being the model's favourite everywhere
(a letter the base model over-uses). lambda = 0 keeps (1) alone. The prior is a step's, so
`calibrated` needs every prompt of the step sampled before any is scored (step.train_step).

A consensus threshold (SCRL), for any reward: a prompt whose majority share of the N votes is
below tau trains on nothing (its advantages are 0): a weak majority is a poor pseudo-label.

H / ln M is the paper's normalisation and only the reward uses it. It is not
monotone in how concentrated the votes are (an answer that drops out lowers M
and can raise it), so what runs report and plot is H / ln N (`vote_entropy`),
N the number of votes.

Ties for the majority are broken by first appearance among the votes (the
authors use Counter.most_common, which does the same).
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Sequence

from ttrv_core.config import REWARDS
from ttrv_core.tasks.similarity import soft_frequency_reward


def frequency_reward(votes: Sequence[str]) -> list[float]:
    """r1(a) = count(a) / N for each vote.

    >>> frequency_reward(["A", "A", "B", "C"])
    [0.5, 0.5, 0.25, 0.25]
    """
    counts = Counter(votes)
    n = len(votes)
    return [counts[v] / n for v in votes]


def majority_answer(votes: Sequence[str]) -> str:
    """The most common vote; ties go to the one that appeared first.

    >>> majority_answer(["B", "A", "A", "B"])
    'B'
    """
    if not votes:
        raise ValueError("no votes")
    return Counter(votes).most_common(1)[0][0]


def majority_reward(votes: Sequence[str]) -> list[float]:
    """TTRL's reward: 1 if the vote equals the majority answer, else 0.

    >>> majority_reward(["A", "B", "A"])
    [1.0, 0.0, 1.0]
    """
    maj = majority_answer(votes)
    return [float(v == maj) for v in votes]


def entropy(votes: Sequence[str]) -> float:
    """Entropy in nats of the answer distribution, -sum p ln p.

    >>> round(entropy(["A", "B"]), 6)
    0.693147
    """
    n = len(votes)
    return -sum((c / n) * math.log(c / n) for c in Counter(votes).values()) if n else 0.0


def normalized_entropy(votes: Sequence[str]) -> float:
    """H / ln M over the M distinct answers; 0 when M = 1 (authors' code).

    >>> round(normalized_entropy(["A", "B", "C"]), 9)
    1.0
    >>> normalized_entropy(["A", "A"])
    0.0
    """
    m = len(set(votes))
    return entropy(votes) / math.log(m) if m > 1 else 0.0


def vote_entropy(votes: Sequence[str]) -> float:
    """H / ln N over the N votes (0 when N <= 1): 0 when all agree, 1 when all differ.

    The measure plotted and reported (`answers/entropy`, `eval/entropy`). Unlike the
    paper's H / ln M it never rises when a vote moves to a more common answer (H is
    Schur-concave and N is fixed); H / ln M can, when an answer drops out and M falls:

    >>> [round(f(v), 2) for v in (18 * ["A"] + ["B", "C"], 18 * ["A"] + 2 * ["B"])
    ...  for f in (normalized_entropy, vote_entropy)]
    [0.36, 0.13, 0.47, 0.11]
    """
    n = len(votes)
    return entropy(votes) / math.log(n) if n > 1 else 0.0


def ttrv_reward(votes: Sequence[str], alpha: float = 0.75) -> tuple[list[float], dict[str, list[float]]]:
    """r = r1 - alpha * H_norm, with its components (see the module NOTE).

    >>> total, parts = ttrv_reward(["A", "A", "A", "B"], alpha=0.0)
    >>> total
    [0.75, 0.75, 0.75, 0.25]
    """
    r1 = frequency_reward(votes)
    h = normalized_entropy(votes)
    total = [r - alpha * h for r in r1]
    return total, {"frequency": r1, "entropy_norm": [h] * len(votes)}


def ttrv_marginal_reward(votes: Sequence[str], alpha: float = 0.75) -> tuple[list[float], dict[str, list[float]]]:
    """Our variant: r1 plus each vote's leave-one-out entropy reduction.

    >>> total, parts = ttrv_marginal_reward(["A", "A"], alpha=0.75)
    >>> total
    [1.0, 1.0]
    """
    n = len(votes)
    r1 = frequency_reward(votes)
    if n < 2:
        return r1, {"frequency": r1, "entropy_marginal": [0.0] * n}
    counts = Counter(votes)
    h_all = entropy(votes)
    scale = n / math.log(n)
    loo: dict[str, float] = {}
    for a, c in counts.items():
        # entropy of the N-1 votes left when one vote for `a` is removed
        rest = [(cc - (1 if b == a else 0)) / (n - 1) for b, cc in counts.items()]
        h_rest = -sum(p * math.log(p) for p in rest if p > 0)
        loo[a] = scale * (h_rest - h_all)
    marg = [loo[v] for v in votes]
    total = [r + alpha * m for r, m in zip(r1, marg)]
    return total, {"frequency": r1, "entropy_marginal": marg}


def answer_prior(valid_votes: Sequence[str], k: int = 0) -> dict[str, float]:
    """prior(a) = (c_a + 1) / (C + K) over the valid votes of a step (C of them, c_a for a); K answers
    (0: the distinct answers among the votes). `prior_of` reads an answer that no vote gave.

    >>> answer_prior(["A", "A", "B"], k=4)
    {'A': 0.42857142857142855, 'B': 0.2857142857142857, '': 0.14285714285714285}
    """
    counts = Counter(valid_votes)
    k = max(k or len(counts), len(counts), 1)
    total = len(valid_votes) + k
    return {a: (c + 1) / total for a, c in counts.most_common()} | {"": 1 / total}


def prior_of(prior: dict[str, float], answer: str) -> float:
    """An answer's prior; one no vote gave has the smoothing's floor, stored under ""."""
    return prior.get(answer, prior.get("", 0.0))


def calibrated_reward(votes: Sequence[str], valid: Sequence[bool], prior: dict[str, float],
                      lam: float = 1.0) -> tuple[list[float], dict[str, list[float]]]:
    """r = count(a) / N - lambda * prior(a) for a valid vote, 0 for an invalid one (module docstring).

    >>> total, parts = calibrated_reward(["A", "A", "B", "it is two"], [True, True, True, False],
    ...                                  {"A": 0.5, "B": 0.1, "": 0.05}, lam=1.0)
    >>> [round(r, 2) for r in total]
    [0.0, 0.0, 0.15, 0.0]
    """
    n = len(votes)
    counts = Counter(v for v, ok in zip(votes, valid) if ok)
    freq = [counts[v] / n if ok else 0.0 for v, ok in zip(votes, valid)]
    pri = [prior_of(prior, v) if ok else 0.0 for v, ok in zip(votes, valid)]
    total = [f - lam * p if ok else 0.0 for f, p, ok in zip(freq, pri, valid)]
    return total, {"frequency": freq, "prior": pri}


def compute_rewards(name: str, votes: Sequence[str], alpha: float = 0.75, *, valid: Sequence[bool] | None = None,
                    prior: dict[str, float] | None = None,
                    lam: float = 1.0) -> tuple[list[float], dict[str, list[float]]]:
    """Dispatch by name; every reward returns (total, components). `calibrated` needs `valid`
    (each vote's validity) and `prior` (answer_prior over the step's valid votes)."""
    if name == "calibrated":
        if valid is None or prior is None:
            raise ValueError("the calibrated reward needs each vote's validity and the step's answer prior")
        return calibrated_reward(votes, valid, prior, lam)
    simple: dict[str, Callable[[Sequence[str]], list[float]]] = {
        "frequency": frequency_reward, "majority": majority_reward, "soft": soft_frequency_reward}
    if name in simple:
        r = simple[name](votes)
        return r, {name: r}
    if name == "ttrv":
        return ttrv_reward(votes, alpha)
    if name == "ttrv_marginal":
        return ttrv_marginal_reward(votes, alpha)
    raise ValueError(f"unknown reward '{name}'; expected one of {', '.join(REWARDS)}")


@dataclass(frozen=True)
class VoteStats:
    """Label-free summary of one prompt's votes."""
    counts: dict[str, int]
    majority: str
    majority_share: float
    entropy: float             # H / ln N (vote_entropy): what is plotted and reported
    entropy_paper: float       # H / ln M (normalized_entropy): the paper's, what the ttrv reward uses
    n_distinct: int


def vote_stats(votes: Sequence[str]) -> VoteStats:
    counts = dict(Counter(votes).most_common())
    maj = majority_answer(votes)
    return VoteStats(counts=counts, majority=maj, majority_share=counts[maj] / len(votes),
                     entropy=vote_entropy(votes), entropy_paper=normalized_entropy(votes), n_distinct=len(counts))
