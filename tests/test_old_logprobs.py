"""The first update of every step starts at ratio 1, clip_frac 0, in bf16 too (grpo.old_logprobs).

pi_old is recomputed with the training forward's numerics before the step's updates (as verl
does). Taken from the sampler instead, pi_old comes from the bf16 decode with a KV cache, and
the first ratio is off 1 by ~1e-3 on the demo model in bf16 (about 0.05 per token at most,
bench/RESULTS.md's decode check), which biases clip_frac and the KL from the first update on.
And pi_old is the policy's: old_logprobs equals log-probs computed by hand from a plain forward.
"""
import pytest
import torch

from ttrv_core.config import DEMO_MODEL, TTRVConfig
from ttrv_core.demos import by_key
from ttrv_core.events import StepEvent
from ttrv_core.inputs.dataset import load_dataset
from ttrv_core.method import engine
from ttrv_core.method import step as step_module
from ttrv_core.method.grpo import STAT_NAMES
from ttrv_core.model.loading import load_policy

EXAMPLES = by_key("open").example_dir

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.mark.parametrize("mode", ["fp32", "bf16", "bf16-autocast"])
def test_first_update_of_each_step_has_ratio_one(monkeypatch, mode):
    pol = load_policy(DEMO_MODEL, "fp32" if mode == "fp32" else "bf16", "cpu")
    if mode == "bf16-autocast":  # the CUDA path's numerics (policy.Policy.autocast), on the CPU
        pol.autocast_dtype = torch.bfloat16
    items = load_dataset(EXAMPLES, None, EXAMPLES / "questions.csv", "open").items[:4]
    calls = []
    real = step_module.gradient   # each prompt's loss statistics (grpo.STAT_NAMES), one prompt an update
    monkeypatch.setattr(step_module, "gradient",
                        lambda *a, **k: calls.append(dict(zip(STAT_NAMES, (t := real(*a, **k)).tolist()))) or t)
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
        assert st["ratio_mean"] == 1.0 and st["clip_frac"] == 0.0, st
    # the second prompt of a step is trained after the first prompt's update moved the policy
    assert any(st["ratio_mean"] != 1.0 for st in seconds)


def plain_logprobs(pol, prompt, tokens: torch.Tensor, temperature: float) -> torch.Tensor:
    """(G, L) log-probs of each answer by hand, independent of grpo.py and of the Prompt's positions and
    cached image encoding: one ordinary forward per answer of the row prompt + answer (the pixels
    encoded again, the model's own positions), log-softmax of the logits / T at each answer token."""
    rows = []
    fixed = {k: v for k, v in prompt.inputs.items() if k not in ("input_ids", "attention_mask", "mm_token_type_ids")}
    for answer in tokens:
        ids = torch.cat([prompt.inputs["input_ids"][0], answer]).unsqueeze(0)
        types = torch.cat([prompt.inputs["mm_token_type_ids"][0], torch.zeros_like(answer)]).unsqueeze(0)
        with torch.no_grad():
            logits = pol.model(input_ids=ids, attention_mask=torch.ones_like(ids), mm_token_type_ids=types,
                               **fixed).logits[0].float()
        at = logits[prompt.length - 1:prompt.length - 1 + len(answer)]       # the logits that predict the answer
        rows.append(torch.log_softmax(at / temperature, -1).gather(-1, answer.unsqueeze(-1)).squeeze(-1))
    return torch.stack(rows)


@pytest.mark.parametrize("shared", [True, False])
def test_old_logprobs_match_an_independent_forward(tiny_models, shared):
    """old_logprobs equals log-probs computed by hand (plain_logprobs), at a temperature other than 1,
    with the adapter on (its lora_B set non-zero, so an adapter left off would show), 0 at padding,
    in one forward and over micro-batches of answers (2, and 4 + 2). In fp32, to 1e-5."""
    from PIL import Image

    from ttrv_core.method.grpo import old_logprobs
    from ttrv_core.sampling.prompt import prepare_prompt
    from ttrv_core.sampling.rollout import sample
    pol = load_policy(str(tiny_models["qwen2_5_vl"]), "fp32", "cpu", lora_r=4)
    with torch.no_grad():
        gen = torch.Generator().manual_seed(0)
        for name, w in pol.model.named_parameters():
            if "lora_B" in name:
                w.normal_(0, 0.5, generator=gen)
    prompt = prepare_prompt(pol, Image.new("RGB", (40, 30), (10, 200, 90)), "What is it?")
    ro = sample(pol, prompt, 6, max_new_tokens=4, generator=torch.Generator().manual_seed(0))
    mask = ro.mask.clone()
    mask[1, 3:] = mask[4, 2:] = 0          # answers that ended early: their later tokens are padding
    temperature = 0.7
    pol.model.train()
    want = plain_logprobs(pol, prompt, ro.tokens, temperature) * mask
    with pol.adapter_off():
        assert (plain_logprobs(pol, prompt, ro.tokens, temperature) * mask - want).abs().max() > 0.1
    assert (plain_logprobs(pol, prompt, ro.tokens, 1.0) * mask - want).abs().max() > 0.1
    for per_forward in (None, 2, 4):
        pol.answers_per_forward = per_forward
        got = old_logprobs(pol, prompt, ro.tokens, mask, temperature, shared)
        assert got.shape == want.shape and torch.all(got[mask == 0] == 0)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
