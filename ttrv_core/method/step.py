"""A step's prompts scored: votes, rewards over all N, advantages of the first G (`Group`),
and the step's metrics over its groups and updates (`step_metrics`). Label-free: an item's
reference is only ever reported (acc/*), never rewarded.

`train_step`: one TTRV step, whose updates take k = config.prompts_per_update prompts each (the last
may hold fewer), on K processes (dist/parallel.py) or one. k = 0 is the paper code's: one update per
prompt, the step's prompts sampled in turn from the run's one generator (one process). For an update
with prompts P (k >= 1):

    rank r samples and scores P[r::K], each prompt from its own generator, seeded from
        (seed, step, the prompt's place in the step)        -> the same answers for any K
    g_r = sum over its prompts p of grad L_p                  L_p: p's GRPO loss (grpo.py)
    g   = all_reduce_sum(g_r) / |P|                           the MEAN over the update's prompts
    clip ||g|| to grad_clip, one AdamW step                   the same on every rank

Under FSDP (dist/fsdp.py, shard_policy) the all-reduce is FSDP's reduce-scatter at each backward, and
a rank with one prompt fewer in an update samples and back-propagates a stand-in weighted 0.
So K processes and one with the same k compute the same updates; only the order of the gradient
sum may differ (fp32 rounding; tests/test_parallel.py measures it). pi_old of each prompt comes
before the step's first update, for any k. The votes and update statistics are gathered
to every rank, so that every rank's collapse guard and events agree.
"""
from __future__ import annotations

import copy
import hashlib
import time
from dataclasses import dataclass
from statistics import mean
from typing import Callable, Sequence

import torch

from ttrv_core.config import TTRVConfig
from ttrv_core.dist.fsdp import gathered, stand_ins
from ttrv_core.dist.parallel import all_gather, all_reduce_, shard, stage
from ttrv_core.events import ItemVotes, StepEvent
from ttrv_core.inputs.dataset import Item
from ttrv_core.method.content import answer_count
from ttrv_core.method.grpo import STAT_NAMES, UpdateStats, apply, gradient, group_advantages, old_logprobs
from ttrv_core.method.rewards import answer_prior, compute_rewards, vote_stats
from ttrv_core.model.policy import Policy
from ttrv_core.sampling.prompt import Prompt
from ttrv_core.sampling.prompt_cache import Prompts
from ttrv_core.sampling.rollout import Rollout, sample
from ttrv_core.tasks.answers import extract_answer, is_valid


@dataclass
class Group:
    """One prompt of a step, scored: its N answers, their votes and rewards, and the G trained on."""
    item: Item
    prompt: Prompt
    votes: list[str]            # (N,) the answers extracted from the N sampled replies
    rewards: list[float]        # (N,) computed over all N votes, never from the item's reference
    train: Rollout              # the first G answers: what the update trains on
    advantages: torch.Tensor    # (G,) their z-scored rewards
    stats: ItemVotes            # the votes as the step event reports them

    @property
    def single_acc(self) -> float | None:
        """Share of the N votes that match the reference (None: no reference); reported, never trained on."""
        ref = self.item.reference
        return None if ref is None else self.stats.counts.get(ref, 0) / len(self.votes)


def valid_votes(item: Item, rollout: Rollout) -> list[str]:
    """The votes of a prompt's N replies that are valid answers (answers.is_valid)."""
    votes = (extract_answer(item.task, t, item.options) for t in rollout.texts)
    return [v for v in votes if is_valid(item.task, v, item.options)]


def step_prior(cfg: TTRVConfig, items: Sequence[Item], valid: Sequence[str]) -> dict[str, float] | None:
    """The answer prior of a step for the calibrated reward, over the valid votes of all its prompts
    (rewards.answer_prior; K from the step's items); None for the other rewards. A step of one image
    (single-example mode: copies of it) has no prior apart from that image's own votes, which would
    cancel its frequency: its prior is uniform, 1/K."""
    if cfg.reward != "calibrated":
        return None
    return answer_prior(valid if len({it.id for it in items}) > 1 else [], answer_count(items))


def score(item: Item, prompt: Prompt, rollout: Rollout, cfg: TTRVConfig,
          prior: dict[str, float] | None = None) -> Group:
    """Votes, rewards over all N, and advantages of the first G: label-free. prior: the step's
    answer prior (step_prior), for the calibrated reward."""
    votes = [extract_answer(item.task, t, item.options) for t in rollout.texts]
    valid = [is_valid(item.task, v, item.options) for v in votes]
    rewards, _ = compute_rewards(cfg.reward, votes, cfg.alpha, valid=valid, prior=prior, lam=cfg.prior_weight)
    train = rollout.take(cfg.n_train)
    adv = group_advantages(torch.tensor(rewards[:cfg.n_train], device=train.tokens.device), cfg.adv_eps)
    st = vote_stats(votes)
    if st.majority_share < cfg.consensus:  # a weak majority is no pseudo-label: nothing to learn here
        adv = torch.zeros_like(adv)
    ref = item.reference
    stats = ItemVotes(item.id, st.counts, st.majority, st.majority_share, st.entropy, mean(rewards),
                      None if ref is None else st.majority == ref, entropy_paper=st.entropy_paper,
                      invalid=1 - mean(map(float, valid)))
    return Group(item, prompt, votes, rewards, train, adv, stats)


def step_metrics(groups: list[Group], ups: list[UpdateStats], opt, times: tuple[float, float, float]) -> dict:
    """The step's metrics, namespaced (events.py). times: (start, sampled and scored, updated)."""
    t0, t1, t2 = times
    ivs = [g.stats for g in groups]
    all_r = [r for g in groups for r in g.rewards]
    m = {
        "reward/mean": mean(all_r),
        "reward/std": float(torch.tensor(all_r).std()) if len(all_r) > 1 else 0.0,
        "answers/entropy": mean(iv.entropy for iv in ivs),
        "answers/entropy_paper": mean(iv.entropy_paper for iv in ivs),
        "answers/majority_share": mean(iv.majority_share for iv in ivs),
        "answers/invalid": mean(iv.invalid for iv in ivs),
        "answers/distinct": mean(len(iv.counts) for iv in ivs),
        "loss/total": mean(u.loss for u in ups),
        "loss/pg": mean(u.pg for u in ups),
        "loss/kl": mean(u.kl for u in ups),
        "loss/clip_frac": mean(u.clip_frac for u in ups),
        "loss/ratio": mean(u.ratio_mean for u in ups),
        "grad/norm": mean(u.grad_norm for u in ups),
        "lr": opt.param_groups[0]["lr"],
        "time/sample_s": t1 - t0,
        "time/train_s": t2 - t1,
        "time/step_s": t2 - t0,
    }
    labeled = [g for g in groups if g.item.reference is not None]
    if labeled:
        m["acc/majority"] = mean(float(g.stats.majority_correct) for g in labeled)
        m["acc/single"] = mean(g.single_acc for g in labeled)
    return m


class Undo:
    """What a step changes, kept before it so that a stop (or a failure) can undo it whole: the trained
    weights and the optimizer's per-weight state (AdamW: exp_avg, exp_avg_sq, step), restored bit for
    bit by `undo()`, state the step created dropped. The learning rates are the scheduler's, which
    only moves after a completed step. Costs one copy of the adapter and of its moments a step."""

    def __init__(self, opt: torch.optim.Optimizer):
        self.opt = opt
        self.params = [p for group in opt.param_groups for p in group["params"]]
        self.weights = [p.detach().clone() for p in self.params]
        self.state = {p: {k: v.clone() if torch.is_tensor(v) else copy.deepcopy(v) for k, v in st.items()}
                      for p in self.params if (st := opt.state.get(p))}

    def undo(self) -> None:
        with torch.no_grad():
            for p, w in zip(self.params, self.weights):
                p.copy_(w)
        for p in self.params:
            if p in self.state:
                self.opt.state[p] = self.state[p]
            else:
                self.opt.state.pop(p, None)


def prompt_generator(device: torch.device, seed: int, step: int, index: int) -> torch.Generator:
    """The random stream of the prompt at `index` in `step`: the same on whichever rank samples it."""
    digest = hashlib.sha256(f"{seed}\0train\0{step}\0{index}".encode()).digest()
    return torch.Generator(device=device).manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def train_step(step: int, total: int, batch: list[Item], policy: Policy, opt, cfg: TTRVConfig,
               should_stop: Callable[[], bool] = lambda: False, prompts: Prompts | None = None,
               gen: torch.Generator | None = None) -> StepEvent | None:
    """One TTRV step over `batch` (module docstring): sample, score, then its updates of k =
    cfg.prompts_per_update prompts each, this rank's share of each. k = 0 is the paper code's one update
    per prompt with the step's prompts sampled in turn from `gen`, the run's one random stream; k >= 1
    samples each prompt from its own stream (prompt_generator). prompts: the run's encoded prompts
    (engine.adapt's), else each prepared here.
    None when a stop came before the step's last update; the step is then undone (Undo), as it is when
    anything fails during its updates (another rank ended: parallel.RankFailure; out of memory)."""
    t0 = time.time()
    prompts = prompts or Prompts(policy, cfg.video_frames, budget=0, max_new_tokens=cfg.max_new_tokens)
    shared = cfg.shared_prefix and policy.family.shared_prefix
    k = cfg.prompts_per_update or 1
    updates = [range(i, min(i + k, len(batch))) for i in range(0, len(batch), k)]   # prompt indices
    # FSDP (policy.lockstep): a rank one prompt short in an update runs a stand-in, the update's first
    # prompt, whose loss is weighted 0 (key -1 - n): every rank runs as many forwards and backwards
    share = [shard(u) + [-1 - n] * (stand_ins(len(u), len(shard(u))) if policy.lockstep else 0)
             for n, u in enumerate(updates)]   # this rank's prompts of each update
    stage(f"sample step {step}")
    sampled: dict[int, tuple[Item, Prompt, Rollout]] = {}
    for n, i in ((n, i) for n, m in enumerate(share) for i in m):
        if should_stop():  # nothing updated yet
            return None
        j = i if i >= 0 else updates[n][0]
        prompt = prompts(batch[j])
        stream = prompt_generator(policy.device, cfg.seed, step, j) if cfg.prompts_per_update else gen
        sampled[i] = (batch[j], prompt, sample(policy, prompt, cfg.n_votes, cfg.temperature, cfg.top_p,
                                               cfg.max_new_tokens, stream, shared=shared))
    policy.decoders.end_sampling()  # the static decoder kept through the updates where memory allows
    prior = None
    if cfg.reward == "calibrated":  # over the step's prompts on every rank (not the stand-ins)
        mine = [v for i, (it, _, ro) in sampled.items() if i >= 0 for v in valid_votes(it, ro)]
        prior = step_prior(cfg, batch, [v for part in all_gather(mine, f"the answer prior of step {step}")
                                        for v in part])
    groups = {i: score(it, prompt, ro, cfg, prior) for i, (it, prompt, ro) in sampled.items()}
    t1 = time.time()
    stage(f"update step {step}")
    # pi_old of every prompt before the step's first update, with the training forward's numerics (verl)
    olds = {i: old_logprobs(policy, g.prompt, g.train.tokens, g.train.mask, cfg.temperature, shared)
            if cfg.recompute_old_logprobs else g.train.logprobs for i, g in groups.items()}
    params = [p for group in opt.param_groups for p in group["params"]]
    kept = Undo(opt)  # the weights and the optimizer's state before the step, to undo it
    sums, norms, stopped, done = {}, {}, False, False
    try:
        for n, u in enumerate(updates, 1):
            if stopped := should_stop():
                break
            acc = [torch.zeros_like(p) for p in params]   # this rank's sum of its prompts' gradients
            reached = [False] * len(params)               # which weights the loss reaches
            for i in share[n - 1]:
                g = groups[i]
                sums[i] = gradient(policy, opt, g.prompt, g.train.tokens, g.train.mask, olds[i], g.advantages,
                                   temperature=cfg.temperature, eps_clip=cfg.eps_clip, dual_clip=cfg.dual_clip,
                                   beta=cfg.beta, shared=shared, scale=float(i >= 0))
                for w, (a, p) in enumerate(zip(acc, params)):
                    if p.grad is not None:
                        a += p.grad   # FSDP: the sum over the ranks' prompts of this backward already
                        reached[w] = True
            all_reduce_(acc, f"all-reduce of update {n} in step {step}")
            for a, p, has in zip(acc, params, reached):
                p.grad = a.div_(len(u)) if has else None  # the mean over the update's prompts
            norm = apply(opt, cfg.grad_clip)
            norms.update((i, norm) for i in shard(u))
        for i in [i for i in groups if i < 0]:   # the stand-ins' results are dropped
            del groups[i]
        if not stopped:
            stage(f"gather step {step}")
            mine = [(i, groups[i].votes, groups[i].rewards, groups[i].stats,
                     UpdateStats(grad_norm=float(gathered(norms[i])), **dict(zip(STAT_NAMES, sums[i].tolist()))))
                    for i in groups]
            got = sorted((x for part in all_gather(mine, f"gathering step {step}") for x in part),
                         key=lambda x: x[0])
            done = True
    finally:  # a stop, or a failure: undo the step
        if not done:
            kept.undo()
    if stopped:
        return None
    everyone = [Group(batch[i], None, votes, rewards, None, None, st) for i, votes, rewards, st, _ in got]
    ups = [u for *_, u in got]
    stage(f"after step {step}")  # the guard, the checkpoint (rank 0)
    metrics = step_metrics(everyone, ups, opt, (t0, t1, time.time()))
    metrics["memory/kept_decoder_mib"] = policy.decoders.kept_bytes / 2**20
    return StepEvent(step, total, [g.stats for g in everyone], metrics)
