"""Batched evaluation gives what item-by-item evaluation gives, exactly, in fp32 on CPU.

Several items per forward (evaluate.py, rollout.sample_many; prompts of different lengths
left-padded, prefix.Prefix), rows attending to their prompt's cache without copies of it
(prefix_decode.PrefixDecoder, the CPU default): for every family of tests/tiny.py and on the
bundled demo models,
  - every field of every item's evaluation is the same whatever the batch size (each item
    samples from its own random stream, seeded from the seed and the item's id);
  - the sampled tokens of a batch are those of each prompt decoded alone, by every decoder
    (prefix, eager, static), with log-probs within 1e-5;
  - the greedy reply is the one a prompt decoded alone by the eager decoder gives;
a fresh adapter (lora_B = 0) is switched off with the same answers; and out of memory in a
batch retries it in smaller ones with the same answers.
"""
from dataclasses import asdict

import pytest
import torch
from PIL import Image

import ttrv_core.method.evaluate as evaluate
from ttrv_core import demos
from ttrv_core.config import TTRVConfig
from ttrv_core.errors import OutOfMemory
from ttrv_core.inputs.dataset import Item, load_dataset
from ttrv_core.model.families import FAMILIES
from ttrv_core.model.loading import load_policy
from ttrv_core.sampling.prompt import prepare_prompt
from ttrv_core.sampling.rollout import sample, sample_many

pytestmark = pytest.mark.usefixtures("one_thread")
ALL_TYPES = [t for f in FAMILIES for t in f.model_types]
CFG = TTRVConfig(model="x", n_votes=6, n_train=2, max_new_tokens=6, temperature=1.3, eval_batch=1)
SIZES = [(28, 28), (50, 37), (28, 28), (64, 40), (33, 61), (40, 40)]
QUESTIONS = ["What is it?", "What is shown in this picture? Answer in one word."]


@pytest.fixture
def items(tmp_path):
    """Images of several sizes and two questions: prompts of several lengths in one batch."""
    out = []
    for i, size in enumerate(SIZES):
        p = tmp_path / f"im{i}.png"
        Image.new("RGB", size, (40 * i, 30, 200 - 30 * i)).save(p)
        out.append(Item(p.name, p, QUESTIONS[i % 2], answer="red"))
    return out


def _policy(folder):
    pol = load_policy(str(folder), precision="fp32", device="cpu", lora_r=4, lora_alpha=8)
    torch.manual_seed(1)
    for name, p in pol.model.named_parameters():  # lora_B starts at 0: let the adapter act
        if "lora_B" in name:
            p.data.normal_(0, 0.05)
    return pol


@pytest.mark.parametrize("model_type", ALL_TYPES)
def test_batched_evaluation_equals_item_by_item(tiny_models, model_type, items):
    pol = _policy(tiny_models[model_type])
    lengths = {prepare_prompt(pol, it.image(), it.prompt).length for it in items}
    assert len(lengths) > 1                                          # the padded path is exercised
    one = [asdict(evaluate.evaluate_item(pol, it, CFG, seed=5)) for it in items]
    for size in (3, 16):
        assert [asdict(e) for e in evaluate.evaluate(pol, items, CFG.with_(eval_batch=size), seed=5)] == one
    assert any(e["counts"] != one[0]["counts"] for e in one[1:])      # items do not share one stream's draws
    other = [asdict(e) for e in evaluate.evaluate(pol, items, CFG.with_(eval_batch=3), seed=6)]
    assert [e["counts"] for e in other] != [e["counts"] for e in one]  # the seed matters


@pytest.mark.parametrize("model_type", ALL_TYPES)
def test_a_batch_samples_what_each_prompt_samples_alone(tiny_models, model_type, items):
    """Tokens equal, log-probs within 1e-5, for the prefix, eager and static decoders, shared
    prefix and full rows; row 0 greedy equals the greedy row of one prompt decoded alone by the eager decoder."""
    pol = _policy(tiny_models[model_type])
    prompts = [prepare_prompt(pol, it.image(), it.prompt) for it in items]
    gens = lambda: [torch.Generator().manual_seed(100 + i) for i in range(len(prompts))]  # noqa: E731
    L = CFG.max_new_tokens
    alone = [sample(pol, p, 5, 1.3, 1.0, L, g, greedy_rows=1, decode="eager") for p, g in zip(prompts, gens())]
    for shared in (True, False):
        for mode in ("prefix", "eager", "static"):
            batch = sample_many(pol, prompts, 5, 1.3, 1.0, L, gens(), greedy_rows=1, shared=shared, decode=mode)
            for a, b in zip(alone, batch):
                assert b.tokens.tolist() == a.tokens.tolist(), (shared, mode)
                assert torch.allclose(b.logprobs, a.logprobs, atol=1e-5), (shared, mode)
                assert b.texts == a.texts
    # the evaluation's greedy reply: row 0 of one prompt decoded alone (eager decode)
    evs = list(evaluate.evaluate(pol, items, CFG.with_(eval_batch=16), seed=5))
    assert [e.greedy_text for e in evs] == [a.texts[0] for a in alone]


def test_inverse_cdf_draw_samples_the_distribution():
    """The evaluation's draw (one uniform per row): frequencies match the probabilities, a token
    of probability 0 never comes, and top_p keeps the nucleus only."""
    from ttrv_core.sampling.rollout import _draw_cdf
    logits = torch.tensor([[0.0, 1.0, float("-inf"), 2.0]]).expand(20000, -1)
    tok = _draw_cdf(logits, 1.0, [torch.Generator().manual_seed(0)], 20000)
    freq = torch.bincount(tok, minlength=4).float() / len(tok)
    assert torch.allclose(freq, torch.softmax(logits[0], -1), atol=0.01) and freq[2] == 0
    tok = _draw_cdf(logits, 0.5, [torch.Generator().manual_seed(0)], 20000)
    assert set(tok.tolist()) == {3}                                  # 2.0 alone holds 0.67 >= 0.5


def test_out_of_memory_in_a_batch_retries_smaller_with_the_same_answers(tiny_models, items, monkeypatch):
    pol = _policy(tiny_models["qwen2_5_vl"])
    one = [asdict(e) for e in evaluate.evaluate(pol, items, CFG, seed=5)]
    real, sizes = evaluate.sample_many, []

    def small_memory(policy, prompts, *a, **kw):
        sizes.append(len(prompts))
        if len(prompts) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(policy, prompts, *a, **kw)

    monkeypatch.setattr(evaluate, "sample_many", small_memory)
    assert [asdict(e) for e in evaluate.evaluate(pol, items, CFG.with_(eval_batch=5), seed=5)] == one
    assert sizes == [1, 5, 3, 2, 2, 1]                               # halved until it fits, then kept
    monkeypatch.setattr(evaluate, "sample_many", lambda *a, **kw: (_ for _ in ()).throw(
        torch.OutOfMemoryError("CUDA out of memory")))
    with pytest.raises(OutOfMemory, match="while evaluating"):       # one item that does not fit: say so
        list(evaluate.evaluate(pol, items, CFG, seed=5))


@pytest.mark.parametrize("demo", demos.DEMOS, ids=[d.key for d in demos.DEMOS])
def test_demo_models_batched_equal_item_by_item(demo):
    """The bundled models on 24 items of their example sets, at their settings' votes: the same
    evaluation in batches of 16 as one by one; greedy replies as one prompt decoded alone
    by the eager decoder gives them."""
    ds = load_dataset(demo.example_dir, questions_file=demo.example_dir / "questions.csv", task=demo.task)
    items = ds.items[:24]
    pol = load_policy(demo.model, "fp32", "cpu")
    cfg = TTRVConfig(model=demo.model, eval_votes=16, **demo.settings).with_(eval_batch=1)
    one = [asdict(evaluate.evaluate_item(pol, it, cfg, seed=1)) for it in items]
    assert [asdict(e) for e in evaluate.evaluate(pol, items, cfg.with_(eval_batch=16), seed=1)] == one
    greedy = [sample(pol, prepare_prompt(pol, it.image(), it.prompt), 1, max_new_tokens=cfg.max_new_tokens,
                     greedy_rows=1, decode="eager").texts[0] for it in items]
    assert [e["greedy_text"] for e in one] == greedy


@pytest.mark.parametrize("model_type", ALL_TYPES)
def test_a_fresh_adapter_is_switched_off_with_the_same_answers(tiny_models, model_type, items, monkeypatch):
    """lora_B = 0 (before training): the evaluation runs the base model alone, skipping the LoRA
    products that add exactly 0; every answer is what the adapter-on forward gives."""
    pol = load_policy(str(tiny_models[model_type]), precision="fp32", device="cpu", lora_r=4, lora_alpha=8)
    assert evaluate._adapter_is_zero(pol)
    off = [asdict(e) for e in evaluate.evaluate(pol, items, CFG.with_(eval_batch=4), seed=5)]
    monkeypatch.setattr(evaluate, "_adapter_is_zero", lambda policy: False)
    assert [asdict(e) for e in evaluate.evaluate(pol, items, CFG.with_(eval_batch=4), seed=5)] == off
    monkeypatch.undo()
    assert not evaluate._adapter_is_zero(_policy(tiny_models[model_type]))   # an adapter that acts stays on


def test_a_kept_static_decoder_is_not_reused_across_the_adapter_switch(tiny_models):
    """On CUDA the kept static decoder replays a recorded step: one recorded with the adapter off
    (an evaluation with a fresh adapter) must not serve sampling with it on, or training would
    sample from the base model."""
    pol = _policy(tiny_models["qwen2_5_vl"])
    prompt = prepare_prompt(pol, Image.new("RGB", (32, 32)), "What is it?")
    with pol.adapter_off():
        assert not pol.adapter_on
        sample(pol, prompt, 4, max_new_tokens=3, decode="static")
        off = pol.decoders.kept
    assert pol.adapter_on
    sample(pol, prompt, 4, max_new_tokens=3, decode="static")
    assert pol.decoders.kept is not off and pol.decoders.kept.adapter_on
    pol.decoders.release()
