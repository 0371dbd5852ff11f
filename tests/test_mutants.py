"""Tests written for the mutants of tests/mutation.py that the suite let live: what a prompt's
group trains on (step_module.score), the step's metrics (step_module.step_metrics), the gradient clip and the
`scale` of grpo.update / grpo.gradient, and an update of k prompts in step_module.train_step: the clipped mean of
their gradients. Each fails on the mutant named in its docstring; the training ones assert they trained."""
import math
from pathlib import Path

import pytest
import torch
from PIL import Image

from ttrv_core.config import TTRVConfig
from ttrv_core.events import ItemVotes
from ttrv_core.inputs.dataset import Item
from ttrv_core.method import grpo
from ttrv_core.method import step as step_module
from ttrv_core.method.grpo import UpdateStats, group_advantages
from ttrv_core.model.loading import load_policy
from ttrv_core.sampling.prompt import prepare_prompt
from ttrv_core.sampling.rollout import Rollout

pytestmark = pytest.mark.usefixtures("one_thread")


def choice(i: int, answer: str | None = None) -> Item:
    return Item(f"im{i}.png", Path(f"im{i}.png"), "", task="choice", options=("0", "1", "2", "3"), answer=answer)


def rollout(texts: list[str]) -> Rollout:
    n = len(texts)
    return Rollout(texts=texts, tokens=torch.zeros(n, 2, dtype=torch.long), mask=torch.ones(n, 2),
                   logprobs=torch.zeros(n, 2))


def test_score_trains_the_first_g_on_their_own_rewards():
    """N = 6 votes, G = 3 trained: the advantages are the z-scores of the FIRST three rewards (those of the
    answers trained on; S1, S2), the item's invalid share and mean reward are over all N (S5, S6)."""
    texts = ["B", "A", "A", "A", "", "B"]          # frequency: 2/6, 3/6, 3/6, 3/6, 1/6, 2/6; "" is invalid
    g = step_module.score(choice(0), None, rollout(texts), TTRVConfig(reward="frequency", n_votes=6, n_train=3))
    assert g.rewards == pytest.approx([2 / 6, 3 / 6, 3 / 6, 3 / 6, 1 / 6, 2 / 6])
    assert g.train.tokens.shape[0] == 3 and g.advantages.shape == (3,)
    assert torch.allclose(g.advantages, group_advantages(torch.tensor([2 / 6, 3 / 6, 3 / 6])))
    assert g.advantages[0] < 0 < g.advantages[1]
    assert g.stats.invalid == pytest.approx(1 / 6) and g.stats.reward_mean == pytest.approx(14 / 36)


class Opt:
    param_groups = [{"lr": 0.01}]


def test_step_metrics_by_hand():
    """Two prompts' groups and three updates: means over the prompts and the updates (S7, S9), times
    from the three stamps (S8), accuracies over the labeled items only."""
    stats = [ItemVotes("a", {"A": 3, "B": 1}, "A", 0.75, 0.4, 0.6, True, 0.8, 0.25),
             ItemVotes("b", {"C": 2, "D": 2}, "C", 0.5, 0.5, 0.5, None, 1.0, 0.0)]
    gs = [step_module.Group(choice(0, "0"), None, ["A", "A", "A", "B"], [0.75, 0.75, 0.75, 0.25], None, None, stats[0]),
          step_module.Group(choice(1), None, ["C", "C", "D", "D"], [0.5] * 4, None, None, stats[1])]
    ups = [UpdateStats(loss=l, pg=l, kl=0.01 * l, clip_frac=0.1 * l, ratio_mean=1.0, grad_norm=n)
           for l, n in ((1.0, 2.0), (2.0, 4.0), (3.0, 0.0))]
    m = step_module.step_metrics(gs, ups, Opt(), (10.0, 13.0, 17.5))
    rewards = [0.75, 0.75, 0.75, 0.25] + [0.5] * 4
    assert m["reward/mean"] == pytest.approx(sum(rewards) / 8)
    assert m["reward/std"] == pytest.approx(float(torch.tensor(rewards).std()))
    assert m["answers/majority_share"] == pytest.approx(0.625)
    assert m["answers/entropy"] == pytest.approx(0.45) and m["answers/entropy_paper"] == pytest.approx(0.9)
    assert m["answers/invalid"] == pytest.approx(0.125) and m["answers/distinct"] == 2
    assert m["loss/total"] == pytest.approx(2.0) and m["loss/kl"] == pytest.approx(0.02)
    assert m["grad/norm"] == pytest.approx(2.0) and m["lr"] == 0.01
    assert (m["time/sample_s"], m["time/train_s"], m["time/step_s"]) == pytest.approx((3.0, 4.5, 7.5))
    assert m["acc/majority"] == 1.0 and m["acc/single"] == pytest.approx(0.75)   # item b has no reference


@pytest.fixture(scope="module")
def policy_path(tiny_models):
    return str(tiny_models["qwen2_5_vl"])


def two_answers(pol):
    ids = [pol.tokenizer.encode(w, add_special_tokens=False)[0] for w in ("7", "dog")]
    eos = int(pol.eos_ids[0])
    return torch.tensor([[ids[0], eos], [ids[1], eos]]), torch.ones(2, 2)


def flat_grad(params) -> torch.Tensor:
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in params])


def test_update_clips_the_gradient_and_reports_it_unclipped(policy_path):
    """SGD at lr 1: the step is minus the clipped gradient, of norm grad_clip exactly; grad_norm is the
    norm before the clip (G21)."""
    pol = load_policy(policy_path, "fp32", "cpu", lora_r=4, seed=0)
    prompt = prepare_prompt(pol, Image.new("RGB", (40, 30), (200, 40, 90)), "What is it?")
    tokens, mask = two_answers(pol)
    params = [p for p in pol.model.parameters() if p.requires_grad]
    before = torch.cat([p.detach().flatten().clone() for p in params])
    opt = torch.optim.SGD(params, lr=1.0)
    old = grpo.old_logprobs(pol, prompt, tokens, mask, 1.0, True)
    st = grpo.update(pol, opt, prompt, tokens, mask, old, group_advantages(torch.tensor([1.0, 0.0])),
                     temperature=1.0, eps_clip=0.2, dual_clip=3.0, beta=0.0, grad_clip=1e-3, shared=True)
    moved = torch.cat([p.detach().flatten() for p in params]) - before
    assert st.grad_norm > 0.1                                            # it trained, far above the clip
    assert float(moved.norm()) == pytest.approx(1e-3, rel=1e-3)


def test_gradient_scale_weights_the_prompt(policy_path):
    """grpo.gradient(scale=s) leaves s times the gradient (0: an FSDP stand-in adds nothing; G24)."""
    pol = load_policy(policy_path, "fp32", "cpu", lora_r=4, seed=0)
    prompt = prepare_prompt(pol, Image.new("RGB", (40, 30), (200, 40, 90)), "What is it?")
    tokens, mask = two_answers(pol)
    params = [p for p in pol.model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.0)
    old = grpo.old_logprobs(pol, prompt, tokens, mask, 1.0, True)
    kw = dict(temperature=1.0, eps_clip=0.2, dual_clip=3.0, beta=0.001, shared=True)
    adv = group_advantages(torch.tensor([1.0, 0.0]))
    full = grpo.gradient(pol, opt, prompt, tokens, mask, old, adv, **kw)
    one = flat_grad(params)
    assert one.norm() > 0
    for scale in (0.5, 0.0):
        stats = grpo.gradient(pol, opt, prompt, tokens, mask, old, adv, scale=scale, **kw)
        assert torch.allclose(flat_grad(params), scale * one, atol=1e-9)
        assert torch.equal(stats, full)                                  # the stats are the loss's, unscaled


def test_an_update_of_k_prompts_is_the_clipped_mean_of_their_gradients(policy_path, tmp_path, monkeypatch):
    """step_module.train_step, 3 prompts, k = 2: updates of prompts (1, 2) and (3) (S10); each prompt's gradient
    counts at weight 1 (S11), they are summed (S12) and divided by the update's prompts (S13: grad/norm
    is the norm of the mean), then clipped to grad_clip (G21). Every prompt trained: its advantages are
    not all 0 and its gradient is not 0 (one-token replies at T = 0.5 on the tiny model agree in part)."""
    items = []
    for i in range(3):
        p = tmp_path / f"im{i}.png"
        Image.new("RGB", (28 + i, 20), (40 * i, 30, 90)).save(p)
        items.append(Item(p.name, p, "What is it?"))
    cfg = TTRVConfig(model="x", n_votes=8, n_train=8, max_new_tokens=1, temperature=0.5, prompts_per_step=3,
                     prompts_per_update=2, seed=3, grad_clip=1e-3)
    pol = load_policy(policy_path, "fp32", "cpu", seed=cfg.seed)
    params = [p for p in pol.model.parameters() if p.requires_grad]
    calls, steps = [], []     # per gradient() call: (advantages, the gradient it left); per opt.step: (calls, grad)

    class Recorded(torch.optim.SGD):
        def step(self, closure=None):
            steps.append((len(calls), flat_grad(params).clone()))
            return super().step(closure)

    real = step_module.gradient

    def spy(policy, opt, prompt, tokens, mask, old, adv, **kw):
        out = real(policy, opt, prompt, tokens, mask, old, adv, **kw)
        calls.append((adv.clone(), flat_grad(params).clone()))
        return out

    monkeypatch.setattr(step_module, "gradient", spy)
    ev = step_module.train_step(1, 1, items, pol, Recorded(params, lr=1e-2), cfg)
    assert [n for n, _ in steps] == [2, 3]                               # prompts (1, 2), then (3)
    assert all(adv.abs().sum() > 0 and grad.norm() > 0 for adv, grad in calls)
    norms = []
    for (start, end), (_, applied) in zip(((0, 2), (2, 3)), steps):
        mean = sum(grad for _, grad in calls[start:end]) / (end - start)
        norms += [float(mean.norm())] * (end - start)
        assert mean.norm() > 10 * cfg.grad_clip                          # the clip acts
        assert torch.allclose(applied, mean * (cfg.grad_clip / (mean.norm() + 1e-6)), rtol=1e-4, atol=1e-9)
    assert ev.metrics["grad/norm"] == pytest.approx(sum(norms) / 3, rel=1e-5)   # mean over the prompts
    assert not math.isclose(norms[0], norms[2])


def test_one_update_per_prompt_samples_from_the_runs_stream(policy_path, tmp_path):
    """k = 0 (the paper code's): the step's prompts sample in turn from the run's generator, whose state
    a checkpoint keeps, not from torch's global RNG (S14): the same generator gives the same votes
    whatever the global RNG holds, and another generator other votes."""
    items = []
    for i in range(2):
        p = tmp_path / f"im{i}.png"
        Image.new("RGB", (28 + i, 20), (40 * i, 30, 90)).save(p)
        items.append(Item(p.name, p, "What is it?"))
    cfg = TTRVConfig(model="x", n_votes=8, n_train=2, max_new_tokens=2, prompts_per_step=2, seed=3)

    def votes(global_seed: int, stream_seed: int) -> list[dict]:
        pol = load_policy(policy_path, "fp32", "cpu", seed=cfg.seed)
        opt = torch.optim.AdamW([p for p in pol.model.parameters() if p.requires_grad], lr=1e-3)
        torch.manual_seed(global_seed)
        ev = step_module.train_step(1, 1, items, pol, opt, cfg, gen=torch.Generator().manual_seed(stream_seed))
        return [iv.counts for iv in ev.items]

    assert votes(1, 7) == votes(2, 7)
    assert votes(1, 7) != votes(1, 8)
