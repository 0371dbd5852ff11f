"""Every family in families.FAMILIES, end to end on a tiny random model (CPU).

For each architecture (config.model_type) a checkpoint built from a config and
saved to a folder (tests/tiny.py) loads through the Auto classes
(load_policy), answers an image question, takes one TTRV step (engine.adapt:
N votes, vote rewards, one GRPO update on LoRA), and its LoRA adapter saves and
reloads, through load_policy and through plain peft. The same in 4-bit NF4
through bitsandbytes' CPU kernels.
"""
import math

import pytest
import torch
from PIL import Image
from test_grpo_update import assert_update_sign
from tiny import BUILDERS

from ttrv_core.config import TTRVConfig
from ttrv_core.events import StepEvent
from ttrv_core.inputs.dataset import Item
from ttrv_core.inputs.video import Video
from ttrv_core.method.engine import adapt
from ttrv_core.model.families import FAMILIES, PRESETS, family_of
from ttrv_core.model.loading import load_policy, save_adapter
from ttrv_core.sampling.prompt import fit_image, prepare_prompt
from ttrv_core.sampling.rollout import sample

MODEL_TYPES = [t for f in FAMILIES for t in f.model_types]
QUESTION = "What is shown in the image?"


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def _image(w: int = 50, h: int = 37) -> Image.Image:
    g = torch.Generator().manual_seed(0)
    return Image.fromarray(torch.randint(0, 256, (h, w, 3), generator=g, dtype=torch.uint8).numpy())


def _logits(pol, prompt) -> torch.Tensor:
    with torch.no_grad():
        return pol.model(**prompt.inputs, position_ids=prompt.positions).logits


def _lora(pol) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in pol.model.named_parameters() if "lora_" in n}


def test_every_family_has_a_tiny_model():
    assert sorted(MODEL_TYPES) == sorted(BUILDERS)
    assert len(set(MODEL_TYPES)) == len(MODEL_TYPES)  # one row per architecture


def test_presets_point_at_listed_families():
    names = {f.name for f in FAMILIES}
    for label, p in PRESETS.items():
        assert p.family in names, label
        assert p.model_id.count("/") == 1 and p.note, label
    assert {p.family for p in PRESETS.values()} >= {"qwen2_5_vl", "internvl", "idefics3", "gemma3"}


@pytest.mark.parametrize("precision", ["fp32", "4bit"])
@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_family_end_to_end(tiny_models, tmp_path, model_type, precision):
    if precision == "4bit":
        pytest.importorskip("bitsandbytes")
    folder = str(tiny_models[model_type])
    pol = load_policy(folder, precision, "cpu", lora_r=4, lora_alpha=8)
    fam = pol.family
    assert pol.base.config.model_type == model_type and fam is family_of(model_type)

    # LoRA on every projection of the language model, nothing in the vision tower
    lora = [n for n, _ in pol.model.named_modules() if n.endswith(".lora_A")]
    layers = pol.base.config.get_text_config().num_hidden_layers
    assert len(lora) == 7 * layers and all(f".{fam.lm_module}." in n for n in lora), lora
    if precision == "4bit":
        import bitsandbytes as bnb
        quant = [n for n, m in pol.base.named_modules() if isinstance(m, bnb.nn.Linear4bit)]
        assert len(quant) == 7 * layers and all(f".{fam.lm_module}." in n for n in quant)

    # answers an image question: one greedy row + sampled rows from one prefill
    prompt = prepare_prompt(pol, _image(), QUESTION)
    ids = prompt.inputs["input_ids"][0].tolist()
    bos = pol.tokenizer.bos_token_id
    assert bos is None or ids.count(bos) <= 1  # a template that writes BOS gets no second one
    gen = torch.Generator().manual_seed(0)
    ro = sample(pol, prompt, 3, temperature=1.0, max_new_tokens=4, generator=gen, greedy_rows=1)
    assert ro.tokens.shape[0] == 3 and len(ro.texts) == 3 and all(isinstance(t, str) for t in ro.texts)
    assert not pol.suppress[ro.tokens[ro.mask.bool()]].any()  # no image/special tokens sampled
    assert torch.isfinite(ro.logprobs).all()

    # one TTRV step through the engine (N votes, vote rewards, GRPO on the first G)
    path = tmp_path / "img.png"
    _image().save(path)
    items = [Item("img.png", path, QUESTION, "choice", ("cat", "dog", "car", "tree"))]
    cfg = TTRVConfig(model=folder, precision=precision, n_votes=4, n_train=2, max_new_tokens=3, max_steps=1,
                     prompts_per_step=1, eval_votes=2, lr=5e-2, lora_r=4, lora_alpha=8)
    steps = [e for e in adapt(cfg, pol, items, evaluate_before=False) if isinstance(e, StepEvent)]
    assert len(steps) == 1 and all(math.isfinite(v) for v in steps[0].metrics.values()), steps
    # the update's sign, through this family's training forward (weight decay alone moves lora_A)
    assert_update_sign(pol, prompt)
    after = _lora(pol)

    # the adapter saves and reloads: through load_policy, and through plain peft onto the base model
    adapter = tmp_path / "adapter"
    save_adapter(pol, str(adapter))
    pol2 = load_policy(folder, precision, "cpu", adapter=str(adapter))
    assert all(torch.equal(after[n], p) for n, p in _lora(pol2).items()) and len(_lora(pol2)) == len(after)
    want = _logits(pol, prompt)
    torch.testing.assert_close(_logits(pol2, prepare_prompt(pol2, _image(), QUESTION)), want)
    if precision == "fp32":
        from peft import PeftModel
        from transformers import AutoModelForImageTextToText
        plain = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(folder), str(adapter))
        with torch.no_grad():
            got = plain(**prompt.inputs, position_ids=prompt.positions).logits
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("size, most, want", [
    ((50, 37), 10_000, (50, 37)),          # small images pass unchanged
    ((4000, 3000), 400 * 300, (400, 300)),  # aspect kept
    ((3000, 10), 3000, (948, 3)),
    ((640, 480), 0, (640, 480)),           # 0: no limit
])
def test_fit_image(size, most, want):
    assert fit_image(Image.new("RGB", size), most).size == want


def test_max_pixels_caps_what_the_processor_sees(tiny_models, monkeypatch):
    from ttrv_core.sampling import prompt
    pol = load_policy(str(tiny_models["qwen2_5_vl"]), "fp32", "cpu", max_pixels=64 * 48)
    assert pol.max_pixels == 64 * 48
    seen = []
    encode = prompt.encode
    monkeypatch.setattr(prompt, "encode", lambda proc, im, text, *a: seen.append(
        [f.size for f in im.frames] if isinstance(im, Video) else im.size) or encode(proc, im, text, *a))
    prepare_prompt(pol, _image(4000, 3000), QUESTION)
    big = _image(4000, 3000)
    prepare_prompt(pol, Video((big, big), (0.0, 1.0), 2.0), QUESTION)  # each frame, as an image is
    assert seen == [(64, 48), [(64, 48), (64, 48)]]
    assert load_policy(str(tiny_models["qwen2_5_vl"]), "fp32", "cpu").max_pixels == pol.family.max_pixels


def test_image_limits_cap_the_processor(tiny_models, tmp_path):
    """InternVL's tile count is capped (max_patches 12 in the checkpoint -> the family's 6)."""
    import json
    import shutil
    folder = tmp_path / "internvl"
    shutil.copytree(tiny_models["internvl"], folder)
    cfg = json.loads((folder / "processor_config.json").read_text())
    cfg["image_processor"]["max_patches"] = 12
    (folder / "processor_config.json").write_text(json.dumps(cfg))
    pol = load_policy(str(folder), "fp32", "cpu")
    assert pol.processor.image_processor.max_patches == dict(pol.family.image_limits)["max_patches"] == 6


def test_bf16_without_quantization(tiny_models):
    pol = load_policy(str(tiny_models["qwen2_5_vl"]), "bf16", "cpu")
    assert pol.base.dtype == torch.bfloat16 and pol.precision == "bf16"
    prompt = prepare_prompt(pol, _image(), QUESTION)
    assert prompt.inputs["pixel_values"].dtype == torch.bfloat16
    ro = sample(pol, prompt, 2, max_new_tokens=3, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(ro.logprobs).all()
