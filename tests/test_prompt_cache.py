"""A run's prompts prepared once (prompt_cache.Prompts), the schedule without transformers' trainer, and
the CLI's load without bitsandbytes: the same numbers, less waiting.

  - a run prepares each item's prompt once (the before-evaluation), and the steps and the
    after-evaluation reuse it: the events and the adapter are those of a run that prepares every
    prompt again (budget 0), on the one-update-per-prompt path and on the k-prompts-per-update path,
    and in single-example mode. The runs train (a gradient on every step, lora_B moved): votes of one
    token at T = 0.5 agree in part, so the adapters compared hold what each path computed;
  - the cache holds at most its budget, measured by walking the tensors its kept prompts hold (not
    its own counter), while the shared prefill adds each prompt's image encoding (LLaVA: the
    encoder's output outweighs the pixels); the least recently used prompt is dropped first;
  - engine.cosine_schedule gives transformers' get_cosine_schedule_with_warmup's rates and state;
  - `python -m ttrv_core` on a CPU in fp32 never imports bitsandbytes (and prints no bitsandbytes
    warning); in 4-bit it does; a 4-bit load in a process that hid it is refused with a message.
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from ttrv_core.config import TTRVConfig
from ttrv_core.events import EvalResult, RunEnd, StepEvent
from ttrv_core.inputs.dataset import Item
from ttrv_core.method.engine import adapt, cosine_schedule
from ttrv_core.model.loading import load_policy
from ttrv_core.sampling import prompt, prompt_cache, rollout

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]
# one-token votes at T = 0.5 on the random tiny model agree in part (6 of 8 distinct, typically): the
# rewards differ within a group and every step has a gradient
SMALL = dict(model="x", n_votes=8, n_train=4, max_new_tokens=1, temperature=0.5, prompts_per_step=2, lr=1e-2,
             seed=3, max_steps=3, eval_batch=2)


@pytest.fixture
def items(tmp_path):
    out = []
    for i in range(4):
        p = tmp_path / f"im{i}.png"
        Image.new("RGB", (28 + 3 * i, 28), (60 * i, 30, 90)).save(p)
        out.append(Item(p.name, p, "What is it?", answer="red" if i % 2 else "blue"))
    return out


def _numbers(events) -> list:
    """Everything an event says except how long it took."""
    out = []
    for e in events:
        if isinstance(e, StepEvent):
            out.append((e.step, [vars(s) for s in e.items],
                        {k: v for k, v in e.metrics.items() if not k.startswith(("time/", "memory/"))}))
        elif isinstance(e, EvalResult):
            out.append((e.phase, [vars(x) for x in e.items], e.metrics))
        elif isinstance(e, RunEnd):
            out.append(e.summary)
    return out


def _run(model, items, cfg, budget, monkeypatch, single=None):
    """The run's events and adapter, with the run's cache at `budget` bytes; and how many prompts it prepared."""
    made = []

    class Counted(prompt_cache.Prompts):
        def __init__(self, policy, frames, budget_=None, **kw):
            super().__init__(policy, frames, budget if budget_ is None else budget_, **kw)
            made.append(self)

    monkeypatch.setattr("ttrv_core.method.engine.Prompts", Counted)
    policy = load_policy(str(model), "fp32", "cpu", lora_r=4, lora_alpha=8)
    events = list(adapt(cfg, policy, items, single=single))
    steps = [e for e in events if isinstance(e, StepEvent)]
    assert len(steps) == 3 and all(e.metrics["grad/norm"] > 0 for e in steps)   # every step trained
    lora = {n: p.detach().clone() for n, p in policy.model.named_parameters() if p.requires_grad}
    assert any(bool(w.any()) for n, w in lora.items() if "lora_B" in n)          # from 0: the adapter moved
    return _numbers(events), lora, sum(c.prepared for c in made)


@pytest.mark.parametrize("per_update", [0, 2])
def test_a_run_prepares_each_prompt_once_with_the_same_numbers(tiny_models, items, monkeypatch, per_update):
    cfg = TTRVConfig(**SMALL, prompts_per_update=per_update)
    again, lora_again, n_again = _run(tiny_models["qwen2_5_vl"], items, cfg, 0, monkeypatch)
    once, lora_once, n_once = _run(tiny_models["qwen2_5_vl"], items, cfg, None, monkeypatch)
    assert once == again
    assert all(torch.equal(lora_once[n], lora_again[n]) for n in lora_again)
    assert n_once == len(items)                      # the before-evaluation prepared them all
    # before, after, and 3 steps of 2 prompts, each prepared twice at budget 0: when the engine asks
    # whether the step can use it (a file that no longer reads is left out), and when the step reads it
    assert n_again == 2 * len(items) + 2 * 3 * 2


def test_single_example_mode_reuses_the_one_prompt(tiny_models, items, monkeypatch):
    cfg = TTRVConfig(**SMALL)
    again, _, _ = _run(tiny_models["qwen2_5_vl"], items, cfg, 0, monkeypatch, single=items[1].id)
    once, _, n_once = _run(tiny_models["qwen2_5_vl"], items, cfg, None, monkeypatch, single=items[1].id)
    assert once == again and n_once == len(items)


def _held(cache: prompt_cache.Prompts) -> int:
    """Bytes the cache's kept prompts hold: every tensor reachable from their fields, walked (inputs,
    positions, the image encoder's output and all it holds), each storage once and whole."""
    storages = {}

    def walk(x):
        if isinstance(x, torch.Tensor):
            storages[x.untyped_storage().data_ptr()] = x.untyped_storage().nbytes()
        elif isinstance(x, dict):               # transformers' ModelOutput too
            for v in x.values():
                walk(v)
        elif isinstance(x, (list, tuple)):
            for v in x:
                walk(v)
        elif hasattr(x, "__dataclass_fields__"):  # prompt.Prompt
            for name in x.__dataclass_fields__:
                walk(getattr(x, name))

    for kept, _ in cache._kept.values():
        walk(kept)
    return sum(storages.values())


@pytest.mark.parametrize("family", ["llava", "qwen2_5_vl"])
def test_the_cache_holds_at_most_its_budget_while_prefills_add_image_encodings(tiny_models, items, family):
    policy = load_policy(str(tiny_models[family]), "fp32", "cpu", lora_r=4, lora_alpha=8)
    probe = prompt_cache.Prompts(policy, 8)
    probe(items[0])
    size = _held(probe)                     # one prompt before its image encoding
    cache = prompt_cache.Prompts(policy, 8, budget=2 * size + 1)   # room for two prompts as prepared
    for it in items:
        prompt = cache(it)   # kept as prepared, then looked up no more (as in an evaluation)
        rollout.sample(policy, prompt, 2, max_new_tokens=1, shared=True)   # its prefill adds the image encoding
        assert prompt._images, "the shared prefill added no image encoding: nothing measured"
        assert _held(cache) <= cache.budget, f"{family}: holds {_held(cache) / cache.budget:.2f}x its budget"
        assert cache.bytes == _held(cache)  # its counter is what it holds
    assert cache._kept                       # and it keeps something


def test_the_cache_drops_the_least_recently_used_first(tiny_models, items):
    policy = load_policy(str(tiny_models["qwen2_5_vl"]), "fp32", "cpu", lora_r=4, lora_alpha=8)
    size = prompt_cache._nbytes(prompt.prepare_prompt(policy, items[0].image(), items[0].prompt))
    assert size > 0
    cache = prompt_cache.Prompts(policy, 8, budget=2 * size + size // 2)   # room for two prompts of this size
    a = cache(items[0])
    cache(items[1])
    assert cache(items[0]) is a and cache.prepared == 2               # kept: the same object
    cache(items[2])                                                    # drops items[1], the least recent
    assert cache(items[0]) is a and cache.prepared == 3
    cache(items[1])
    assert cache.prepared == 4 and cache.bytes == _held(cache) <= cache.budget
    a.encoded(policy)                          # the image encoding is counted as it is added
    assert cache.bytes == _held(cache) <= cache.budget
    assert torch.equal(cache(items[0]).inputs["input_ids"],
                       prompt.prepare_prompt(policy, items[0].image(), items[0].prompt).inputs["input_ids"])
    cache.clear()
    assert cache.bytes == 0 and cache(items[0]) is not a
    none = prompt_cache.Prompts(policy, 8, budget=0)
    assert none(items[0]) is not none(items[0]) and none.bytes == 0


@pytest.mark.parametrize("warmup,total", [(0, 9), (1, 9), (3, 10), (0, 1), (2, 2), (5, 40)])
def test_cosine_schedule_is_transformers(warmup, total):
    from transformers import get_cosine_schedule_with_warmup

    def rates(make):
        opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=1e-3)
        sched = make(opt, warmup, total)
        out = []
        for _ in range(total + 2):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        return out, sched.state_dict()

    ours, theirs = rates(cosine_schedule), rates(get_cosine_schedule_with_warmup)
    assert ours[0] == theirs[0]                      # every rate, to the bit
    assert ours[1] == theirs[1]                      # and the state a checkpoint keeps


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_the_cli_in_fp32_does_not_import_bitsandbytes(tmp_path):
    pytest.importorskip("bitsandbytes")
    out = tmp_path / "run"
    got = _python("import sys\nfrom ttrv_core.cli import main\n"
                  f"rc = main(['--demo', 'format', '--limit', '4', '--steps', '1', '--votes', '4', '--train', '2', "
                  f"'--eval-votes', '2', '--out', {str(out)!r}])\n"
                  "print('RESULT', rc, 'peft' in sys.modules, 'bitsandbytes' in sys.modules)")
    assert "RESULT 0 True False" in got.stdout, got.stderr[-2000:]
    assert "bitsandbytes" not in got.stderr and "kernels" not in got.stderr
    assert json.loads((out / "summary.json").read_text())           # the run is complete


def test_a_4bit_load_after_a_hidden_bitsandbytes_is_refused(tiny_models):
    pytest.importorskip("bitsandbytes")
    model = str(tiny_models["qwen2_5_vl"])
    got = _python("import sys\nfrom ttrv_core.model.loading import load_policy, ModelLoadError\n"
                  f"load_policy({model!r}, 'fp32', 'cpu', only_model=True)\n"
                  "print('HIDDEN', 'bitsandbytes' in sys.modules)\n"
                  f"try:\n    load_policy({model!r}, '4bit', 'cpu')\nexcept ModelLoadError as e:\n    print('REFUSED', e)\n")
    assert "HIDDEN False" in got.stdout, got.stderr[-2000:]
    assert "REFUSED" in got.stdout and "new process" in got.stdout
    # asked for 4-bit from the start, only_model hides nothing: bitsandbytes is there for peft
    got = _python("import sys\nfrom ttrv_core.model.loading import load_policy\n"
                  f"p = load_policy({model!r}, '4bit', 'cpu', only_model=True)\n"
                  "print('LOADED', 'bitsandbytes' in sys.modules, type(p.model).__name__)")
    assert "LOADED True" in got.stdout, got.stderr[-2000:]
