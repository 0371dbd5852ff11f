"""The engine loop on a tiny random model: event sequence, metrics, stop, single-example mode."""
import math

import pytest
import torch
from PIL import Image

from ttrv_core.config import TTRVConfig
from ttrv_core.data import Item
from ttrv_core.engine import Resume, adapt, train_schedule
from ttrv_core.events import EvalResult, Progress, RunEnd, RunStart, StepEvent
from ttrv_core.models import load_policy, save_adapter

SMALL = dict(n_votes=6, n_train=4, max_new_tokens=4, prompts_per_step=2, lr=1e-2, seed=3)


@pytest.fixture
def items(tmp_path):
    out = []
    for i in range(3):
        p = tmp_path / f"im{i}.png"
        Image.new("RGB", (30 + i, 20), (60 * i, 30, 90)).save(p)
        out.append(Item(p.name, p, "What is it?", answer="red" if i else None))
    return out


def nats(counts: dict) -> float:
    n = sum(counts.values())
    return -sum(c / n * math.log(c / n) for c in counts.values())


def lora_state(policy):
    return {n: p.detach().clone() for n, p in policy.model.named_parameters() if p.requires_grad}


def test_schedule_epochs_and_batches(items):
    cfg = TTRVConfig(prompts_per_step=2, epochs=2)
    steps = train_schedule(items, cfg)
    assert [len(s) for s in steps] == [2, 1, 2, 1]          # ceil(3/2) steps per epoch, 2 epochs
    assert sorted(i.id for s in steps[:2] for i in s) == sorted(i.id for i in items)
    assert len(train_schedule(items, cfg.with_(max_steps=5))) == 5


def test_run_events_and_update(tiny_models, items):
    policy = load_policy(str(tiny_models["qwen2_5_vl"]), "fp32", "cpu")
    cfg = TTRVConfig(model="x", max_steps=2, **SMALL)
    before = lora_state(policy)
    events = list(adapt(cfg, policy, items))
    kinds = [type(e) for e in events]
    assert kinds[0] is RunStart and kinds[-1] is RunEnd
    evals = [e for e in events if isinstance(e, EvalResult)]
    assert [e.phase for e in evals] == ["before", "after"]
    assert all(len(e.items) == 3 for e in evals)
    assert evals[0].metrics["eval/labeled"] == 2.0          # answers are for evaluation only
    steps = [e for e in events if isinstance(e, StepEvent)]
    assert [s.step for s in steps] == [1, 2] and all(s.total_steps == 2 for s in steps)
    assert [len(s.items) for s in steps] == [2, 1]              # 3 items in batches of 2
    for s in steps:
        assert all(sum(iv.counts.values()) == cfg.n_votes for iv in s.items)
        for key in ("reward/mean", "answers/entropy", "answers/majority_share", "loss/kl", "loss/pg",
                    "time/sample_s", "time/train_s", "grad/norm", "lr"):
            assert key in s.metrics
        # entropy: H / ln N per image (monotone in concentration); the paper's H / ln M beside it
        for iv in s.items:
            assert iv.entropy == pytest.approx(nats(iv.counts) / math.log(cfg.n_votes))
            m = len(iv.counts)
            assert iv.entropy_paper == pytest.approx(nats(iv.counts) / math.log(m) if m > 1 else 0.0)
        assert s.metrics["answers/entropy"] == pytest.approx(sum(iv.entropy for iv in s.items) / len(s.items))
        assert s.metrics["answers/entropy_paper"] == pytest.approx(
            sum(iv.entropy_paper for iv in s.items) / len(s.items))
    for e in evals:
        assert all(it.entropy == pytest.approx(nats(it.counts) / math.log(cfg.n_votes)) for it in e.items)
        assert e.metrics["eval/entropy"] == pytest.approx(sum(it.entropy for it in e.items) / 3)
        assert e.metrics["eval/entropy_paper"] == pytest.approx(sum(it.entropy_paper for it in e.items) / 3)
    assert any(isinstance(e, Progress) for e in events)
    after = lora_state(policy)
    # lora_B starts at 0, where weight decay cannot move it: it moves iff a step had a gradient (on
    # this random model all votes often differ: equal rewards, zero advantages, no gradient). The
    # update's sign and the null update are tested in test_grpo_update.py.
    moved = any(not torch.equal(after[n], before[n]) for n in before if "lora_B" in n)
    assert moved == any(s.metrics["grad/norm"] > 0 for s in steps)
    end = events[-1]
    assert not end.stopped and "before/entropy" in end.summary and "after/greedy_acc" in end.summary


def test_stop_keeps_after_eval(tiny_models, items):
    policy = load_policy(str(tiny_models["qwen2_5_vl"]), "fp32", "cpu")
    cfg = TTRVConfig(model="x", max_steps=5, **SMALL)
    seen = []

    def should_stop():
        return len(seen) >= 1

    events = []
    for ev in adapt(cfg, policy, items, should_stop=should_stop, evaluate_before=False):
        events.append(ev)
        if isinstance(ev, StepEvent):
            seen.append(ev)
    assert len(seen) == 1
    assert events[-1].stopped
    assert [e.phase for e in events if isinstance(e, EvalResult)] == ["after"]


def test_single_example_mode(tiny_models, items):
    policy = load_policy(str(tiny_models["qwen2_vl"]), "fp32", "cpu")
    cfg = TTRVConfig(model="x", epochs=1, single_copies=4, **SMALL)
    events = list(adapt(cfg, policy, items, single="im1.png", evaluate_before=False))
    start = events[0]
    assert start.mode == "single" and start.train_ids == ["im1.png"] and start.total_steps == 2
    steps = [e for e in events if isinstance(e, StepEvent)]
    assert all(iv.item_id == "im1.png" for s in steps for iv in s.items)
    (after,) = [e for e in events if isinstance(e, EvalResult)]
    assert len(after.items) == 3                                  # evaluated on all
    with pytest.raises(ValueError, match="not among the items"):
        list(adapt(cfg, policy, items, single="nope.png"))


def test_same_seed_same_run(tiny_models, items):
    cfg = TTRVConfig(model="x", max_steps=1, **SMALL)
    runs = []
    for _ in range(2):
        policy = load_policy(str(tiny_models["qwen2_5_vl"]), "fp32", "cpu", seed=cfg.seed)
        runs.append([(iv.item_id, iv.counts) for e in adapt(cfg, policy, items, evaluate_before=False)
                     if isinstance(e, StepEvent) for iv in e.items])
    assert runs[0] == runs[1]


def untimed(ev):
    return [(iv.item_id, iv.counts) for iv in ev.items], {k: v for k, v in ev.metrics.items() if "time/" not in k}


def test_resume_from_snapshot_is_bit_identical(tiny_models, items, tmp_path):
    """Stop after step 2, keep the adapter and the step's snapshot, continue on a freshly loaded
    policy: steps 3-4 and the after-evaluation are those of the uninterrupted run, exactly."""
    cfg = TTRVConfig(model="x", max_steps=4, **SMALL)
    path = str(tiny_models["qwen2_5_vl"])
    full = list(adapt(cfg, load_policy(path, "fp32", "cpu", seed=cfg.seed), items, evaluate_before=False))
    policy = load_policy(path, "fp32", "cpu", seed=cfg.seed)
    for ev in adapt(cfg, policy, items, evaluate_before=False):
        if isinstance(ev, StepEvent) and ev.step == 2:
            state = ev.snapshot()
            save_adapter(policy, str(tmp_path / "adapter"))
            break
    resumed = load_policy(path, "fp32", "cpu", seed=cfg.seed, adapter=str(tmp_path / "adapter"))
    rest = list(adapt(cfg, resumed, items, resume=Resume(state)))
    assert rest[0].resumed_from == 2
    assert [untimed(e) for e in rest if isinstance(e, StepEvent)] == \
        [untimed(e) for e in full if isinstance(e, StepEvent)][2:]
    (after,) = [e for e in rest if isinstance(e, EvalResult)]
    assert after == [e for e in full if isinstance(e, EvalResult)][-1]
    assert rest[-1].summary == full[-1].summary
    assert all(e.snapshot is None for e in full if isinstance(e, StepEvent))  # stale state is not kept
