"""Micro-batched GRPO updates (grpo.update when G answers do not fit): the same step.

fp32 on CPU, the demo model: an update over micro-batches of answers gives the same
loss and the same LoRA gradients as one forward over all G; a simulated out-of-memory
error on the full forward makes update() fall back to micro-batches by itself."""
import math

import torch
from PIL import Image

from ttrv_core.config import DEMO_MODEL
from ttrv_core.method import grpo
from ttrv_core.model.loading import load_policy
from ttrv_core.sampling.prompt import prepare_prompt
from ttrv_core.sampling.rollout import sample

G = 8


def _setup():
    pol = load_policy(DEMO_MODEL, "fp32", "cpu")
    torch.manual_seed(1)
    for name, p in pol.model.named_parameters():  # lora_B starts at 0: make every LoRA grad non-trivial
        if "lora_B" in name:
            p.data.normal_(0, 0.05)
    prompt = prepare_prompt(pol, Image.new("RGB", (32, 32), (250, 250, 250)), "Which digit is shown in the image?")
    ro = sample(pol, prompt, G, temperature=1.5, max_new_tokens=4, generator=torch.Generator().manual_seed(3))
    return pol, prompt, ro


def _step(pol, prompt, ro, chunk=None):
    opt = torch.optim.SGD([p for p in pol.model.parameters() if p.requires_grad], lr=0.0)  # grads, no move
    args = (pol, opt, prompt, ro.tokens, ro.mask, ro.logprobs.detach() - 0.05, grpo.group_advantages(
        torch.linspace(0, 1, G)))
    kw = dict(temperature=1.0, eps_clip=0.2, dual_clip=3.0, beta=0.1, grad_clip=1e9, shared=True)
    st = grpo._update(*args, chunk, **kw) if chunk else grpo.update(*args, **kw)
    grads = {n: p.grad.clone() for n, p in pol.model.named_parameters() if p.grad is not None}
    return st, grads


def _same(a, b):
    (sa, ga), (sb, gb) = a, b
    for k in ("loss", "pg", "kl", "clip_frac", "ratio_mean"):
        assert math.isclose(getattr(sa, k), getattr(sb, k), rel_tol=1e-5, abs_tol=2e-6), k  # fp32 sums in another order
    assert ga.keys() == gb.keys() and ga
    flat_a = torch.cat([g.flatten() for g in ga.values()])
    flat_b = torch.cat([gb[n].flatten() for n in ga])
    assert float((flat_a - flat_b).norm() / flat_b.norm()) <= 1e-5


def test_micro_batches_give_the_same_step():
    pol, prompt, ro = _setup()
    full = _step(pol, prompt, ro, chunk=G)
    for chunk in (1, 3, 4):
        _same(_step(pol, prompt, ro, chunk=chunk), full)


def test_out_of_memory_falls_back_to_micro_batches(monkeypatch):
    pol, prompt, ro = _setup()
    full = _step(pol, prompt, ro)
    real = grpo.answer_logprobs

    def tight(policy, prompt, tokens, *a, **k):  # "out of memory" above 3 answers in one forward
        if tokens.shape[0] > 3:
            raise torch.OutOfMemoryError("simulated")
        return real(policy, prompt, tokens, *a, **k)

    monkeypatch.setattr(grpo, "answer_logprobs", tight)
    _same(_step(pol, prompt, ro), full)
    assert pol.answers_per_forward == 2   # 8 -> 4 -> 2, remembered for the next steps
