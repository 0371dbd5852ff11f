"""The calibrated reward and the consensus threshold against hand-computed tables (rewards.py).

calibrated: r = count(a) / N - lambda * prior(a) for a valid vote, 0 for an invalid one, where
prior(a) = (c_a + 1) / (C + K) over the C valid votes of the whole step (c_a of them for a)."""
import pytest
import torch

from ttrv_core.config import TTRVConfig
from ttrv_core.inputs.dataset import Item
from ttrv_core.method.rewards import answer_prior, calibrated_reward, compute_rewards, prior_of
from ttrv_core.method.step import score, step_prior
from ttrv_core.sampling.rollout import Rollout

# votes, validity, step prior, lambda, expected rewards
TABLE = [
    # lambda 0: the frequency of a valid vote (over all N votes), 0 for an invalid one
    (["A", "A", "B", "it is two"], [1, 1, 1, 0], {"A": .5, "B": .2, "": .1}, 0.0, [.5, .5, .25, 0.]),
    # lambda 1: the step's favourite loses what the step gives it anyway
    (["A", "A", "B", "it is two"], [1, 1, 1, 0], {"A": .5, "B": .2, "": .1}, 1.0, [0., 0., .05, 0.]),
    # an answer no vote of the step gave takes the smoothing floor ("")
    (["C", "C", "C", "A"], [1, 1, 1, 1], {"A": .5, "": .1}, 2.0, [.75 - .2, .75 - .2, .75 - .2, .25 - 1.0]),
    # all invalid: every reward 0 (no advantage: nothing to learn)
    (["", ".", "hi", "x"], [0, 0, 0, 0], {"": .25}, 1.0, [0., 0., 0., 0.]),
    # an invalid majority never wins: the lone valid vote earns, the three sentences do not
    (["s", "s", "s", "B"], [0, 0, 0, 1], {"B": .3, "": .1}, 0.5, [0., 0., 0., .25 - .15]),
]


@pytest.mark.parametrize("votes, valid, prior, lam, want", TABLE)
def test_calibrated_table(votes, valid, prior, lam, want):
    total, parts = calibrated_reward(votes, [bool(v) for v in valid], prior, lam)
    assert total == pytest.approx(want)
    assert compute_rewards("calibrated", votes, valid=[bool(v) for v in valid], prior=prior, lam=lam)[0] == \
        pytest.approx(want)
    assert [p for p, ok in zip(parts["prior"], valid) if ok] == \
        pytest.approx([prior_of(prior, v) for v, ok in zip(votes, valid) if ok])


def test_prior_is_add_one_smoothed_over_k_answers():
    prior = answer_prior(["A", "A", "A", "B"], k=4)     # C = 4, K = 4
    assert prior["A"] == pytest.approx(4 / 8) and prior["B"] == pytest.approx(2 / 8)
    assert prior_of(prior, "C") == pytest.approx(1 / 8) and prior_of(prior, "D") == pytest.approx(1 / 8)
    # the priors of the K answers sum to 1
    assert sum(prior_of(prior, a) for a in "ABCD") == pytest.approx(1.0)
    # no valid vote at all: uniform over K
    assert prior_of(answer_prior([], k=5), "A") == pytest.approx(1 / 5)


def test_calibrated_needs_the_step_context():
    with pytest.raises(ValueError, match="prior"):
        compute_rewards("calibrated", ["A", "B"])


def rollout(texts: list[str]) -> Rollout:
    n = len(texts)
    return Rollout(texts=texts, tokens=torch.zeros(n, 2, dtype=torch.long), mask=torch.ones(n, 2),
                   logprobs=torch.zeros(n, 2))


def item(i: int) -> Item:
    return Item(f"im{i}.png", None, "", task="choice", options=tuple(str(d) for d in range(4)))


def test_step_prior_comes_from_every_prompt_of_the_step():
    """Two prompts: prompt 1 votes A four times, prompt 2 votes B; the prior sees all eight valid votes."""
    cfg = TTRVConfig(reward="calibrated", n_votes=6, n_train=6)
    ros = [rollout(["A", "A", "A", "A", "B", "it is one"]), rollout(["B", "B", "C", "A", "sentence", ""])]
    valid = [v for ro in ros for v in ro.texts if v in "ABCD" and v]
    prior = step_prior(cfg, [item(0), item(1)], valid)
    assert prior_of(prior, "A") == pytest.approx((5 + 1) / (9 + 4))
    g = score(item(0), None, ros[0], cfg, prior)
    assert g.rewards == pytest.approx([4 / 6 - 6 / 13] * 4 + [1 / 6 - 4 / 13, 0.0])
    # A: 0.667 - 0.462 = 0.205; the lone B: 0.167 - 0.308 = -0.141; the invalid vote: 0
    assert g.advantages[:4].gt(0).all() and g.advantages[4] < 0 and g.advantages[5] < g.advantages[0]
    assert step_prior(TTRVConfig(), [item(0)], valid) is None          # other rewards need no prior


def test_consensus_threshold_zeroes_a_weak_majority():
    texts = ["A", "A", "B", "C", "D", "A"]                  # majority share 0.5
    weak = score(item(0), None, rollout(texts), TTRVConfig(reward="frequency", n_votes=6, n_train=6, consensus=0.6))
    strong = score(item(0), None, rollout(texts), TTRVConfig(reward="frequency", n_votes=6, n_train=6, consensus=0.5))
    assert torch.equal(weak.advantages, torch.zeros(6))
    assert strong.advantages.abs().sum() > 0
    assert weak.rewards == strong.rewards                   # only what is trained on changes


def test_prior_takes_k_at_least_the_answers_seen():
    """A K below the distinct answers the votes gave is raised to them: the priors still sum to 1."""
    prior = answer_prior(["A", "B", "C"], k=2)                             # K = 3: (1 + 1) / (3 + 3)
    assert [prior_of(prior, a) for a in "ABC"] == pytest.approx([1 / 3] * 3)


def test_calibrated_refuses_without_either_half_of_its_context():
    with pytest.raises(ValueError, match="prior"):
        compute_rewards("calibrated", ["A", "B"], valid=[True, True])
    with pytest.raises(ValueError, match="validity"):
        compute_rewards("calibrated", ["A", "B"], prior=answer_prior(["A", "B"]))


def test_a_step_of_one_image_has_a_uniform_prior():
    """Single-example mode: the step's prompts are copies of one image, whose own votes would be the
    prior and cancel its frequency (the majority earning about 0, below an invalid reply's 0 once
    lambda x prior exceeds it). Its prior is uniform instead: the majority letter still wins."""
    cfg = TTRVConfig(reward="calibrated", n_votes=6, n_train=6)
    ro = rollout(["A", "A", "A", "A", "B", "it is one"])
    one = step_prior(cfg, [item(0)] * 4, ["A", "A", "A", "A", "B"] * 4)
    assert all(prior_of(one, a) == pytest.approx(1 / 4) for a in "ABCD")
    g = score(item(0), None, ro, cfg, one)
    assert g.rewards == pytest.approx([4 / 6 - 1 / 4] * 4 + [1 / 6 - 1 / 4, 0.0])
    assert g.advantages[0] > 0 and g.advantages[0] > g.advantages[5] > g.advantages[4]
    # two images: the prior is theirs
    two = step_prior(cfg, [item(0), item(1)], ["A", "A", "B"])
    assert prior_of(two, "A") == pytest.approx(3 / 7)
