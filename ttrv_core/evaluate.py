"""Evaluation of the current policy on items: greedy, majority of N, single@T.

Per item, one prefill serves N + 1 rows: row 0 decodes greedily, rows 1..N
sample at the run's temperature. Where the user gave an answer:
    greedy_acc  the greedy answer is correct
    maj_acc     the majority of the N samples is correct   (maj@N)
    single_acc  the share of the N samples that are correct (expected single-sample accuracy at T)
    valid_acc   the share of the valid samples that are correct (a reply with no valid
                answer counts as wrong in the three above, as in the authors' evaluation)
Label-free, always: the share of items whose greedy reply is not a valid answer
(greedy_invalid) and of invalid samples (invalid, prompts.is_valid); mean entropy of the votes (H / ln N; the paper's H / ln M as
eval/entropy_paper) and majority share.
"""
from __future__ import annotations

from statistics import mean
from typing import Iterator, Sequence

import torch

from .config import TTRVConfig
from .data import Item
from .errors import explain_oom
from .events import ItemEval
from .models import Policy
from .prompts import extract_answer, is_valid
from .rewards import vote_stats
from .rollout import prepare_prompt, sample


def evaluate_item(policy: Policy, item: Item, cfg: TTRVConfig, generator: torch.Generator) -> ItemEval:
    prompt = prepare_prompt(policy, item.image(), item.prompt)
    n = cfg.votes_for_eval
    ro = sample(policy, prompt, n + 1, cfg.temperature, cfg.top_p, cfg.max_new_tokens, generator,
                greedy_rows=1, shared=cfg.shared_prefix and policy.family.shared_prefix)
    greedy = extract_answer(item.task, ro.texts[0], item.options)
    votes = [extract_answer(item.task, t, item.options) for t in ro.texts[1:]]
    st = vote_stats(votes)
    ref = item.reference
    ev = ItemEval(item.id, greedy, ro.texts[0], st.majority, st.majority_share, st.entropy,
                  st.counts, ref, entropy_paper=st.entropy_paper)
    valid = [is_valid(item.task, v, item.options) for v in votes]
    ev.greedy_valid = is_valid(item.task, greedy, item.options)
    ev.invalid = 1 - sum(valid) / len(votes)
    if ref is not None:
        ev.greedy_correct = greedy == ref
        ev.majority_correct = st.majority == ref
        ev.single_acc = st.counts.get(ref, 0) / len(votes)
        if any(valid):
            ev.valid_acc = sum(v == ref for v, ok in zip(votes, valid) if ok) / sum(valid)
    return ev


def evaluate(policy: Policy, items: Sequence[Item], cfg: TTRVConfig, seed: int) -> Iterator[ItemEval]:
    """Yields one ItemEval per item, in order. Same seed -> same random stream."""
    gen = torch.Generator(device=policy.device).manual_seed(seed)
    for item in items:
        with explain_oom("evaluating", n_votes=cfg.votes_for_eval, max_pixels=policy.max_pixels,
                         precision=policy.precision):
            ev = evaluate_item(policy, item, cfg, gen)
        yield ev


def summarize(evals: Sequence[ItemEval]) -> dict[str, float]:
    """eval/* metrics over items; accuracies over the items that have answers."""
    if not evals:
        return {}
    m = {"eval/entropy": mean(e.entropy for e in evals),
         "eval/entropy_paper": mean(e.entropy_paper for e in evals),
         "eval/majority_share": mean(e.majority_share for e in evals),
         "eval/greedy_invalid": mean(float(not e.greedy_valid) for e in evals),
         "eval/invalid": mean(e.invalid for e in evals),
         "eval/items": float(len(evals))}
    labeled = [e for e in evals if e.reference is not None]
    if labeled:
        m["eval/greedy_acc"] = mean(float(e.greedy_correct) for e in labeled)
        m["eval/maj_acc"] = mean(float(e.majority_correct) for e in labeled)
        m["eval/single_acc"] = mean(e.single_acc for e in labeled)
        valid = [e.valid_acc for e in labeled if e.valid_acc is not None]
        if valid:
            m["eval/valid_acc"] = mean(valid)
        m["eval/labeled"] = float(len(labeled))
    return m
