"""Evaluation of the current policy on items: greedy, majority of N, single@T.

Per item, one prefill serves N + 1 rows: row 0 decodes greedily, rows 1..N
sample at the run's temperature. Items go through in batches of
`cfg.eval_batch` (the first batch is one item, so that a live view has votes at
once): prompts of one shape are prefilled in one forward and the rows of every
item of the batch decode together (rollout.sample_many). Each item samples from
its own random stream, a generator seeded from (seed, item id), so an item's
votes do not depend on which items share its batch, on the batch size or on
its place in the set: batched and item-by-item evaluation give the same
answers (tests/test_batched_eval.py). Where the user gave an answer:
    greedy_acc  the greedy answer is correct
    maj_acc     the majority of the N samples is correct   (maj@N)
    single_acc  the share of the N samples that are correct (expected single-sample accuracy at T)
    valid_acc   the share of the valid samples that are correct (a reply with no valid
                answer counts as wrong in the three above, as in the authors' evaluation)
Open questions with a reference (tasks/similarity.py), scored on the greedy answer:
    open_exact  exact match after normalisation, over the references that are not yes/no
    open_f1     token F1 to the reference (answers.normalize_open's tokens)
    open_rouge1 ROUGE-1 of the raw greedy reply to the reference as given (VQA-Med's metric)
    closed_exact exact match over the yes/no references (closed questions: exact match only)
Read for content (content.py: the answer a reply names, valid or not), on the greedy reply:
    content_acc  the greedy reply names the reference (>= greedy_acc)
Label-free, always: top_answer_share, the largest share of items whose greedy reply names one and
the same answer (among those that name one); the share of items whose greedy reply is not a valid answer
(greedy_invalid) and of invalid samples (invalid, answers.is_valid); mean entropy of the votes (H / ln N; the paper's H / ln M as
eval/entropy_paper) and majority share.
"""
from __future__ import annotations

import hashlib
from contextlib import nullcontext
from statistics import mean
from typing import Iterator, Sequence

import torch

from ttrv_core.config import TTRVConfig
from ttrv_core.dist.fsdp import gathered
from ttrv_core.errors import explain_oom
from ttrv_core.events import ItemEval
from ttrv_core.inputs.dataset import Item
from ttrv_core.method.content import content_correct, named_answer, shares
from ttrv_core.method.rewards import vote_stats
from ttrv_core.model.policy import Policy
from ttrv_core.sampling.prompt_cache import Prompts
from ttrv_core.sampling.rollout import sample_many
from ttrv_core.tasks.answers import extract_answer, is_valid
from ttrv_core.tasks.similarity import rouge1, token_f1


def item_generator(device: torch.device, seed: int, item: Item) -> torch.Generator:
    """The item's own random stream: seeded from the run's evaluation seed and the item's id."""
    digest = hashlib.sha256(f"{seed}\0{item.id}".encode()).digest()
    return torch.Generator(device=device).manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def evaluate_batch(policy: Policy, items: Sequence[Item], cfg: TTRVConfig, seed: int,
                   prompts: Prompts | None = None) -> list[ItemEval]:
    """Evaluate items in one batch (one decode over the N + 1 rows of each). prompts: the run's
    encoded prompts (prompt_cache.Prompts), else each item's prepared here. An item the run cannot
    use (its file cannot be read now, its prompt is over the model's context) is left out: no ItemEval,
    and `prompts.problems` names it."""
    prepared = prompts or Prompts(policy, cfg.video_frames, budget=0, max_new_tokens=cfg.max_new_tokens)
    ready = [(it, p) for it in items if (p := prepared.get(it)) is not None]
    if not ready:
        return []
    gens = [item_generator(policy.device, seed, it) for it, _ in ready]
    n = cfg.votes_for_eval
    ros = sample_many(policy, [p for _, p in ready], n + 1, cfg.temperature, cfg.top_p,
                      cfg.max_new_tokens, gens, greedy_rows=1,
                      shared=cfg.shared_prefix and policy.family.shared_prefix, draw="cdf")
    return [_score(it, ro) for (it, _), ro in zip(ready, ros)]


def evaluate_item(policy: Policy, item: Item, cfg: TTRVConfig, seed: int) -> ItemEval:
    """One item alone: the same answers as in any batch."""
    return evaluate_batch(policy, [item], cfg, seed)[0]


def _score(item: Item, ro) -> ItemEval:
    greedy = extract_answer(item.task, ro.texts[0], item.options)
    votes = [extract_answer(item.task, t, item.options) for t in ro.texts[1:]]
    st = vote_stats(votes)
    ref = item.reference
    ev = ItemEval(item.id, greedy, ro.texts[0], st.majority, st.majority_share, st.entropy,
                  st.counts, ref, entropy_paper=st.entropy_paper)
    valid = [is_valid(item.task, v, item.options) for v in votes]
    ev.greedy_valid = is_valid(item.task, greedy, item.options)
    ev.named = named_answer(item.task, ro.texts[0], item.options)
    ev.invalid = 1 - sum(valid) / len(votes)
    if ref is not None:
        ev.greedy_correct = greedy == ref
        ev.content_correct = content_correct(item.task, ro.texts[0], ref, item.options, item.answer)
        ev.majority_correct = st.majority == ref
        ev.single_acc = st.counts.get(ref, 0) / len(votes)
        if any(valid):
            ev.valid_acc = sum(v == ref for v, ok in zip(votes, valid) if ok) / sum(valid)
        if item.task == "open":
            ev.closed = ref in CLOSED
            if not ev.closed:
                ev.f1, ev.rouge1 = token_f1(greedy, ref), rouge1(ro.texts[0], item.answer)
    return ev


def evaluate(policy: Policy, items: Sequence[Item], cfg: TTRVConfig, seed: int,
             prompts: Prompts | None = None) -> Iterator[ItemEval]:
    """Yields one ItemEval per item the run can use (evaluate_batch), in order, computed
    `cfg.eval_batch` items at a time (the first item alone, so that its votes show at once). Same
    seed -> same answers, whatever the batch size.
    Out of memory in a batch of several items: fewer items per batch from then on (the same answers:
    each item has its own stream); in one item alone: OutOfMemory, with what to lower. An adapter
    that adds nothing (a fresh one: lora_B = 0) is switched off, which skips the LoRA products.
    prompts: the run's encoded prompts (the engine's, kept from one phase to the next)."""
    size, i = max(1, cfg.eval_batch), 0
    base = policy.adapter_off if _adapter_is_zero(policy) else nullcontext
    while i < len(items):
        chunk = items[i:i + (size if i else 1)]
        with explain_oom("evaluating", n_votes=cfg.votes_for_eval, max_pixels=policy.max_pixels,
                         precision=policy.precision):
            try:
                with base():
                    evs = evaluate_batch(policy, chunk, cfg, seed, prompts)
            except torch.OutOfMemoryError:
                if len(chunk) == 1:
                    raise
                size = (len(chunk) + 1) // 2
                if prompts is not None:
                    prompts.clear()
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                continue
        i += len(chunk)
        yield from evs


def _adapter_is_zero(policy: Policy) -> bool:
    """True for an adapter that adds nothing: every lora_B is 0 (a fresh one, before training), so
    x A^T B^T = 0 and the base model alone gives the same logits without the LoRA products."""
    b = [gathered(p.detach()) for n, p in policy.model.named_parameters() if "lora_B" in n]  # FSDP: whole
    return bool(b) and not any(bool(p.any()) for p in b)


def summarize(evals: Sequence[ItemEval]) -> dict[str, float]:
    """eval/* metrics over items; accuracies over the items that have answers."""
    if not evals:
        return {}
    m = {"eval/entropy": mean(e.entropy for e in evals),
         "eval/entropy_paper": mean(e.entropy_paper for e in evals),
         "eval/majority_share": mean(e.majority_share for e in evals),
         "eval/greedy_invalid": mean(float(not e.greedy_valid) for e in evals),
         "eval/invalid": mean(e.invalid for e in evals),
         "eval/top_answer_share": max(shares([e.named for e in evals]).values(), default=0.0),
         "eval/items": float(len(evals))}
    labeled = [e for e in evals if e.reference is not None]
    if labeled:
        m["eval/greedy_acc"] = mean(float(e.greedy_correct) for e in labeled)
        m["eval/content_acc"] = mean(float(bool(e.content_correct)) for e in labeled)
        m["eval/maj_acc"] = mean(float(e.majority_correct) for e in labeled)
        m["eval/single_acc"] = mean(e.single_acc for e in labeled)
        valid = [e.valid_acc for e in labeled if e.valid_acc is not None]
        if valid:
            m["eval/valid_acc"] = mean(valid)
        m["eval/labeled"] = float(len(labeled))
    return m | _open_metrics(labeled)


CLOSED = ("yes", "no")
"""References of closed questions (after normalisation): scored by exact match only."""


def _open_metrics(labeled: Sequence[ItemEval]) -> dict[str, float]:
    """eval/open_* over the open questions' references that are not yes/no, eval/closed_* over those that are."""
    m: dict[str, float] = {}
    if opened := [e for e in labeled if e.closed is False]:
        m |= {"eval/open_exact": mean(float(e.greedy_correct) for e in opened),
              "eval/open_f1": mean(e.f1 for e in opened), "eval/open_rouge1": mean(e.rouge1 for e in opened),
              "eval/open_items": float(len(opened))}
    if closed := [e for e in labeled if e.closed]:
        m |= {"eval/closed_exact": mean(float(e.greedy_correct) for e in closed),
              "eval/closed_items": float(len(closed))}
    return m
