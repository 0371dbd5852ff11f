"""The shared-prefix path equals the naive full-row path (fp32, CPU).

Same sampled answers for one seed, same per-token log-probs, and the same
GRPO loss and LoRA gradients (relative error <= 1e-5), for every family whose
shared path is marked proven in families.FAMILIES.
"""
import functools

import pytest
import torch
from PIL import Image

from ttrv_core.inputs.video import Video
from ttrv_core.method.grpo import answer_logprobs, group_advantages, grpo_loss, reference_logprobs
from ttrv_core.model.families import FAMILIES
from ttrv_core.model.loading import load_policy
from ttrv_core.sampling.prompt import prepare_prompt
from ttrv_core.sampling.rollout import sample

# every architecture (config.model_type) of every family whose shared path is marked proven
PROVEN = [t for f in FAMILIES if f.shared_prefix for t in f.model_types]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def _policy(folder):
    pol = load_policy(str(folder), precision="fp32", device="cpu", lora_r=4, lora_alpha=8)
    torch.manual_seed(1)
    for name, p in pol.model.named_parameters():  # lora_B starts at 0: make every LoRA grad non-trivial
        if "lora_B" in name:
            p.data.normal_(0, 0.05)
    return pol


def _loss_and_grads(pol, prompt, ro, shared):
    pol.model.zero_grad(set_to_none=True)
    ref = reference_logprobs(pol, prompt, ro.tokens, 1.3, shared)
    logp = answer_logprobs(pol, prompt, ro.tokens, 1.3, shared)
    adv = group_advantages(torch.linspace(0, 1, ro.tokens.shape[0]))
    parts = grpo_loss(logp, ro.logprobs.detach() - 0.05, ref, adv, ro.mask, beta=0.1)
    parts.loss.backward()
    grads = {n: p.grad.clone() for n, p in pol.model.named_parameters() if p.grad is not None}
    return parts.loss.detach(), grads


@pytest.mark.parametrize("model_type", PROVEN)
def test_shared_equals_naive(tiny_models, model_type):
    pol = _policy(tiny_models[model_type])
    _assert_exact(pol, prepare_prompt(pol, Image.new("RGB", (50, 37), (90, 20, 200)), "What is shown here?"))


# a video prompt: as a video (Qwen's temporal patches and 3D positions, InternVL's and OneVision's
# video tokens) or as K images in one turn, as families.Family.video says
VIDEO = [t for f in FAMILIES if f.shared_prefix and f.video for t in f.model_types]


@pytest.mark.parametrize("model_type", VIDEO)
def test_shared_equals_naive_on_a_video(tiny_models, model_type):
    pol = _policy(tiny_models[model_type])
    frames = tuple(Image.new("RGB", (50, 37), (40 * i, 20, 200 - 30 * i)) for i in range(4))
    prompt = prepare_prompt(pol, Video(frames, (0.25, 0.75, 1.25, 1.75), 2.0), "What happens here?")
    if pol.family.video == "video":  # the processor's video input, not images
        assert "pixel_values_videos" in prompt.inputs or pol.family.name == "internvl"
    _assert_exact(pol, prompt)


def _assert_exact(pol, prompt):
    model_type = pol.family.name
    ros = {}
    for shared in (True, False):
        gen = torch.Generator().manual_seed(7)
        ros[shared] = sample(pol, prompt, 6, temperature=1.3, max_new_tokens=6, generator=gen, shared=shared)
    assert ros[True].tokens.tolist() == ros[False].tokens.tolist()
    assert torch.allclose(ros[True].logprobs, ros[False].logprobs, atol=1e-5)
    ro = ros[True]
    # the sampling log-probs are the policy's own (ratio 1 at the first update)
    lp = answer_logprobs(pol, prompt, ro.tokens, 1.3, shared=True).detach()
    assert torch.allclose(lp * ro.mask, ro.logprobs, atol=1e-5)

    loss_s, g_s = _loss_and_grads(pol, prompt, ro, shared=True)
    loss_n, g_n = _loss_and_grads(pol, prompt, ro, shared=False)
    assert torch.allclose(loss_s, loss_n, rtol=1e-5, atol=1e-7)
    assert g_s.keys() == g_n.keys() and len(g_s) > 0
    assert all(f".{pol.family.lm_module}." in n for n in g_s)  # LoRA on the language model only
    flat_s = torch.cat([g.flatten() for g in g_s.values()])
    flat_n = torch.cat([g_n[n].flatten() for n in g_s])
    rel = float((flat_s - flat_n).norm() / flat_n.norm())
    print(model_type, "LoRA-gradient relative error", rel)
    assert flat_n.norm() > 0 and rel <= 1e-5, rel


ALL_TYPES = [t for f in FAMILIES for t in f.model_types]


@pytest.mark.parametrize("model_type", ALL_TYPES)
def test_static_decode_equals_eager(tiny_models, model_type):
    """The static-cache decoder (decode.py; a CUDA graph on GPUs) samples what the
    dynamic cache samples: same tokens for one seed, same log-probs (fp32)."""
    pol = _policy(tiny_models[model_type])
    prompt = prepare_prompt(pol, Image.new("RGB", (50, 37), (90, 20, 200)), "What is shown here?")
    for shared in (True, False):
        ros = {}
        for mode in ("eager", "static"):
            gen = torch.Generator().manual_seed(3)
            ros[mode] = sample(pol, prompt, 5, temperature=1.3, max_new_tokens=7, generator=gen, greedy_rows=1,
                               shared=shared, decode=mode)
        assert ros["static"].tokens.tolist() == ros["eager"].tokens.tolist()
        assert torch.allclose(ros["static"].logprobs, ros["eager"].logprobs, atol=1e-5)


@pytest.mark.parametrize("mode", ["mlp", "layers"])
def test_checkpointing_keeps_the_gradients(tiny_models, mode):
    """Gradient checkpointing (config.gradient_checkpointing, gradient_checkpointing.py) recomputes
    the packed row's MLPs or whole layers in the backward pass: same loss, same LoRA
    gradients, and the recomputation does run."""
    from ttrv_core.model.gradient_checkpointing import set_recompute
    pol = _policy(tiny_models["qwen2_5_vl"])
    prompt = prepare_prompt(pol, Image.new("RGB", (50, 37), (90, 20, 200)), "What is shown here?")
    ro = sample(pol, prompt, 6, temperature=1.3, max_new_tokens=6, generator=torch.Generator().manual_seed(7))
    pol.model.train()
    loss, grads = _loss_and_grads(pol, prompt, ro, shared=True)
    calls = []
    layer = pol.base.get_decoder().layers[0]
    hooks = [m.register_forward_pre_hook(lambda m, _: calls.append(type(m).__name__))  # the recompute may stop early
             for m in (layer.mlp.down_proj, layer.self_attn.o_proj)]
    set_recompute(pol, mode)
    loss_c, grads_c = _loss_and_grads(pol, prompt, ro, shared=True)
    set_recompute(pol, "off")
    for h in hooks:
        h.remove()
    # reference pass, training forward, and its recomputation in backward: the MLP always, attention with layers
    assert len(calls) == (5 if mode == "mlp" else 6), calls
    assert torch.allclose(loss, loss_c, rtol=1e-6)
    for n, g in grads.items():
        assert torch.allclose(g, grads_c[n], rtol=1e-5, atol=1e-8), n
    assert type(layer.mlp).__name__ == type(layer.mlp).__mro__[0].__name__ and "Recomputed" not in type(layer.mlp).__name__


@pytest.mark.parametrize("model_type", ALL_TYPES)
def test_mlp_checkpointing_finds_every_layer(tiny_models, model_type):
    from ttrv_core.model.gradient_checkpointing import _mlps, set_recompute
    pol = _policy(tiny_models[model_type])
    n_layers = len(pol.base.get_decoder().layers)
    set_recompute(pol, "mlp")
    assert len(_mlps(pol)) == n_layers and all("Recomputed" in type(m).__name__ for m in _mlps(pol))
    set_recompute(pol, "off")
    assert not any("Recomputed" in type(m).__name__ for m in _mlps(pol))


@pytest.mark.parametrize("model_type", ALL_TYPES)
def test_image_encoded_once_per_prompt(tiny_models, model_type):
    """On the shared paths the vision tower runs once per prompt: sampling, the
    reference pass and the training forward reuse its outputs (prompt.Prompt.encoded),
    while the naive path encodes the image in every row of every forward."""
    pol = _policy(tiny_models[model_type])
    prompt = prepare_prompt(pol, Image.new("RGB", (50, 37), (90, 20, 200)), "What is shown here?")
    inner = pol.base.base_model
    calls = []
    encode = inner.get_image_features

    @functools.wraps(encode)  # keeps the signature the inputs are matched against
    def counted(*a, **k):
        calls.append(1)
        return encode(*a, **k)
    inner.get_image_features = counted
    try:
        ro = sample(pol, prompt, 4, max_new_tokens=3, generator=torch.Generator().manual_seed(0))
        reference_logprobs(pol, prompt, ro.tokens, 1.0, shared=True)
        answer_logprobs(pol, prompt, ro.tokens, 1.0, shared=True).sum().backward()
        assert len(calls) == 1
        assert "mm_encoder_outputs" in prompt.encoded(pol) and "pixel_values" not in prompt.encoded(pol)
        calls.clear()
        reference_logprobs(pol, prompt, ro.tokens, 1.0, shared=False)
        assert len(calls) == 1  # one call over the G repeated images
    finally:
        del inner.get_image_features


def test_trainable_vision_weights_keep_the_pixels(tiny_models, tmp_path):
    """An adapter that trains weights in the vision tower (loaded from disk) must see
    the pixels in every forward, or its gradients would stop at a cached encoding."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText
    folder = tiny_models["qwen2_5_vl"]
    base = AutoModelForImageTextToText.from_pretrained(folder)
    get_peft_model(base, LoraConfig(r=2, target_modules=r".*visual.*\.qkv")).save_pretrained(tmp_path / "ad")
    pol = load_policy(str(folder), precision="fp32", device="cpu", adapter=str(tmp_path / "ad"))
    assert pol.vision_trainable
    prompt = prepare_prompt(pol, Image.new("RGB", (50, 37), (90, 20, 200)), "What is shown here?")
    assert prompt.encoded(pol) is prompt.inputs
    assert not _policy(folder).vision_trainable


@pytest.mark.parametrize("model_type", ["qwen2_5_vl", "llava"])
def test_one_token_answers_train(tiny_models, model_type):
    """A group whose answers are all one token long (every reply EOS at once: an empty answer,
    as a collapsing model gives) has log-probs and a loss on the shared path equal to the naive
    one. The packed forward failed on it ('cannot reshape tensor of 0 elements')."""
    pol = _policy(tiny_models[model_type])
    prompt = prepare_prompt(pol, Image.new("RGB", (50, 37), (90, 20, 200)), "What is shown here?")
    tokens = pol.eos_ids[:1].repeat(4, 1)                                  # (G, 1): EOS only
    lps = {shared: answer_logprobs(pol, prompt, tokens, 1.0, shared) for shared in (True, False)}
    assert lps[True].shape == (4, 1) and torch.isfinite(lps[True]).all()
    assert torch.allclose(lps[True], lps[False], atol=1e-5)
