"""The base model kept between runs (models.KeptBase, the app's KEPT): a second run does not load
the model again, starts from the base weights with a fresh adapter, and gives what a run after a
fresh load gives; another model, precision or device loads again. Over HTTP: two app runs, one load."""
import json
import zipfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from test_app import app_url, client, run_args, upload  # noqa: F401 (fixtures)
from ttrv_core import engine, models
from ttrv_core.config import TTRVConfig
from ttrv_core.data import Item
from ttrv_core.events import RunEnd, StepEvent

pytestmark = pytest.mark.usefixtures("one_thread")
SMALL = dict(n_votes=6, n_train=4, max_new_tokens=3, prompts_per_step=3, lr=3e-2, seed=1, max_steps=2,
             eval_votes=4, lora_r=4, temperature=2.0, collapse_guard=False)


@pytest.fixture
def items(tmp_path):
    out = []
    for i in range(4):
        p = tmp_path / f"im{i}.png"
        Image.new("RGB", (28 + 3 * i, 28), (50 * i, 20, 90)).save(p)
        out.append(Item(p.name, p, "What is it?", answer="red"))
    return out


def untimed(events) -> list:
    """Every event as data, wall-clock numbers left out."""
    out = []
    for ev in events:
        d = ev.to_dict() if hasattr(ev, "to_dict") else dict(vars(ev))
        d = {k: v for k, v in d.items() if k not in ("seconds", "snapshot", "latest")}
        if "metrics" in d:
            d["metrics"] = {k: v for k, v in d["metrics"].items() if not k.startswith("time/")}
        out.append(json.dumps(d, sort_keys=True, default=str))
    return out


def load(path, cfg, keep=None, precision="fp32"):
    return models.load_policy(path, precision, "cpu", cfg.lora_r, cfg.lora_alpha, cfg.seed, keep=keep)


def weights(policy) -> dict:
    return {n: p.detach().clone() for n, p in policy.model.state_dict().items()}


def test_a_second_run_starts_from_the_base_weights(tiny_models, items, monkeypatch):
    path = str(tiny_models["qwen2_5_vl"])
    cfg = TTRVConfig(model=path, **SMALL)
    loads, real = [], models._load_base
    monkeypatch.setattr(models, "_load_base", lambda *a: loads.append(a) or real(*a))
    kept = models.KeptBase()
    first = load(path, cfg, kept)
    start = weights(first)
    torch.manual_seed(0)
    for n, p in first.model.named_parameters():   # an adapter that acts (lora_B starts at 0), as after training
        if "lora_B" in n:
            p.data.normal_(0, 0.05)
    run1 = untimed(engine.adapt(cfg, first, items))
    assert sum(isinstance(json.loads(e).get("step"), int) for e in run1) == 2
    moved = weights(first)
    assert any(not torch.equal(moved[n], start[n]) for n in start if "lora_B" in n)

    second = load(path, cfg, kept)
    assert second.base is first.base and len(loads) == 1                  # not loaded again
    fresh = load(path, cfg)                                               # a load of its own, same seed
    now, new = weights(second), weights(fresh)
    assert now.keys() == new.keys() == start.keys()                       # one adapter, no layer left from run 1
    assert all(torch.equal(now[n], new[n]) and torch.equal(now[n], start[n]) for n in now)   # bit for bit
    run2 = untimed(engine.adapt(cfg, second, items))
    assert run2 == untimed(engine.adapt(cfg, fresh, items)) and run2 != run1


def test_the_adapter_follows_the_run_and_the_model_loads_again_only_when_it_changes(tiny_models):
    path, other = str(tiny_models["qwen2_5_vl"]), str(tiny_models["qwen2_vl"])
    kept = models.KeptBase()
    a = load(path, TTRVConfig(model=path, **SMALL), kept)
    b = load(path, TTRVConfig(model=path, **SMALL | {"lora_r": 8, "seed": 3}), kept)   # same base, new adapter
    assert b.base is a.base
    ranks = {p.shape[0] for n, p in b.model.named_parameters() if "lora_A" in n}
    assert ranks == {8} and b.model.peft_config["default"].lora_alpha == 16
    c = load(path, TTRVConfig(model=path, **SMALL), kept, precision="bf16")             # another precision
    assert c.base is not a.base and c.base.dtype == torch.bfloat16
    d = load(other, TTRVConfig(model=other, **SMALL), kept)                             # another model
    assert d.base is not c.base and d.base.config.model_type == "qwen2_vl"
    assert kept._loaded[0] is d.base                                                    # one kept at a time


def test_two_app_runs_load_the_model_once_and_agree(app_url, upload, monkeypatch):  # noqa: F811
    """The app: the first run loads, the second reuses the base and gives the same results and the
    same adapter (same seed), a change of precision loads again."""
    import app
    app.KEPT.clear()
    loads, real = [], models._load_base
    monkeypatch.setattr(models, "_load_base", lambda *a: loads.append(a[1]) or real(*a))
    c = client(app_url)
    outs = []
    for precision in ("auto", "auto", "fp32", "bf16"):
        files = c.predict(**run_args(upload, max_steps=1, precision=precision), api_name="/run")[6]
        assert files, "the run made no files"
        names = {Path(f).name: Path(f) for f in files}
        with zipfile.ZipFile(names["adapter.zip"]) as z:
            outs.append((json.loads(names["results.json"].read_text())["items"],
                         z.read("adapter_model.safetensors")))
    assert loads == ["fp32", "bf16"]          # auto is fp32 on a CPU: the same model until bf16
    assert outs[1] == outs[0] and outs[2] == outs[0]
