"""The LoRA adapter through peft's supported API: switched off for the reference pass
(Policy.adapter_off, peft's per-layer switch) as peft's disable_adapter() does, and
saved and loaded in peft's format.
"""
import pytest
import torch
from PIL import Image

from ttrv_core.method.grpo import answer_logprobs
from ttrv_core.model.loading import load_policy
from ttrv_core.sampling.prompt import prepare_prompt

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def _policy(folder, precision="fp32"):
    pol = load_policy(str(folder), precision=precision, device="cpu", lora_r=4, lora_alpha=8)
    torch.manual_seed(1)
    for name, p in pol.model.named_parameters():  # lora_B starts at 0: make every gradient non-trivial
        if "lora_B" in name:
            p.data.normal_(0, 0.05)
    return pol


def test_adapter_saves_and_loads_the_same(tiny_models, tmp_path):
    """save_adapter writes peft's format: loading it gives the same LoRA weights."""
    from ttrv_core.model.loading import save_adapter
    pol = _policy(tiny_models["qwen2_5_vl"])
    save_adapter(pol, str(tmp_path / "ad"))
    again = load_policy(str(tiny_models["qwen2_5_vl"]), precision="fp32", device="cpu", adapter=str(tmp_path / "ad"))
    a = {n: p for n, p in pol.model.named_parameters() if "lora_" in n}
    b = {n: p for n, p in again.model.named_parameters() if "lora_" in n}
    assert a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)


def test_adapter_off_is_peft_disable_adapter(tiny_models):
    """Policy.adapter_off (the reference pass) gives what peft's disable_adapter gives,
    and leaves the adapter on, trainable, afterwards."""
    pol = _policy(tiny_models["qwen2_5_vl"])
    prompt = prepare_prompt(pol, Image.new("RGB", (50, 37), (90, 20, 200)), "What is shown here?")
    tokens = torch.tensor([[5, 6, 7], [8, 9, 10]])
    with torch.no_grad():
        on = answer_logprobs(pol, prompt, tokens)
        with pol.model.disable_adapter():
            peft_off = answer_logprobs(pol, prompt, tokens)
        with pol.adapter_off():
            off = answer_logprobs(pol, prompt, tokens)
        again = answer_logprobs(pol, prompt, tokens)
    assert torch.equal(off, peft_off) and not torch.allclose(off, on) and torch.equal(again, on)
    assert all(p.requires_grad for n, p in pol.model.named_parameters() if "lora_" in n)
