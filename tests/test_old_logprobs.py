"""The first update of every step starts at ratio 1, clip_frac 0, in bf16 too (grpo.old_logprobs).

pi_old is recomputed with the training forward's numerics before the step's updates (as verl
does). Taken from the sampler instead, pi_old comes from the bf16 decode with a KV cache, and
the first ratio is off 1 by ~1e-3 on the demo model in bf16 (about 0.05 per token at most,
bench/RESULTS.md's decode check), which biases clip_frac and the KL from the first update on.
"""
import pytest
import torch

from ttrv_core import engine
from ttrv_core.config import DEMO_MODEL, TTRVConfig
from ttrv_core.data import load_dataset
from ttrv_core.demos import by_key
from ttrv_core.events import StepEvent
from ttrv_core.models import load_policy

EXAMPLES = by_key("open").example_dir

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.mark.parametrize("mode", ["fp32", "bf16", "bf16-autocast"])
def test_first_update_of_each_step_has_ratio_one(monkeypatch, mode):
    pol = load_policy(DEMO_MODEL, "fp32" if mode == "fp32" else "bf16", "cpu")
    if mode == "bf16-autocast":  # the CUDA path's numerics (models.Policy.autocast), on the CPU
        pol.autocast_dtype = torch.bfloat16
    items = load_dataset(EXAMPLES, None, EXAMPLES / "questions.csv", "open").items[:4]
    calls = []
    real = engine.update
    monkeypatch.setattr(engine, "update", lambda *a, **k: calls.append(real(*a, **k)) or calls[-1])
    cfg = TTRVConfig(n_votes=8, n_train=4, max_new_tokens=4, prompts_per_step=2, max_steps=2, lr=1e-2, seed=0,
                     temperature=1.5)
    firsts, seconds = [], []
    for ev in engine.adapt(cfg, pol, items, evaluate_before=False):
        if isinstance(ev, StepEvent):
            firsts.append(calls[0])
            seconds.append(calls[1])
            calls.clear()
    assert len(firsts) == 2
    for st in firsts:
        assert st.ratio_mean == 1.0 and st.clip_frac == 0.0, st
    # the second prompt of a step is trained after the first prompt's update moved the policy
    assert any(st.ratio_mean != 1.0 for st in seconds)


def test_old_logprobs_are_the_training_forwards(tiny_models):
    """Bit for bit the log-probs the update's forward computes, over micro-batches too."""
    from PIL import Image

    from ttrv_core.grpo import answer_logprobs, old_logprobs
    from ttrv_core.rollout import prepare_prompt, sample
    pol = load_policy(str(tiny_models["qwen2_5_vl"]), "bf16", "cpu", lora_r=4)
    prompt = prepare_prompt(pol, Image.new("RGB", (40, 30), (10, 200, 90)), "What is it?")
    ro = sample(pol, prompt, 6, max_new_tokens=4, generator=torch.Generator().manual_seed(0))
    pol.model.train()
    with torch.no_grad():
        want = answer_logprobs(pol, prompt, ro.tokens) * ro.mask
    assert torch.equal(old_logprobs(pol, prompt, ro.tokens, ro.mask, 1.0, True), want)
    pol.answers_per_forward = 2
    with torch.no_grad():
        parts = torch.cat([answer_logprobs(pol, prompt, ro.tokens[i:i + 2]) for i in range(0, 6, 2)]) * ro.mask
    assert torch.equal(old_logprobs(pol, prompt, ro.tokens, ro.mask, 1.0, True), parts)
