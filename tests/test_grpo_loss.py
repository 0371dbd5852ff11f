"""grpo_loss against hand-computed values, and finite gradients whatever sits at a padded position.

One answer token per row unless said otherwise; ratio = exp(logp - old_logp), eps = 0.2, c = 3:
    pg = max(-A r, -A clip(r, 0.8, 1.2)), then min(pg, -A c) where A < 0;  k3 = e^d - d - 1, d = ref - logp.
"""
import math

import pytest
import torch

from ttrv_core.method.grpo import grpo_loss, low_var_kl


def one_token(ratio: float, adv: float, ref_minus_logp: float = 0.0, beta: float = 0.0):
    logp = torch.tensor([[-1.0]])
    old = logp - math.log(ratio)
    ref = logp + ref_minus_logp
    return grpo_loss(logp, old, ref, torch.tensor([adv]), torch.ones(1, 1), 0.2, 3.0, beta)


@pytest.mark.parametrize("ratio, adv, pg, clip_frac", [
    (1.1, +1.0, -1.1, 0.0),   # positive advantage, ratio inside [0.8, 1.2]: -A r
    (1.1, -1.0, +1.1, 0.0),   # negative advantage, inside
    (1.5, +1.0, -1.2, 1.0),   # clipped high: -A (1 + eps)
    (1.5, +2.0, -2.4, 1.0),
    (0.5, -1.0, +0.8, 1.0),   # clipped low: -A (1 - eps)
    (0.5, +1.0, -0.5, 0.0),   # below the range with A > 0: the unclipped, pessimistic value
    (1.5, -1.0, +1.5, 0.0),   # above the range with A < 0: unclipped
    (5.0, -1.0, +3.0, 0.0),   # dual clip: min(5, -A c = 3)
    (5.0, -2.0, +6.0, 0.0),   # dual clip: min(10, 6)
    (2.0, -1.0, +2.0, 0.0),   # under the dual clip's bound: unchanged
    (1.0, 0.0, 0.0, 0.0),     # zero advantage
])
def test_policy_term_by_hand(ratio, adv, pg, clip_frac):
    parts = one_token(ratio, adv)
    assert parts.pg.item() == pytest.approx(pg, abs=1e-6)
    assert parts.loss.item() == pytest.approx(pg, abs=1e-6)     # beta = 0: the loss is the policy term
    assert parts.clip_frac.item() == clip_frac
    assert parts.ratio_mean.item() == pytest.approx(ratio, rel=1e-6)


@pytest.mark.parametrize("d, kl", [
    (0.0, 0.0),
    (1.0, math.e - 2),                # e^1 - 1 - 1
    (-1.0, math.exp(-1.0)),           # e^-1 + 1 - 1
    (0.5, math.exp(0.5) - 1.5),
    (3.0, 10.0),                      # e^3 - 4 = 16.09, clamped to 10 (verl)
])
def test_k3_by_hand(d, kl):
    parts = one_token(1.0, 0.0, ref_minus_logp=d, beta=0.5)
    assert parts.kl.item() == pytest.approx(kl, rel=1e-6)
    assert parts.loss.item() == pytest.approx(0.5 * kl, rel=1e-6)


def test_token_mean_over_answers_of_unequal_length():
    """Three tokens of an A = +1 answer and one of an A = -1 answer: (-3 + 1) / 4, not the mean of
    the two answers' means (0); padding counts nowhere."""
    logp = torch.full((2, 3), -1.0)
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    ref = logp + torch.tensor([[1.0, 0.0, 0.0], [-1.0, 7.0, 7.0]])   # k3: e - 2, 0, 0 | e^-1 (pads ignored)
    parts = grpo_loss(logp, logp.clone(), ref, torch.tensor([1.0, -1.0]), mask, beta=0.1)
    assert parts.pg.item() == pytest.approx(-0.5)
    assert parts.kl.item() == pytest.approx((math.e - 2 + math.exp(-1.0)) / 4, rel=1e-6)
    assert parts.loss.item() == pytest.approx(-0.5 + 0.1 * (math.e - 2 + math.exp(-1.0)) / 4, rel=1e-6)
    assert parts.ratio_mean.item() == 1.0 and parts.clip_frac.item() == 0.0


def test_no_kl_when_beta_is_zero():
    logp = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    parts = grpo_loss(logp, logp.detach(), None, torch.tensor([1.0]), torch.ones(1, 2), beta=0.0)
    assert parts.kl.item() == 0.0
    parts.loss.backward()
    assert torch.equal(logp.grad, torch.tensor([[-0.5, -0.5]]))  # d(-A r)/d logp = -A r / 2 tokens


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("beta", [0.001, 0.0])
def test_padded_position_gives_finite_gradients(dtype, beta):
    """A (2, 3) group whose second answer ends after one token; the training forward's log-prob at
    a padded position is -1e4 (anything goes there). exp(ref - logp) = exp(1e4) = inf before the
    mask gave 0 * inf = NaN in backward, in the KL even with beta = 0."""
    logp = torch.tensor([[-1.0, -2.0, -0.5], [-1.5, -1e4, -3.0]], dtype=dtype, requires_grad=True)
    old = torch.tensor([[-1.1, -2.0, -0.4], [-1.5, 0.0, 0.0]], dtype=dtype)   # the sampler's: 0 at padding
    ref = torch.tensor([[-1.0, -2.5, -0.5], [-1.2, -5.0, -4.0]], dtype=dtype)
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]], dtype=dtype)
    parts = grpo_loss(logp, old, ref, torch.tensor([0.7, -0.7], dtype=dtype), mask, beta=beta)
    parts.loss.backward()
    assert torch.isfinite(parts.loss) and torch.isfinite(logp.grad).all(), logp.grad
    assert logp.grad[1, 1:].eq(0).all()                                         # padding gets no gradient
    # and at a real token far off the reference: exp(100) is inf in fp32 without the +-20 clamp (verl)
    far = torch.tensor([[-1.0, -100.0]], dtype=dtype, requires_grad=True)
    zeros = torch.zeros(1, 2, dtype=dtype)
    p2 = grpo_loss(far, zeros, zeros, torch.tensor([1.0], dtype=dtype), torch.ones(1, 2, dtype=dtype), beta=0.001)
    p2.loss.backward()
    assert torch.isfinite(far.grad).all()


def test_low_var_kl_is_zero_at_padding():
    kl = low_var_kl(torch.tensor([[-1.0, -1e4]]), torch.tensor([[-1.0, -2.0]]), torch.tensor([[1.0, 0.0]]))
    assert torch.equal(kl, torch.zeros(1, 2))


@pytest.mark.parametrize("rewards, want", [
    ([1.0, 0.0], [0.5 / math.sqrt(0.5), -0.5 / math.sqrt(0.5)]),   # unbiased std (verl): sqrt(0.5), not 0.5
    ([1.0, 0.0, 0.0, 0.0], [1.5, -0.5, -0.5, -0.5]),                # mean 0.25, unbiased std 0.5
    ([0.3, 0.3, 0.3], [0.0, 0.0, 0.0]),                             # all equal: 0 / (0 + eps)
    ([0.7], [0.0]),                                                 # a group of one: 0, not NaN
])
def test_group_advantages_by_hand(rewards, want):
    from ttrv_core.method.grpo import group_advantages
    got = group_advantages(torch.tensor(rewards, dtype=torch.float64))
    assert got.tolist() == pytest.approx(want, rel=1e-5, abs=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("far", [-30.0, -60.0, -95.0, -150.0, -1e4])
def test_finite_gradients_at_any_distance_from_the_reference(dtype, far):
    """A real token's log-prob far below pi_old's and the reference's: exp(-log-ratio) overflows above
    about 88.7 in fp32 and bf16, so the +-20 clamp (verl) must bite well before (at 100, -95 gave NaN)."""
    logp = torch.tensor([[-1.0, far]], dtype=dtype, requires_grad=True)
    zeros = torch.zeros(1, 2, dtype=dtype)
    for adv in (1.0, -1.0):
        parts = grpo_loss(logp, zeros, zeros, torch.tensor([adv], dtype=dtype), torch.ones(1, 2, dtype=dtype),
                          beta=0.001)
        logp.grad = None
        parts.loss.backward()
        assert torch.isfinite(parts.loss) and torch.isfinite(logp.grad).all(), (far, adv, logp.grad)


@pytest.mark.parametrize("beta", [0.001, 0.0])
def test_an_infinite_log_prob_at_padding_is_masked_out(beta):
    """Anything at a padded position, -inf included (a token of probability 0): masked by selection, not
    by multiplying with the mask (-inf * 0 = NaN)."""
    logp = torch.tensor([[-1.0, -float("inf")]], requires_grad=True)
    old = torch.tensor([[-1.1, 0.0]])                   # ratio e^0.1, inside the clip
    ref = torch.tensor([[-0.8, -3.0]])
    parts = grpo_loss(logp, old, ref, torch.tensor([1.0]), torch.tensor([[1.0, 0.0]]), beta=beta)
    parts.loss.backward()
    assert torch.isfinite(parts.loss) and torch.isfinite(logp.grad).all() and logp.grad[0, 1] == 0
    assert parts.loss.item() == pytest.approx(-math.exp(0.1) + beta * (math.exp(0.2) - 0.2 - 1), rel=1e-6)
