"""One GRPO update on a tiny fp32 model moves the adapter the right way, and only when it should.

"Some LoRA weight changed" proves nothing: AdamW's weight decay moves lora_A whatever the loss.
Here: a sign test (the positive-advantage answer's log-prob rises, the negative one's falls) and
a null test (zero advantages, beta = 0, no weight decay: the adapter does not move at all)."""
import pytest
import torch
from PIL import Image

from ttrv_core.method.grpo import answer_logprobs, group_advantages, old_logprobs, update
from ttrv_core.model.loading import load_policy
from ttrv_core.sampling.prompt import prepare_prompt

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py
KW = dict(temperature=1.0, eps_clip=0.2, dual_clip=3.0, grad_clip=1.0, shared=True)


def two_answers(pol) -> tuple[torch.Tensor, torch.Tensor]:
    """(G=2, L=2) tokens of two different one-word answers, and their mask."""
    ids = [pol.tokenizer.encode(w, add_special_tokens=False)[0] for w in ("7", "dog")]
    eos = int(pol.eos_ids[0])
    return torch.tensor([[ids[0], eos], [ids[1], eos]], device=pol.device), torch.ones(2, 2, device=pol.device)


@pytest.fixture
def setup(tiny_models):
    pol = load_policy(str(tiny_models["qwen2_5_vl"]), "fp32", "cpu", lora_r=4, seed=0)
    prompt = prepare_prompt(pol, Image.new("RGB", (40, 30), (200, 40, 90)), "What is it?")
    return pol, prompt, *two_answers(pol)


def seq_logprobs(pol, prompt, tokens) -> torch.Tensor:
    with torch.no_grad(), pol.autocast():
        return answer_logprobs(pol, prompt, tokens).sum(1)     # (G,)


def lora(pol) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in pol.model.named_parameters() if p.requires_grad}


def assert_update_sign(pol, prompt) -> None:
    """One AdamW step (weight decay on, as the paper's) with advantages (+0.71, -0.71) on two
    different answers raises the first answer's log-prob and lowers the second's."""
    tokens, mask = two_answers(pol)
    before = seq_logprobs(pol, prompt, tokens)
    opt = torch.optim.AdamW([p for p in pol.model.parameters() if p.requires_grad], lr=1e-3, weight_decay=0.01)
    adv = group_advantages(torch.tensor([1.0, 0.0], device=pol.device))
    old = old_logprobs(pol, prompt, tokens, mask, 1.0, True)
    st = update(pol, opt, prompt, tokens, mask, old, adv, beta=0.001, **KW)
    assert st.ratio_mean == 1.0 and st.clip_frac == 0.0
    after = seq_logprobs(pol, prompt, tokens)
    assert after[0] > before[0] and after[1] < before[1], (before, after)


def test_positive_advantage_raises_its_answer_and_negative_lowers_its(setup):
    pol, prompt, _, _ = setup
    assert_update_sign(pol, prompt)


def test_zero_advantages_leave_the_adapter_unchanged(setup):
    pol, prompt, tokens, mask = setup
    torch.manual_seed(0)
    for n, p in pol.model.named_parameters():  # lora_B starts at 0: make lora_A's gradient path live too
        if "lora_B" in n:
            p.data.normal_(0, 0.1)
    start = lora(pol)
    opt = torch.optim.AdamW([p for p in pol.model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    old = old_logprobs(pol, prompt, tokens, mask, 1.0, True) - 0.1  # ratios off 1: only A = 0 makes it null
    st = update(pol, opt, prompt, tokens, mask, old, torch.zeros(2), beta=0.0, **KW)
    assert st.loss == 0.0 and st.kl == 0.0 and st.grad_norm == 0.0
    assert all(torch.equal(p, start[n]) for n, p in lora(pol).items())
