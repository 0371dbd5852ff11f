"""The base model kept between runs (kept_base.KeptBase, the app's KEPT): a second run does not load
the model again, starts from the base weights with a fresh adapter, and gives what a run after a
fresh load gives; another model, precision or device loads again. Over HTTP: two app runs, one load."""
import json
import zipfile
from pathlib import Path

import pytest
import torch
from PIL import Image
from test_app import app_url, client, files_of, run_args, upload  # noqa: F401 (fixtures)

from ttrv_core.config import TTRVConfig
from ttrv_core.events import Progress
from ttrv_core.inputs.dataset import Item
from ttrv_core.method import engine
from ttrv_core.model import kept_base, loading

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
    return loading.load_policy(path, precision, "cpu", cfg.lora_r, cfg.lora_alpha, cfg.seed, keep=keep)


def weights(policy) -> dict:
    return {n: p.detach().clone() for n, p in policy.model.state_dict().items()}


def test_a_second_run_starts_from_the_base_weights(tiny_models, items, monkeypatch):
    path = str(tiny_models["qwen2_5_vl"])
    cfg = TTRVConfig(model=path, **SMALL)
    loads, real = [], loading._load_base
    monkeypatch.setattr(loading, "_load_base", lambda *a: loads.append(a) or real(*a))
    kept = kept_base.KeptBase()
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
    kept = kept_base.KeptBase()
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
    loads, real = [], loading._load_base
    monkeypatch.setattr(loading, "_load_base", lambda *a: loads.append(a[1]) or real(*a))
    c = client(app_url)
    outs = []
    for precision in ("auto", "auto", "fp32", "bf16"):
        files = files_of(c.predict(**run_args(upload, max_steps=1, precision=precision), api_name="/run"))
        assert files, "the run made no files"
        names = {Path(f).name: Path(f) for f in files}
        with zipfile.ZipFile(names["adapter.zip"]) as z:
            outs.append((json.loads(names["results.json"].read_text())["items"],
                         z.read("adapter_model.safetensors")))
    assert loads == ["fp32", "bf16"]          # auto is fp32 on a CPU: the same model until bf16
    assert outs[1] == outs[0] and outs[2] == outs[0]


def _without(lines: list, key: str) -> list:
    return [json.dumps({k: v for k, v in json.loads(e).items() if k != key}, sort_keys=True) for e in lines]


def test_a_run_on_the_kept_model_reuses_the_last_before_evaluation(tiny_models, items, monkeypatch):
    """engine.adapt(before=...): the events of a run that evaluates, the before-evaluation marked reused
    and not computed again (only the after-evaluation's images go through evaluate_batch)."""
    from ttrv_core.events import EvalResult
    from ttrv_core.method import evaluate
    path = str(tiny_models["qwen2_5_vl"])
    cfg = TTRVConfig(model=path, **SMALL)
    first = [e for e in engine.adapt(cfg, load(path, cfg), items) if isinstance(e, EvalResult)][0]
    assert first.phase == "before" and not first.reused and first.seconds > 0
    other = cfg.with_(lr=1e-2, max_steps=1)                 # training settings: the evaluation does not change
    evaluated, real = [], evaluate.evaluate_batch
    monkeypatch.setattr(evaluate, "evaluate_batch", lambda pol, chunk, *a: evaluated.extend(chunk) or real(pol, chunk, *a))
    reused = list(engine.adapt(other, load(path, other), items, before=first))
    assert len(evaluated) == len(items)                     # the after-evaluation only
    again = list(engine.adapt(other, load(path, other), items))
    assert len(evaluated) == 3 * len(items)
    got = [e for e in reused if isinstance(e, EvalResult) and e.phase == "before"]
    assert len(got) == 1 and got[0].reused and got[0].items == first.items and got[0].seconds == first.seconds
    again = [e for e in again if not (isinstance(e, Progress) and e.phase == "before")]    # evaluating: not here
    assert _without(untimed(reused), "reused") == _without(untimed(again), "reused")   # the same run otherwise
    with pytest.raises(ValueError, match="not of these items"):
        list(engine.adapt(other, load(path, other), items[:3], before=first))


EVALUATION = {"n_votes", "eval_votes", "temperature", "top_p", "max_new_tokens", "video_frames", "seed",
              "shared_prefix", "eval_batch"}
"""The settings a before-evaluation depends on (evaluate.py reads them; the seed seeds each item's votes)."""
THROUGH_POLICY = {"model", "precision", "max_pixels"}
"""Settings that act through the loaded policy: its base model (KeptBase's key), its precision and image
size cap (the policy's own values are what count: checked on the policy)."""
ANOTHER = dict(model="elsewhere", precision="bf16", n_votes=8, n_train=2, temperature=1.0, top_p=0.9, max_new_tokens=5,
               video_frames=4, reward="majority", alpha=0.5, prior_weight=0.5, consensus=0.5, eps_clip=0.3,
               dual_clip=2.0, beta=0.1, adv_eps=1e-3, lr=0.1, weight_decay=0.0, grad_clip=0.5, warmup_ratio=0.1,
               prompts_per_step=1, prompts_per_update=1, train_items=2, train_first=True, epochs=3, max_steps=5,
               lora_r=8,
               lora_alpha=3, seed=2, shared_prefix=False, gradient_checkpointing="layers", max_pixels=5000,
               recompute_old_logprobs=False, collapse_guard=True, single_copies=2, eval_votes=2, eval_batch=4)
"""Another value for every setting."""


def choice_items(folder: Path) -> list:
    out = []
    for i in range(3):
        p = folder / f"c{i}.png"
        Image.new("RGB", (28, 28), (60 * i, 30, 90)).save(p)
        out.append(Item(p.name, p, "Which colour?", task="choice", options=("red", "blue"), answer="A"))
    return out


def test_the_digest_changes_with_what_the_before_evaluation_depends_on_and_nothing_else(tiny_models, tmp_path):
    """kept_runs.depends: every setting is either one the evaluation reads (the digest changes), one that acts
    through the policy, or one it cannot depend on (it does not change); so is every field of every item."""
    from dataclasses import fields, replace

    from ttrv_core.app.kept_runs import depends
    assert set(ANOTHER) == {f.name for f in fields(TTRVConfig)}, "a setting not sorted here"
    path = str(tiny_models["qwen2_5_vl"])
    cfg = TTRVConfig(model=path, **SMALL | {"eval_votes": 0})   # the votes are n_votes: both count
    pol = load(path, cfg)
    items = choice_items(tmp_path)
    base = depends(pol, items, cfg)
    for name, value in ANOTHER.items():
        changed = depends(pol, items, cfg.with_(**{name: value}))
        assert (changed != base) == (name in EVALUATION), name
    assert depends(pol, items, cfg.with_(eval_votes=4, n_votes=8)) == depends(pol, items, cfg.with_(eval_votes=4))
    for name, value in dict(precision="bf16", device=torch.device("meta"), max_pixels=pol.max_pixels // 2).items():
        assert depends(replace(pol, **{name: value}), items, cfg) != base, name
    for name, value in dict(id="other.png", task="classify", question="Which hue?", options=("red", "green"),
                            answer="B", path=items[1].path.with_name("copy.png")).items():
        if name == "path":
            Image.new("RGB", (28, 28), (1, 2, 3)).save(value)          # another image's bytes
        changed = [replace(it, **{name: value}) if i == 1 else it for i, it in enumerate(items)]
        assert depends(pol, changed, cfg) != base, name
    copies = tmp_path / "copies"
    copies.mkdir()
    moved = []
    for it in items:                                        # the same files elsewhere (the app copies uploads)
        (copies / it.path.name).write_bytes(it.path.read_bytes())
        moved.append(replace(it, path=copies / it.path.name))
    assert depends(pol, moved, cfg) == base
    assert depends(pol, items[:2], cfg) != base and depends(pol, items[::-1], cfg) != base


def test_the_adapters_rank_and_scale_cannot_change_the_before_evaluation(tiny_models, items):
    """Why the digest leaves them out: a run's fresh adapter is zero (and switched off), so its rank,
    scale and initialisation give the same votes; the seed of the votes does not."""
    from ttrv_core.method.evaluate import evaluate
    path = str(tiny_models["qwen2_5_vl"])
    cfg = TTRVConfig(model=path, **SMALL)

    def before(c: TTRVConfig, seed: int = 1) -> list:
        return list(evaluate(load(path, c), items, c, seed))

    first = before(cfg)
    assert before(cfg.with_(lora_r=8, lora_alpha=3)) == first
    assert before(cfg.with_(lora_r=8, lora_alpha=3, seed=5)) == first       # another initialisation
    assert before(cfg, seed=2) != first                                     # the votes are sampled


def test_the_memo_goes_with_the_kept_model(tiny_models):
    path = str(tiny_models["qwen2_5_vl"])
    cfg = TTRVConfig(model=path, **SMALL)
    kept = kept_base.KeptBase()
    load(path, cfg, kept)
    kept.memo["x"] = 1
    load(path, cfg.with_(lr=1.0), kept)
    assert kept.memo == {"x": 1}                            # the same base: kept
    load(path, cfg, kept, precision="bf16")
    assert kept.memo == {}                                  # another base: gone with the model


def test_a_model_folder_rebuilt_in_place_loads_again(tiny_models, tmp_path):
    """A local model folder rebuilt with other weights (same path) is another model: the kept one and
    the before-evaluation kept with it go; an untouched folder keeps both."""
    import shutil

    from tiny import build_qwen
    folder = tmp_path / "model"
    shutil.copytree(tiny_models["qwen2_5_vl"], folder)
    cfg = TTRVConfig(model=str(folder), **SMALL)
    kept = kept_base.KeptBase()
    first = load(str(folder), cfg, kept)
    old = {n: p.detach().clone() for n, p in first.base.state_dict().items()}
    kept.memo["before"] = "the old model's before-evaluation"
    assert load(str(folder), cfg, kept).base is first.base and kept.memo      # untouched: reused
    build_qwen(folder, seed=1)                              # rebuilt in place: other weights, same file sizes
    second = load(str(folder), cfg, kept)
    assert second.base is not first.base and kept.memo == {}
    new = second.base.state_dict()
    assert new.keys() == old.keys() and any(not torch.equal(new[n], old[n]) for n in old)
    fresh = load(str(folder), cfg).base.state_dict()        # what a load of its own gives
    assert all(torch.equal(new[n], fresh[n]) for n in new)


def test_the_app_reuses_the_before_evaluation_while_nothing_it_depends_on_changes(app_url, upload):  # noqa: F811
    """Over HTTP: a second run with another learning rate shows the first's before-evaluation, says
    so, and trains as a fresh run would; other evaluation settings evaluate again; so do other images."""
    from html import escape

    import app
    from ttrv_core.app.live_run import REUSED
    app.KEPT.clear()
    c = client(app_url)

    def run(files=upload, **over):
        out = c.predict(**run_args(files, max_steps=1, **over), api_name="/run")
        names = {f.name: f for f in files_of(out)}
        evals = [json.loads(l) for l in names["events.jsonl"].read_text().splitlines()
                 if json.loads(l)["type"] == "eval"]
        return out[0], json.loads(names["results.json"].read_text()), evals

    s1, r1, e1 = run()
    s2, r2, e2 = run(lr=5e-3)
    s3, r3, e3 = run(lr=5e-3, eval_votes=2)
    digits = [f for f in upload if f.suffix == ".png" and f.name != "broken.png"]
    fewer = [f for f in upload if f != digits[0]]          # one image less
    s4, r4, e4 = run(fewer, lr=5e-3, eval_votes=2)
    assert [e["reused"] for e in e1] == [False, False] and escape(REUSED) not in s1
    assert [e["reused"] for e in e2] == [True, False] and escape(REUSED) in s2
    assert e2[0]["items"] == e1[0]["items"] and e2[0]["metrics"] == e1[0]["metrics"]
    assert r2["before"] == r1["before"]
    assert [{k: v for k, v in i.items() if k.startswith("before")} for i in r2["items"]] == \
        [{k: v for k, v in i.items() if k.startswith("before")} for i in r1["items"]]
    assert [e["reused"] for e in e3] == [False, False] and escape(REUSED) not in s3      # other evaluation settings
    assert [e["reused"] for e in e4] == [False, False] and len(e4[0]["items"]) == len(e3[0]["items"]) - 1
    assert all(s.startswith('<div id="ttrv-status" data-kind="done"') for s in (s1, s2, s3, s4))


def test_only_a_complete_before_evaluation_is_kept_for_the_next_run(tiny_models, items, tmp_path):
    """app.gpu_job keeps the last before-evaluation only when it covers every image: a run stopped during
    it leaves nothing to reuse; a complete one is kept, with its key, and replaces the last."""
    import app
    from ttrv_core.events import EvalResult
    path = str(tiny_models["qwen2_5_vl"])
    cfg = TTRVConfig(model=path, precision="fp32", **SMALL)
    app.KEPT.clear()

    def run(name, cfg, stop_after_first_votes=False):
        stops = []
        for ev in app.gpu_job(cfg, items, None, tmp_path / name, {"config": cfg.to_dict()}, [], lambda: len(stops)):
            if stop_after_first_votes and isinstance(ev, Progress) and ev.done == 1:
                stops.append("stop")
            yield ev

    partial = [e for e in run("a", cfg, True) if isinstance(e, EvalResult)]
    assert len(partial) == 1 and len(partial[0].items) < len(items)
    assert app.KEPT.memo == {}
    list(run("b", cfg))
    (key, kept), = app.KEPT.memo.items()
    assert len(kept.items) == len(items) and not kept.reused
    evals = [e for e in run("c", cfg.with_(lr=0.1)) if isinstance(e, EvalResult)]
    assert evals[0].reused and evals[0].items == kept.items
    list(run("d", cfg.with_(eval_votes=2)))
    assert list(app.KEPT.memo) != [key]                     # the new complete one replaces it
    app.KEPT.clear()
