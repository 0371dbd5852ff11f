"""Rewards against hand-computed values (the formulas of rewards.py's module docstring)."""
import math

import pytest

from ttrv_core.method.rewards import (
    compute_rewards,
    entropy,
    frequency_reward,
    majority_answer,
    majority_reward,
    normalized_entropy,
    ttrv_marginal_reward,
    ttrv_reward,
)

LN2, LN3, LN4 = math.log(2), math.log(3), math.log(4)

# votes, frequency r1, majority (TTRL), H_norm
TABLE = [
    # unanimous: one distinct answer -> H_norm 0 by definition
    (["A", "A", "A", "A"], [1, 1, 1, 1], [1, 1, 1, 1], 0.0),
    # 3-1 split
    (["A", "A", "A", "B"], [.75, .75, .75, .25], [1, 1, 1, 0],
     -(.75 * math.log(.75) + .25 * math.log(.25)) / LN2),
    # tie 2-2: majority goes to the first seen
    (["B", "A", "A", "B"], [.5, .5, .5, .5], [1, 0, 0, 1], 1.0),
    # all different: maximal entropy
    (["A", "B", "C", "D"], [.25] * 4, [1, 0, 0, 0], 1.0),
    # empty answers are votes like any other
    (["", "", "C", "D"], [.5, .5, .25, .25], [1, 1, 0, 0],
     -(.5 * math.log(.5) + 2 * .25 * math.log(.25)) / LN3),
    # single vote
    (["A"], [1.0], [1.0], 0.0),
    # 2-1-1 with a raw string among letters
    (["KOALA", "A", "A", "B"], [.25, .5, .5, .25], [0, 1, 1, 0],
     -(.5 * math.log(.5) + 2 * .25 * math.log(.25)) / LN3),
]


@pytest.mark.parametrize("votes,r1,maj,h", TABLE)
def test_table(votes, r1, maj, h):
    assert frequency_reward(votes) == pytest.approx(r1)
    assert majority_reward(votes) == pytest.approx(maj)
    assert normalized_entropy(votes) == pytest.approx(h)
    total, parts = ttrv_reward(votes, alpha=0.75)
    assert total == pytest.approx([r - 0.75 * h for r in r1])
    assert parts["frequency"] == pytest.approx(r1)
    assert parts["entropy_norm"] == pytest.approx([h] * len(votes))


def test_entropy_nats():
    assert entropy(["A", "B", "C", "D"]) == pytest.approx(LN4)
    assert entropy(["A"] * 5) == 0.0


def test_majority_tie_first_seen():
    assert majority_answer(["C", "B", "B", "C", "A"]) == "C"
    with pytest.raises(ValueError):
        majority_answer([])


def test_marginal_hand_values():
    # votes A A B: H = -(2/3 ln 2/3 + 1/3 ln 1/3); drop an A -> {A, B}: ln 2; drop B -> {A, A}: 0
    votes = ["A", "A", "B"]
    h = -(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3))
    scale = 3 / math.log(3)
    total, parts = ttrv_marginal_reward(votes, alpha=0.75)
    assert parts["entropy_marginal"] == pytest.approx([scale * (LN2 - h)] * 2 + [scale * (0 - h)])
    assert total == pytest.approx([2 / 3 + 0.75 * scale * (LN2 - h)] * 2 + [1 / 3 - 0.75 * scale * h])
    # majority votes lower the entropy (credited), the minority vote raises it
    assert parts["entropy_marginal"][0] > 0 > parts["entropy_marginal"][2]


def test_dispatch_and_unknown():
    assert compute_rewards("majority", ["A", "B", "A"])[0] == [1.0, 0.0, 1.0]
    with pytest.raises(ValueError, match="unknown reward"):
        compute_rewards("nope", ["A"])


def test_entropy_term_cancels_under_group_normalisation():
    """The module NOTE: ttrv and frequency give identical GRPO advantages."""
    import torch

    from ttrv_core.method.grpo import group_advantages
    for votes, *_ in TABLE:
        if len(votes) < 2:
            continue
        a = group_advantages(torch.tensor(compute_rewards("ttrv", votes)[0], dtype=torch.float64))
        b = group_advantages(torch.tensor(compute_rewards("frequency", votes)[0], dtype=torch.float64))
        assert torch.allclose(a, b, atol=1e-9)
    # ...but not for the marginal variant on a 2-1-1 split
    votes = ["A", "A", "B", "C", "A", "B"]
    a = group_advantages(torch.tensor(compute_rewards("ttrv_marginal", votes)[0], dtype=torch.float64))
    b = group_advantages(torch.tensor(compute_rewards("frequency", votes)[0], dtype=torch.float64))
    assert not torch.allclose(a, b, atol=1e-3)


def test_equal_rewards_give_zero_advantages_in_float32():
    """The engine hands group_advantages float32 rewards: a group whose answers all
    agree gets exactly zero advantages under ttrv as under frequency (a float32 mean
    would be a rounding step off and, divided by std + eps, push every answer up)."""
    import torch

    from ttrv_core.method.grpo import group_advantages
    votes = ["3"] * 16 + ["5"] * 9 + ["8"] * 7   # N = 32 votes, the first G = 16 all "3"
    for name in ("ttrv", "frequency", "majority", "ttrv_marginal"):
        r = torch.tensor(compute_rewards(name, votes)[0][:16])      # float32, as in step.train_step
        assert torch.equal(group_advantages(r), torch.zeros(16)), name
    mixed = ["3", "5"] * 8 + ["3"] * 16
    a = group_advantages(torch.tensor(compute_rewards("ttrv", mixed)[0][:16]))
    b = group_advantages(torch.tensor(compute_rewards("frequency", mixed)[0][:16]))
    assert torch.allclose(a, b, atol=1e-6)
