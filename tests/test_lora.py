"""The fused LoRA projection (ttrv_core/lora.py) computes what peft computes.

Same outputs and the same LoRA gradients as peft's own forward on a packed
training row (fp32: relative error <= 1e-5; 4-bit on the CPU; bf16 autocast
within bf16 rounding), and peft's forward wherever the fused one does not apply.
"""
import pytest
import torch
from PIL import Image

from ttrv_core import lora
from ttrv_core.grpo import answer_logprobs, reference_logprobs
from ttrv_core.models import load_policy
from ttrv_core.rollout import prepare_prompt, sample


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.fixture
def calls(monkeypatch):
    """How many times the fused function ran."""
    n = []
    apply = lora._LoRALinear.apply
    monkeypatch.setattr(lora._LoRALinear, "apply", lambda *a: n.append(1) or apply(*a))
    return n


def _policy(folder, precision="fp32"):
    pol = load_policy(str(folder), precision=precision, device="cpu", lora_r=4, lora_alpha=8)
    torch.manual_seed(1)
    for name, p in pol.model.named_parameters():  # lora_B starts at 0: make every gradient non-trivial
        if "lora_B" in name:
            p.data.normal_(0, 0.05)
    return pol


def _logp_and_grads(pol, prompt, tokens):
    pol.model.zero_grad(set_to_none=True)
    pol.model.train()
    with pol.autocast():
        logp = answer_logprobs(pol, prompt, tokens, 1.0, shared=True)
    (logp * torch.linspace(-1, 1, tokens.numel()).view_as(logp)).sum().backward()
    return logp.detach(), {n: p.grad.clone() for n, p in pol.model.named_parameters() if p.grad is not None}


def _compare(pol, rtol):
    prompt = prepare_prompt(pol, Image.new("RGB", (50, 37), (90, 20, 200)), "What is shown here?")
    tokens = sample(pol, prompt, 4, max_new_tokens=5, generator=torch.Generator().manual_seed(0)).tokens
    fused = _logp_and_grads(pol, prompt, tokens)
    lora.unfuse(pol.model)
    plain = _logp_and_grads(pol, prompt, tokens)
    lora.fuse(pol.model)
    assert torch.allclose(fused[0], plain[0], rtol=rtol, atol=rtol)
    assert fused[1].keys() == plain[1].keys() and len(fused[1]) > 0
    f = torch.cat([g.flatten() for g in fused[1].values()])
    p = torch.cat([plain[1][n].flatten() for n in fused[1]])
    rel = float((f - p).norm() / p.norm())
    assert p.norm() > 0 and rel <= rtol, rel
    return rel


@pytest.mark.parametrize("model_type", ["qwen2_5_vl", "idefics3", "gemma3"])
def test_fused_equals_peft_fp32(tiny_models, model_type, calls):
    pol = _policy(tiny_models[model_type])
    layers = [m for m in pol.model.modules() if hasattr(m, "lora_A")]
    assert layers and all(isinstance(m, lora._Fused) for m in layers)
    _compare(pol, 1e-5)
    assert calls  # the fused function did the work


def test_fused_equals_peft_4bit_cpu(tiny_models, calls):
    """bitsandbytes NF4 base on the CPU: the fused function dequantizes as bitsandbytes does."""
    pytest.importorskip("bitsandbytes")
    pol = _policy(tiny_models["qwen2_5_vl"], "4bit")
    _compare(pol, 1e-5)
    assert calls


def test_fused_equals_peft_bf16_autocast(tiny_models, calls):
    """Under bf16 autocast (what CUDA runs), within bf16 rounding."""
    pol = _policy(tiny_models["qwen2_5_vl"], "bf16")  # bf16 weights, fp32 LoRA: as 4-bit on a GPU
    pol.autocast_dtype = torch.bfloat16
    assert _compare(pol, 2e-2) > 0  # not bit-identical: the LoRA term is added inside one addmm
    assert calls


def test_peft_forward_where_fusing_does_not_apply(tiny_models, calls):
    """The reference pass (adapter off) and a LoRA with dropout go through peft's forward."""
    pol = _policy(tiny_models["qwen2_5_vl"])
    prompt = prepare_prompt(pol, Image.new("RGB", (50, 37), (90, 20, 200)), "What is shown here?")
    tokens = torch.tensor([[5, 6], [7, 8]])
    reference_logprobs(pol, prompt, tokens, 1.0, shared=True)
    assert not calls
    layer = pol.base.get_decoder().layers[0].self_attn.q_proj
    layer.lora_dropout["default"] = torch.nn.Dropout(0.1)
    x = torch.randn(3, layer.in_features)
    layer(x)
    assert not calls
    layer.lora_dropout["default"] = torch.nn.Identity()
    layer(x)
    assert len(calls) == 1


def test_adapter_saves_and_loads_the_same(tiny_models, tmp_path):
    """Fusing changes the modules' class, not their weights: the saved adapter is peft's."""
    from ttrv_core.models import save_adapter
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
