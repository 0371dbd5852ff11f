"""A step's prompts scored: votes, rewards over all N, advantages of the first G (`Group`),
and the step's metrics over its groups and updates (`step_metrics`). Label-free: an item's
reference is only ever reported (acc/*), never rewarded.
"""
from __future__ import annotations

from dataclasses import dataclass
from statistics import mean

import torch

from .config import TTRVConfig
from .data import Item
from .events import ItemVotes
from .grpo import UpdateStats, group_advantages
from .prompts import extract_answer, is_valid
from .rewards import compute_rewards, vote_stats
from .rollout import Prompt, Rollout


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


def score(item: Item, prompt: Prompt, rollout: Rollout, cfg: TTRVConfig) -> Group:
    """Votes, rewards over all N, and advantages of the first G: label-free."""
    votes = [extract_answer(item.task, t, item.options) for t in rollout.texts]
    rewards, _ = compute_rewards(cfg.reward, votes, cfg.alpha)
    train = rollout.take(cfg.n_train)
    adv = group_advantages(torch.tensor(rewards[:cfg.n_train], device=train.tokens.device), cfg.adv_eps)
    st = vote_stats(votes)
    ref = item.reference
    stats = ItemVotes(item.id, st.counts, st.majority, st.majority_share, st.entropy, mean(rewards),
                      None if ref is None else st.majority == ref, entropy_paper=st.entropy_paper,
                      invalid=1 - mean(float(is_valid(item.task, v, item.options)) for v in votes))
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
