"""The kept static decoder (decode.py) belongs to its policy (Policy.decoders): it does
not outlive its model, another policy's sampling does not free it, a GRPO update leaves
it alone, and the engine releases it at the end of each sampling phase.

The first test runs in a fresh interpreter: pytest's own bookkeeping can hold a frame of
load_policy (and so the model) alive, which would hide or fake the answer."""
import subprocess
import sys
from pathlib import Path

SCRIPT = """
import gc, weakref
from PIL import Image
from ttrv_core.config import DEMO_MODEL
from ttrv_core.model.loading import load_policy
from ttrv_core.sampling.prompt import prepare_prompt
from ttrv_core.sampling.rollout import sample

pol = load_policy(DEMO_MODEL, "fp32", "cpu")
prompt = prepare_prompt(pol, Image.new("RGB", (32, 32)), "Which digit is shown in the image?")
a = sample(pol, prompt, 4, max_new_tokens=3, decode="static")
kept = pol.decoders.kept
b = sample(pol, prompt, 4, max_new_tokens=3, decode="static")  # the same buffers, loaded again
assert pol.decoders.kept is kept and a.tokens.shape[0] == b.tokens.shape[0] == 4
model, dec = weakref.ref(pol.model), weakref.ref(kept)
del pol, kept
gc.collect()
assert model() is None, "the kept decoder keeps the model alive"
assert dec() is None, "the model's end did not free its decoder"
print("ok")
"""


def test_kept_decoder_is_freed_with_its_model():
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "-c", SCRIPT], cwd=root, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-2000:]


def _demo_policy():
    from ttrv_core.config import DEMO_MODEL
    from ttrv_core.model.loading import load_policy
    return load_policy(DEMO_MODEL, "fp32", "cpu")


def _prompt(pol):
    from PIL import Image

    from ttrv_core.sampling.prompt import prepare_prompt
    return prepare_prompt(pol, Image.new("RGB", (32, 32)), "Which digit is shown in the image?")


def test_each_policy_keeps_its_own_decoder():
    """Two policies alive at once: sampling with one does not free the other's kept decoder
    (with one cache per process, a new decoder would release every kept one)."""
    from ttrv_core.sampling.rollout import sample
    a, b = _demo_policy(), _demo_policy()
    sample(a, _prompt(a), 4, max_new_tokens=3, decode="static")
    kept = a.decoders.kept
    sample(b, _prompt(b), 4, max_new_tokens=3, decode="static")
    assert a.decoders.kept is kept and kept.cache is not None and b.decoders.kept is not kept


def test_update_leaves_the_decoder_to_the_engine(monkeypatch):
    """grpo.update does not reach into the decoders; the engine's step releases them once its
    sampling phase ends, before the first update."""
    import functools

    import torch

    from ttrv_core.config import TTRVConfig
    from ttrv_core.inputs.dataset import Item
    from ttrv_core.method import step as step_module
    from ttrv_core.method.grpo import gradient, group_advantages, update
    from ttrv_core.sampling.rollout import sample

    pol = _demo_policy()
    prompt = _prompt(pol)
    ro = sample(pol, prompt, 4, max_new_tokens=3, decode="static")
    kept = pol.decoders.kept
    opt = torch.optim.AdamW([p for p in pol.model.parameters() if p.requires_grad], lr=1e-3)
    update(pol, opt, prompt, ro.tokens, ro.mask, ro.logprobs, group_advantages(torch.linspace(0, 1, 4)),
           temperature=1.0, eps_clip=0.2, dual_clip=3.0, beta=0.001, grad_clip=1.0, shared=True)
    assert pol.decoders.kept is kept

    released = []
    monkeypatch.setattr(step_module, "sample", functools.partial(sample, decode="static"))
    monkeypatch.setattr(step_module, "gradient", lambda policy, *a, **k: released.append(policy.decoders.kept is None)
                        or gradient(policy, *a, **k))
    from ttrv_core.demos import by_key
    path = sorted(by_key("open").example_dir.glob("*.png"))[0]
    cfg = TTRVConfig(n_votes=4, n_train=2, max_new_tokens=3, prompts_per_step=2)
    ev = step_module.train_step(1, 1, [Item(path.name, path, "Which digit is shown in the image?")] * 2, pol, opt,
                                cfg, gen=torch.Generator().manual_seed(0))
    assert ev is not None and released == [True, True]


def test_bf16_autocast_path():
    """The GPU path computes under bf16 autocast (Policy.autocast): sampling with the
    static decoder, the packed training row and the update run through it (here on
    the CPU). The sampler's log-probs are within 0.05 of the training forward's; with
    pi_old recomputed by that forward (grpo.old_logprobs) the first update's ratio is
    exactly 1 and nothing is clipped; the LoRA weights stay fp32."""
    import torch
    from PIL import Image

    from ttrv_core.config import DEMO_MODEL
    from ttrv_core.method.grpo import answer_logprobs, group_advantages, old_logprobs, update
    from ttrv_core.model.loading import load_policy
    from ttrv_core.sampling.prompt import prepare_prompt
    from ttrv_core.sampling.rollout import sample

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


def _two_steps(keep, monkeypatch):
    """Two engine steps with the static decoder (as on CUDA), Decoders.keep set; what each step's
    sampling found kept, the step events and the LoRA weights after."""
    import functools

    import torch

    from ttrv_core.config import TTRVConfig
    from ttrv_core.demos import by_key
    from ttrv_core.inputs.dataset import Item
    from ttrv_core.method import step as step_module
    from ttrv_core.sampling.rollout import sample

    torch.manual_seed(0)
    pol = _demo_policy()
    pol.decoders.keep = keep
    found = []

    def spy(policy, *a, **k):
        found.append(policy.decoders.kept)
        return sample(policy, *a, decode="static", **k)
    monkeypatch.setattr(step_module, "sample", spy)
    opt = torch.optim.AdamW([p for p in pol.model.parameters() if p.requires_grad], lr=1e-2)
    cfg = TTRVConfig(n_votes=4, n_train=2, max_new_tokens=3, prompts_per_step=2)
    paths = sorted(by_key("open").example_dir.glob("*.png"))[:2]
    batch = [Item(p.name, p, "Which digit is shown in the image?") for p in paths]
    gen = torch.Generator().manual_seed(0)
    events = [step_module.train_step(s, 2, batch, pol, opt, cfg, gen=gen) for s in (1, 2)]
    lora = {n: p.detach().clone() for n, p in pol.model.named_parameters() if p.requires_grad}
    return pol, found, events, lora


def test_the_static_decoder_kept_through_the_update_gives_the_same_steps(monkeypatch):
    """Decoders.keep: the static decoder survives the update and the next step's sampling loads
    its next prompt into the same buffers (on CUDA: replays the recorded graph, no new
    recording); the votes, rewards and LoRA weights after two steps are those of freeing it."""
    import torch

    pol, found, kept_ev, kept_lora = _two_steps(True, monkeypatch)
    assert found[0] is None and found[1] is not None           # the first prompt of step 1 builds it
    assert all(f is found[1] for f in found[1:])               # the same decoder through both updates
    assert pol.decoders.kept is found[1] and pol.decoders.kept_bytes > 0
    assert kept_ev[1].metrics["memory/kept_decoder_mib"] == pol.decoders.kept_bytes / 2**20

    pol, found, freed_ev, freed_lora = _two_steps(False, monkeypatch)
    assert found[2] is None and pol.decoders.kept is None      # freed after each step's sampling
    assert freed_ev[1].metrics["memory/kept_decoder_mib"] == 0
    for a, b in zip(kept_ev, freed_ev):
        assert [iv.counts for iv in a.items] == [iv.counts for iv in b.items]
        assert a.metrics["loss/total"] == b.metrics["loss/total"]
    assert all(torch.equal(kept_lora[n], freed_lora[n]) for n in kept_lora)


def test_kept_decoder_memory_is_its_cache():
    """StaticDecoder.nbytes counts the static cache (layers x keys and values x rows x KV heads x
    length x head size) and its small buffers: what keeping it adds to the update's peak."""
    from ttrv_core.sampling.rollout import sample

    pol = _demo_policy()
    sample(pol, _prompt(pol), 4, max_new_tokens=3, decode="static")
    dec, c = pol.decoders.kept, pol.base.config.get_text_config()
    head = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    cache = c.num_hidden_layers * 2 * 4 * c.num_key_value_heads * dec.length * head * 4  # fp32
    assert cache <= dec.nbytes <= cache + 4 * dec.length * 4 + 4096


def test_auto_keeps_on_cuda_only_after_an_update_measured_and_only_where_it_fits(monkeypatch):
    """keep=None (auto): never off CUDA; on CUDA not at the first step (no update's peak counted
    yet), then when the peak so far plus the decoder fits in KEEP_WITHIN of free + reserved."""
    from types import SimpleNamespace

    import torch

    from ttrv_core.model import decode
    GiB = 2**30
    mem = dict(free=10 * GiB, reserved=20 * GiB, peak=20 * GiB)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda d=None: (mem["free"], 80 * GiB))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda d=None: mem["reserved"])
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda d=None: mem["peak"])
    dec = SimpleNamespace(tokens=torch.empty(0, device="meta"), nbytes=5 * GiB,
                          graph_failed=False, free=lambda: None)
    d = decode.Decoders()
    assert not d._keeps(dec)                                   # not CUDA
    dec.tokens = SimpleNamespace(device=torch.device("cuda", 0))
    assert not d._keeps(dec)                                   # no update measured yet
    d.kept = dec
    d.end_sampling()
    assert d.kept is None and d.trained_without and d.kept_bytes == 0
    assert d._keeps(dec)                                       # 20 + 5 <= 0.9 x 30
    mem["peak"] = 23 * GiB
    assert not d._keeps(dec)                                   # 23 + 5 > 27
    d.keep = True
    assert d._keeps(dec)
