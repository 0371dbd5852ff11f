"""The engine loop on a tiny random model: event sequence, metrics, stop, single-example mode."""
import math

import pytest
import torch
from PIL import Image

from ttrv_core.config import TTRVConfig
from ttrv_core.events import EvalResult, Progress, RunEnd, RunStart, StepEvent
from ttrv_core.inputs.dataset import Item
from ttrv_core.method import engine
from ttrv_core.method import step as step_module
from ttrv_core.method.engine import Resume, adapt, train_schedule
from ttrv_core.method.grpo import answer_logprobs
from ttrv_core.model.loading import load_policy, save_adapter
from ttrv_core.tasks.answers import normalize_open

# A setup that trains: replies of one token, 8 votes, all 8 trained on. The tiny random model's replies
# then agree in part (its byte tokens decode alike), so the rewards differ within each group and the
# advantages are not 0 (with replies of 4 tokens and 6 votes all votes differed: nothing was trained).
# The seed is one where every update of these tests' runs has such a group (asserted where it matters).
SMALL = dict(n_votes=8, n_train=8, max_new_tokens=1, prompts_per_step=2, lr=1e-2, seed=1)


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


class Directions:
    """The step's updates, recorded (method/step.py: `gradient` per prompt, then `apply`, one update):
    the votes of each update's answers, read from their tokens here (as rollout decodes them,
    answers.normalize_open: the items are open questions), the advantages it was given, and how far it
    moved each answer's log-prob (summed over its tokens), by a forward before and after the update.
    The runs here take one prompt per update (prompts_per_update 0, the paper code's)."""

    def __init__(self, monkeypatch):
        self.votes, self.advantages, self.moves, pending = [], [], [], []
        real_gradient, real_apply = step_module.gradient, step_module.apply

        def gradient(policy, opt, prompt, tokens, mask, old, adv, **kw):
            eos = set(policy.eos_ids.tolist())
            rows = [[t for t, m in zip(r, ms) if m and t not in eos] for r, ms in zip(tokens.tolist(), mask.tolist())]
            texts = policy.tokenizer.batch_decode(rows, skip_special_tokens=True)
            self.votes.append([normalize_open(t) for t in texts])
            self.advantages.append(adv.clone())
            pending.append((policy, prompt, tokens, mask, kw["temperature"],
                            self.logprobs(policy, prompt, tokens, mask, kw["temperature"])))
            return real_gradient(policy, opt, prompt, tokens, mask, old, adv, **kw)

        def apply(opt, grad_clip):
            norm = real_apply(opt, grad_clip)
            assert len(pending) == 1, "one prompt per update"
            policy, prompt, tokens, mask, temperature, before = pending.pop()
            self.moves.append(self.logprobs(policy, prompt, tokens, mask, temperature) - before)
            return norm
        monkeypatch.setattr(step_module, "gradient", gradient)
        monkeypatch.setattr(step_module, "apply", apply)

    @staticmethod
    def logprobs(policy, prompt, tokens, mask, temperature):
        with torch.no_grad():
            return (answer_logprobs(policy, prompt, tokens, temperature) * mask).sum(1)

    def assert_trained_toward_the_reward(self):
        """Every update trained on votes that agree in part, and moved the policy the way the reward
        asks. All N votes are trained on (G = N), so the frequency reward (ttrv's, less a constant of the
        group) is each vote's count among them, and the first-order change a policy-gradient step makes
        raises the more common answers against the rarer: sum_i (count_i - mean count) * (change of
        log pi(o_i)) > 0. The engine's advantages order the answers as the counts do (a sign error
        between the scores and the update fails here; test_grpo_update.py: the sign per answer)."""
        assert self.advantages
        for votes, adv, moved in zip(self.votes, self.advantages, self.moves):
            counts = torch.tensor([votes.count(v) for v in votes], dtype=moved.dtype)
            centered = counts - counts.mean()
            assert centered.abs().max() > 0, f"all votes equal or all differ: nothing to learn ({votes})"
            assert torch.equal(torch.sign(adv), torch.sign(centered)), (votes, adv)
            assert float((centered * moved).sum()) > 0, (votes, moved)


def test_schedule_epochs_and_batches(items):
    cfg = TTRVConfig(prompts_per_step=2, epochs=2)
    steps = train_schedule(items, cfg)
    assert [len(s) for s in steps] == [2, 1, 2, 1]          # ceil(3/2) steps per epoch, 2 epochs
    assert sorted(i.id for s in steps[:2] for i in s) == sorted(i.id for i in items)
    assert len(train_schedule(items, cfg.with_(max_steps=5))) == 5


def test_run_events_and_update(tiny_models, items, monkeypatch):
    policy = load_policy(str(tiny_models["qwen2_5_vl"]), "fp32", "cpu", seed=SMALL["seed"])
    cfg = TTRVConfig(model="x", max_steps=2, **SMALL)
    before = lora_state(policy)
    directions = Directions(monkeypatch)
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
    # it trained: every step had a gradient, every update moved the policy the way its advantages ask,
    # and every lora_B, which starts at 0 where weight decay cannot move it, moved
    assert all(s.metrics["grad/norm"] > 0 for s in steps)
    assert len(directions.advantages) == 3                   # one update per prompt
    directions.assert_trained_toward_the_reward()
    assert all(torch.all(before[n] == 0) and not torch.equal(after[n], before[n]) for n in before if "lora_B" in n)
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


def test_resume_from_snapshot_is_bit_identical(tiny_models, items, tmp_path, monkeypatch):
    """Stop after step 2, keep the adapter and the step's snapshot, continue on a freshly loaded
    policy: steps 3-4, the adapter they leave and the after-evaluation are those of the uninterrupted
    run, exactly. Every update trains (the adapter moves from 0 by step 2, and again in steps 3-4), so
    a resumed optimizer, schedule or sampling stream that differed from the uninterrupted run's gives
    other steps and weights: leaving out _restore's optimizer, schedule or sampler line fails here
    (checked). Not its torch-RNG line: nothing in a CPU step draws from torch's global RNG; nor its
    guard line: the guard's state acts only when it fires (tests/test_resume.py keeps it)."""
    cfg = TTRVConfig(model="x", max_steps=4, **SMALL)
    path = str(tiny_models["qwen2_5_vl"])
    directions = Directions(monkeypatch)
    whole = load_policy(path, "fp32", "cpu", seed=cfg.seed)
    full = list(adapt(cfg, whole, items, evaluate_before=False))
    assert len(directions.advantages) == 6                    # 4 steps of 2, 1, 2, 1 prompts
    directions.assert_trained_toward_the_reward()              # every update trained, on a policy gradient
    policy = load_policy(path, "fp32", "cpu", seed=cfg.seed)
    for ev in adapt(cfg, policy, items, evaluate_before=False):
        if isinstance(ev, StepEvent) and ev.step == 2:
            state = ev.snapshot()
            save_adapter(policy, str(tmp_path / "adapter"))
            break
    at_2 = lora_state(policy)
    resumed = load_policy(path, "fp32", "cpu", seed=cfg.seed, adapter=str(tmp_path / "adapter"))
    assert all(torch.equal(w, at_2[n]) for n, w in lora_state(resumed).items())
    rest = list(adapt(cfg, resumed, items, resume=Resume(state)))
    assert rest[0].resumed_from == 2
    steps = [e for e in full if isinstance(e, StepEvent)]
    assert [untimed(e) for e in rest if isinstance(e, StepEvent)] == [untimed(e) for e in steps][2:]
    end, end_full = lora_state(resumed), lora_state(whole)
    assert all(not torch.all(w == 0) for n, w in at_2.items() if "lora_B" in n)          # trained by step 2
    assert all(not torch.equal(end_full[n], at_2[n]) for n in at_2 if "lora_B" in n)     # and in steps 3-4
    assert all(torch.equal(end[n], end_full[n]) for n in end_full)                     # bit for bit
    (after,) = [e for e in rest if isinstance(e, EvalResult)]
    assert after == [e for e in full if isinstance(e, EvalResult)][-1]
    assert rest[-1].summary == full[-1].summary
    assert all(e.snapshot is None for e in full if isinstance(e, StepEvent))  # stale state is not kept
