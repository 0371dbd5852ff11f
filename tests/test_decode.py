"""The kept static decoder (decode.py) does not outlive its model.

Run in a fresh interpreter: pytest's own bookkeeping can hold a frame of
load_policy (and so the model) alive, which would hide or fake the answer."""
import subprocess
import sys
from pathlib import Path

SCRIPT = """
import gc, weakref
from PIL import Image
from ttrv_core import decode
from ttrv_core.config import DEMO_MODEL
from ttrv_core.models import load_policy
from ttrv_core.rollout import prepare_prompt, sample

pol = load_policy(DEMO_MODEL, "fp32", "cpu")
prompt = prepare_prompt(pol, Image.new("RGB", (32, 32)), "Which digit is shown in the image?")
a = sample(pol, prompt, 4, max_new_tokens=3, decode="static")
b = sample(pol, prompt, 4, max_new_tokens=3, decode="static")  # the same buffers, loaded again
assert len(decode._live) == 1 and a.tokens.shape[0] == b.tokens.shape[0] == 4
model = weakref.ref(pol.model)
del pol
gc.collect()
assert model() is None, "the kept decoder keeps the model alive"
assert not decode._live, "the model's end did not release its decoder"
print("ok")
"""


def test_kept_decoder_is_freed_with_its_model():
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "-c", SCRIPT], cwd=root, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-2000:]


def test_bf16_autocast_path():
    """The GPU path computes under bf16 autocast (Policy.autocast): sampling with the
    static decoder, the packed training row and the update run through it (here on
    the CPU). The sampler's log-probs are within 0.05 of the training forward's; with
    pi_old recomputed by that forward (grpo.old_logprobs) the first update's ratio is
    exactly 1 and nothing is clipped; the LoRA weights stay fp32."""
    import torch
    from PIL import Image

    from ttrv_core.config import DEMO_MODEL
    from ttrv_core.grpo import answer_logprobs, group_advantages, old_logprobs, update
    from ttrv_core.models import load_policy
    from ttrv_core.rollout import prepare_prompt, sample

    pol = load_policy(DEMO_MODEL, "bf16", "cpu")  # bf16 weights, fp32 LoRA: as 4-bit on a GPU
    pol.autocast_dtype = torch.bfloat16
    prompt = prepare_prompt(pol, Image.new("RGB", (32, 32), (255, 255, 255)), "Which digit is shown in the image?")
    ro = sample(pol, prompt, 8, max_new_tokens=4, generator=torch.Generator().manual_seed(0), decode="static")
    with torch.no_grad(), pol.autocast():
        lp = answer_logprobs(pol, prompt, ro.tokens)
    assert (lp * ro.mask - ro.logprobs).abs().max() < 0.05
    lora = {n: p.detach().clone() for n, p in pol.model.named_parameters() if p.requires_grad}
    opt = torch.optim.AdamW([p for p in pol.model.parameters() if p.requires_grad], lr=1e-3)
    old = old_logprobs(pol, prompt, ro.tokens, ro.mask, 1.0, True)
    st = update(pol, opt, prompt, ro.tokens, ro.mask, old, group_advantages(torch.linspace(0, 1, 8)),
                temperature=1.0, eps_clip=0.2, dual_clip=3.0, beta=0.001, grad_clip=1.0, shared=True)
    assert torch.isfinite(torch.tensor(st.loss)) and st.ratio_mean == 1.0 and st.clip_frac == 0.0
    after = dict(pol.model.named_parameters())
    assert all(after[n].dtype == torch.float32 for n in lora)
    assert any(not torch.equal(after[n], v) for n, v in lora.items())
