"""Stop takes effect within one prompt, in every phase (engine.adapt), and what the run folder then
holds (folder.record): no untrained adapter, a partial evaluation said to be partial, a step cut
short undone. On a tiny random model; the stop is asked from inside the work it should cut short."""
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

import ttrv_core.method.engine as engine
import ttrv_core.method.evaluate as evaluate
import ttrv_core.method.step as step_module
from ttrv_core.config import TTRVConfig
from ttrv_core.events import EvalResult, RunEnd, StepEvent
from ttrv_core.inputs.dataset import Item
from ttrv_core.model.loading import load_policy
from ttrv_core.runs.folder import RunDir, record

pytestmark = pytest.mark.usefixtures("one_thread")
SMALL = dict(model="x", n_votes=4, n_train=2, max_new_tokens=3, prompts_per_step=3, lr=1e-2, seed=1, max_steps=3,
             eval_batch=2)  # evaluation batches of images 1, 2-3, 4-5, 6


@pytest.fixture(scope="module")
def policy_path(tiny_models):
    return str(tiny_models["qwen2_5_vl"])


@pytest.fixture
def items(tmp_path):
    out = []
    for i in range(6):
        p = tmp_path / f"im{i}.png"
        Image.new("RGB", (28 + i, 20), (40 * i, 30, 90)).save(p)
        out.append(Item(p.name, p, "What is it?", answer="red"))
    return out


def lora(policy):
    return {n: p.detach().clone() for n, p in policy.model.named_parameters() if p.requires_grad}


class Counter:
    """Counts calls of an engine function; asks for a stop (another press each time) at given calls."""

    def __init__(self, monkeypatch, module, name, stop_at=()):
        self.calls, self.stops, self.stop_at, real = 0, 0, set(stop_at), getattr(module, name)

        def counted(*a, **kw):
            self.calls += 1
            out = real(*a, **kw)
            if self.calls in self.stop_at:
                self.stops += 1
            return out
        monkeypatch.setattr(module, name, counted)

    def __call__(self):
        return self.stops


def test_stop_in_the_before_evaluation_ends_the_run_within_one_image(policy_path, items, monkeypatch, tmp_path):
    """A stop asked while the second batch (images 2-3) is evaluated: the run ends after image 2,
    within one batch of the evaluation's work."""
    evals = Counter(monkeypatch, evaluate, "evaluate_batch", stop_at={2})
    policy = load_policy(policy_path, "fp32", "cpu")
    run_dir = RunDir(tmp_path / "run")
    events = list(record(engine.adapt(TTRVConfig(**SMALL), policy, items, should_stop=evals), run_dir, policy, items))
    assert evals.calls == 2                                           # not one batch more
    before = [e for e in events if isinstance(e, EvalResult)]
    assert [(e.phase, len(e.items), e.metrics["eval/items"]) for e in before] == [("before", 2, 2.0)]
    assert not any(isinstance(e, StepEvent) for e in events)
    assert isinstance(events[-1], RunEnd) and events[-1].stopped
    # nothing was trained: no adapter (it would be the untrained LoRA init), the partial results are kept
    assert not (run_dir.root / "adapter").exists()
    rows = json.loads((run_dir.root / "results.json").read_text())["items"]
    assert sum(r["before_greedy"] is not None for r in rows) == 2


def test_stop_before_anything_is_evaluated_leaves_no_results(policy_path, items, tmp_path):
    policy = load_policy(policy_path, "fp32", "cpu")
    run_dir = RunDir(tmp_path / "run")
    events = list(record(engine.adapt(TTRVConfig(**SMALL), policy, items, should_stop=lambda: 1), run_dir, policy,
                         items))
    assert [type(e).__name__ for e in events] == ["RunStart", "RunEnd"] and events[-1].stopped
    assert not (run_dir.root / "adapter").exists() and not (run_dir.root / "results.csv").exists()


@pytest.mark.parametrize("where, stop_at", [("sampling", {4}), ("updates", {2})])
def test_stop_within_a_step_undoes_it_and_still_evaluates(policy_path, items, monkeypatch, where, stop_at):
    """Step 1 samples prompts 1-3 and updates on them; step 2 samples prompts 4-6. A stop after
    the 4th sampling (in step 2) or after the 2nd update (in step 1) ends training before the next
    prompt; the step it cut short leaves no trace in the weights; the after-evaluation still runs."""
    if where == "sampling":
        counter = Counter(monkeypatch, step_module, "sample", stop_at=stop_at)
    else:
        counter = Counter(monkeypatch, step_module, "apply", stop_at=stop_at)
    policy = load_policy(policy_path, "fp32", "cpu")
    start, after_step = lora(policy), {}
    events = []
    for ev in engine.adapt(TTRVConfig(**SMALL), policy, items, should_stop=counter, evaluate_before=False):
        events.append(ev)
        if isinstance(ev, StepEvent):
            after_step[ev.step] = lora(policy)
    steps = [e.step for e in events if isinstance(e, StepEvent)]
    if where == "sampling":
        assert counter.calls == 4 and steps == [1]                  # the 5th prompt was never sampled
        kept = after_step[1]
    else:
        assert counter.calls == 2 and steps == []                   # the 3rd update never ran
        kept = start
    now = lora(policy)
    assert all(torch.equal(now[n], kept[n]) for n in now)           # the cut step is undone, bit for bit
    after = [e for e in events if isinstance(e, EvalResult) and e.phase == "after"]
    if steps:
        assert len(after) == 1 and len(after[0].items) == len(items)  # one stop: the evaluation still runs
    else:
        assert after == []                                            # nothing trained: nothing to evaluate
    assert events[-1].stopped


def test_a_second_stop_ends_the_after_evaluation_within_one_image(policy_path, items, monkeypatch):
    """Stop in training (press 1), then again in the after-evaluation (press 2): it ends at once,
    over the images evaluated so far, and the run says it was stopped."""
    policy = load_policy(policy_path, "fp32", "cpu")
    presses = [0]
    evals = Counter(monkeypatch, evaluate, "evaluate_batch")
    events = []
    for ev in engine.adapt(TTRVConfig(**SMALL), policy, items, should_stop=lambda: presses[0], evaluate_before=False):
        events.append(ev)
        if isinstance(ev, StepEvent):
            presses[0] = 1                                            # training stops after step 1
        if ev.type == "progress" and ev.phase == "after":
            presses[0] = 2                                            # the first progress is the first image
    after = next(e for e in events if isinstance(e, EvalResult) and e.phase == "after")
    assert len(after.items) == 1 and evals.calls == 1 and after.metrics["eval/items"] == 1.0
    assert events[-1].stopped and [e.step for e in events if isinstance(e, StepEvent)] == [1]


def test_a_boolean_stop_still_means_stop_training_then_evaluate(policy_path, items):
    """should_stop returning True (the CLI, callers that return a bool) stops training; the after-evaluation runs."""
    policy = load_policy(policy_path, "fp32", "cpu")
    seen = []
    events = [ev for ev in engine.adapt(TTRVConfig(**SMALL), policy, items, should_stop=lambda: bool(seen),
                                      evaluate_before=False) if not (isinstance(ev, StepEvent) and seen.append(ev))]
    after = [e for e in events if isinstance(e, EvalResult)]
    assert len(seen) == 1 and len(after) == 1 and len(after[0].items) == len(items) and events[-1].stopped


def test_the_adapter_carries_a_model_card(policy_path, items, tmp_path):
    policy = load_policy(policy_path, "fp32", "cpu")
    run_dir = RunDir(tmp_path / "run")
    cfg = TTRVConfig(**SMALL | {"model": policy_path, "max_steps": 1})
    list(record(engine.adapt(cfg, policy, items), run_dir, policy, items))
    card = (run_dir.root / "adapter" / "README.md").read_text()
    assert policy_path not in card and f"Base model: `{Path(policy_path).name}`" in card   # a local folder: its name
    assert "What is it?" in card and items[0].prompt in card                # the question and its suffix
    assert "| n_votes | 4 |" in card and "| lr | 0.01 |" in card and "| prompts_per_update | 0 |" in card
    assert "| accuracy, greedy answer |" in card and "| images evaluated | 6 | 6 |" in card


class Recorded(torch.optim.AdamW):
    """engine.adapt's AdamW (monkeypatched in), which keeps a copy of its state after every step and
    the gradient norm each step was taken on."""
    made: list["Recorded"] = []

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.after, self.grad_norms = [], []
        Recorded.made.append(self)

    def step(self, closure=None):
        params = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
        self.grad_norms.append(float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params]))))
        out = super().step(closure)
        self.after.append(optimizer_state(self))
        return out


def optimizer_state(opt) -> dict:
    """A copy of the optimizer's state_dict: {param index: {exp_avg, exp_avg_sq, step}}, and its groups."""
    sd = opt.state_dict()
    return {"state": {i: {k: v.clone() for k, v in st.items()} for i, st in sd["state"].items()},
            "param_groups": [dict(g) for g in sd["param_groups"]]}


def same_state(a: dict, b: dict) -> bool:
    return a["param_groups"] == b["param_groups"] and a["state"].keys() == b["state"].keys() and all(
        st.keys() == b["state"][i].keys() and all(torch.equal(v, b["state"][i][k]) for k, v in st.items())
        for i, st in a["state"].items())


@pytest.mark.parametrize("per_update", [0, 1])   # 0: the paper code's one update per prompt, one stream; 1: k = 1
def test_a_step_cut_short_is_undone_whole_the_optimizer_too(policy_path, items, monkeypatch, per_update):
    """Step 1 updates on prompts 1-3 (an AdamW step each); a stop asked right after step 2's first
    update (prompt 4) undoes step 2 whole: the LoRA weights AND AdamW's exp_avg, exp_avg_sq and step
    are those after step 1, bit for bit, so that a checkpoint or a continued run after the stop sees
    the completed steps only. The update undone had a gradient, so its moments had moved (one vote per
    reply, 8 votes, all trained on: the tiny model's replies agree in part, the advantages are not 0)."""
    monkeypatch.setattr(torch.optim, "AdamW", Recorded)
    monkeypatch.setattr(Recorded, "made", [])
    cfg = TTRVConfig(**SMALL | dict(n_votes=8, n_train=8, max_new_tokens=1, prompts_per_update=per_update))
    policy = load_policy(policy_path, "fp32", "cpu", seed=cfg.seed)
    updates = lambda: len(Recorded.made[0].after) if Recorded.made else 0   # noqa: E731
    after_step, events = {}, []
    for ev in engine.adapt(cfg, policy, items, should_stop=lambda: updates() >= 4, evaluate_before=False):
        events.append(ev)
        if isinstance(ev, StepEvent):   # the state after the step, its learning rate scheduled
            after_step[ev.step] = lora(policy), optimizer_state(Recorded.made[0])
    (opt,) = Recorded.made
    assert [e.step for e in events if isinstance(e, StepEvent)] == [1] and len(opt.after) == 4
    assert all(n > 0 for n in opt.grad_norms), opt.grad_norms          # every update trained
    weights, one = after_step[1]
    cut = opt.after[3]                                                   # after step 2's first update
    assert same_state(one | {"param_groups": []}, opt.after[2] | {"param_groups": []})
    assert one["state"] and all(int(st["step"]) == 3 for st in one["state"].values())
    moved = [i for i, st in cut["state"].items() if not torch.equal(st["exp_avg_sq"], one["state"][i]["exp_avg_sq"])]
    assert moved and all(int(st["step"]) == 4 for st in cut["state"].values())
    assert same_state(optimizer_state(opt), one)                         # the moments and step undone too
    now = lora(policy)
    assert all(torch.equal(now[n], weights[n]) for n in now)           # the weights undone
    assert any(not torch.equal(now[n], torch.zeros_like(now[n])) for n in now if "lora_B" in n)
    assert events[-1].stopped and [e.phase for e in events if isinstance(e, EvalResult)] == ["after"]


@pytest.mark.parametrize("per_update", [0, 1])
def test_a_first_step_cut_short_leaves_the_optimizer_new(policy_path, items, monkeypatch, per_update):
    """A stop right after the run's first update undoes step 1: the LoRA weights are the initial ones
    and AdamW has no state at all, as before its first step (the state that step created is dropped)."""
    monkeypatch.setattr(torch.optim, "AdamW", Recorded)
    monkeypatch.setattr(Recorded, "made", [])
    cfg = TTRVConfig(**SMALL | dict(n_votes=8, n_train=8, max_new_tokens=1, prompts_per_update=per_update))
    policy = load_policy(policy_path, "fp32", "cpu", seed=cfg.seed)
    start = lora(policy)
    stop = lambda: bool(Recorded.made and Recorded.made[0].after)   # noqa: E731
    events = list(engine.adapt(cfg, policy, items, should_stop=stop, evaluate_before=False))
    (opt,) = Recorded.made
    assert not any(isinstance(e, StepEvent) for e in events) and len(opt.after) == 1
    assert opt.grad_norms[0] > 0 and opt.after[0]["state"]               # the update made moments
    assert optimizer_state(opt)["state"] == {} and not opt.state          # and they are gone
    now = lora(policy)
    assert all(torch.equal(now[n], start[n]) for n in now)
    assert events[-1].stopped
