"""The TTRV loop (`adapt`), as a generator of typed events.

    evaluate(before) -> for each step:
        take `prompts_per_step` unlabeled items (epochs over a seeded shuffle)
        sample: N answers for each item (sampling/rollout.py; decode.Decoders.end_sampling after)
        score:  votes, rewards over all N, advantages of the first G (a `Group` per item)
        update: one GRPO update per item on its G answers (grpo.py), or per k items
                (prompts_per_update, step.train_step; on K processes too: dist/parallel.py)
        yield StepEvent
    -> evaluate(after) -> RunEnd

By default the loop adapts on a seeded random subset of `train_items` items
(the paper's main setting: 2 epochs over 20 unlabeled test samples; `train_first`: the
first ones) and evaluates on all of them (or adapts on `train_on`, items of another split). Answers the user supplied are used for evaluation
and per-step accuracy only; rewards never see them. Single-example mode trains on one chosen item
repeated `single_copies` times and evaluates on all items (paper section 5).

A stop takes effect within one prompt, in every phase (in an evaluation, which
works `eval_batch` images at a time, within one batch: it is seen after each
image, and the batch's later images are dropped). `should_stop()` returns
how many stops were asked for (True counts as one):
  - during the before-evaluation, a stop ends the run: nothing is trained and
    nothing evaluated after (the evaluation so far is yielded, partial);
  - during training, a stop ends training before the next prompt; a step cut
    short is undone (its LoRA weights and AdamW's moments and step restored;
    no event), so the adapter and the optimizer hold the completed steps
    (tests/test_stop.py). The after-evaluation still runs, so that the
    comparison exists (unless no step ran), until a further stop is asked for;
  - an evaluation cut short yields an EvalResult over the items it reached
    (`eval/items` says how many), and RunEnd.stopped is True.
The collapse guard (guard.py, on by default) may end
training early and roll the adapter back; RunEnd.guard says so.

One bad file never ends a run: an item whose prompt cannot be prepared when the run reads it
(its file changed since the data check, or its prompt is over the model's context:
sampling/prompt_cache.py) is left out of every phase from then on (an evaluation has no ItemEval for it,
a step trains on its other items; a step left with none is skipped), and RunEnd.problems names it.

Each StepEvent carries `snapshot()`, the TrainState right after that step
(optimizer, LR schedule, the sampling generator, torch's RNG, the guard), so
that runs/checkpoint.py can checkpoint it; the engine itself writes nothing. `adapt(...,
resume=Resume(state, before))` continues after `state.step` on a policy that
already holds that step's LoRA weights: the schedule of items is recomputed
from the seed, the rest is restored, and on CPU the continued run is
bit-identical to one that was never interrupted.
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, replace
from functools import partial
from typing import Callable, Iterator, Sequence

import torch
from torch.optim.lr_scheduler import LambdaLR

from ttrv_core.config import TTRVConfig
from ttrv_core.dist import fsdp, parallel
from ttrv_core.errors import explain_oom
from ttrv_core.events import EvalResult, Event, Progress, RunEnd, RunStart
from ttrv_core.inputs.dataset import Item
from ttrv_core.method.content import run_summary
from ttrv_core.method.evaluate import evaluate, summarize
from ttrv_core.method.guard import CollapseGuard, concentration
from ttrv_core.method.step import train_step
from ttrv_core.model.gradient_checkpointing import set_recompute
from ttrv_core.model.policy import Policy
from ttrv_core.sampling.prompt_cache import Prompts


@dataclass
class TrainState:
    """What continuing after `step` needs besides the LoRA weights (those are the adapter).
    Plain tensors, dicts and lists only, so `torch.load(weights_only=True)` reads it back.
    From `StepEvent.snapshot()` the optimizer tensors are the live ones: save them before
    the engine goes on."""
    step: int
    optimizer: dict                                   # AdamW state_dict
    scheduler: dict                                   # LR schedule state_dict
    sampler_rng: torch.Tensor                         # state of the sampling torch.Generator
    torch_rng: torch.Tensor                           # torch's global CPU RNG
    guard: dict | None = None                         # CollapseGuard.state_dict()
    guard_kept: list[tuple[int, dict[str, torch.Tensor]]] | None = None   # CollapseGuard.kept


@dataclass
class Resume:
    """Where a resumed run picks up: the state after a step and the run's before-evaluation."""
    state: TrainState
    before: EvalResult | None = None


def train_schedule(items: Sequence[Item], cfg: TTRVConfig) -> list[list[Item]]:
    """The items of each step: epochs over a seeded shuffle, in batches of
    `prompts_per_step` (the last batch of an epoch may be smaller)."""
    rng = random.Random(cfg.seed)
    k = min(cfg.prompts_per_step, len(items))
    n_steps = cfg.total_steps(len(items))
    steps: list[list[Item]] = []
    while len(steps) < n_steps:
        order = list(items)
        rng.shuffle(order)
        steps += [order[i:i + k] for i in range(0, len(order), k)]
    return steps[:n_steps]


def cosine_schedule(opt: torch.optim.Optimizer, warmup: int, total: int) -> LambdaLR:
    """The learning rate: linear warm-up over `warmup` steps, then half a cosine to 0 at `total`:
    transformers' get_cosine_schedule_with_warmup, the same numbers and state_dict, written here so
    that importing the engine does not import transformers' trainer and with it peft."""
    return LambdaLR(opt, partial(_cosine, warmup=warmup, total=total))


def _cosine(step: int, *, warmup: int, total: int) -> float:
    if step < warmup:
        return float(step) / float(max(1, warmup))
    progress = float(step - warmup) / float(max(1, total - warmup))
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))   # transformers: pi * 0.5 cycles * 2, exact


def adapt(cfg: TTRVConfig, policy: Policy, items: Sequence[Item], single: str | None = None,
        should_stop: Callable[[], bool] = lambda: False, evaluate_before: bool = True,
        resume: Resume | None = None, before: EvalResult | None = None,
        train_on: Sequence[Item] | None = None) -> Iterator[Event]:
    """Adapt `policy` on `items` (or on the one item with id `single`), yielding events.

    resume: continue an interrupted run after `resume.state.step` (no before-evaluation;
    `resume.before` stands for it). The policy must hold that step's weights.
    train_on: the items adapted on (train_items of them) when they are not `items`, which are evaluated:
    the paper adapts on a subset of the split it evaluates; --eval-split evaluates on another split.
    before: a complete before-evaluation of these items by this base model with these evaluation
    settings (app/kept_runs.depends), from an earlier run (the app keeps its last one): yielded as this
    run's, marked reused, instead of evaluating again."""
    t_run = time.time()
    if not items:
        raise ValueError("no items to adapt on")
    if single is not None:
        chosen = [it for it in items if it.id == single]
        if not chosen:
            raise ValueError(f"single-example item '{single}' is not among the items")
        train_items = chosen * cfg.single_copies
    else:
        train_items = list(items if train_on is None else train_on)
        if 0 < cfg.train_items < len(train_items):
            n = cfg.train_items
            train_items = train_items[:n] if cfg.train_first else random.Random(cfg.seed).sample(train_items, n)
    schedule = train_schedule(train_items, cfg)
    train_ids = {i.id for i in train_items}
    start = resume.state.step if resume else 0
    if parallel.size() > 1 and not cfg.prompts_per_update:
        raise ValueError(f"{parallel.size()} processes: set prompts_per_update (--prompts-per-update), e.g. to "
                         f"{parallel.size()}; 0 (one update per prompt from one random stream) runs on one process")
    if start > len(schedule):
        raise ValueError(f"cannot resume after step {start}: the run has {len(schedule)} steps")
    phases = ["before"] * (evaluate_before and not resume) + ["train", "after"]
    # each item's encoded prompt, prepared once for the whole run; an item it cannot use is left out, named
    prompts = Prompts(policy, cfg.video_frames, max_new_tokens=cfg.max_new_tokens)
    yield RunStart(config=cfg.to_dict(), n_items=len(items), train_ids=sorted(train_ids),
                   total_steps=len(schedule), mode="single" if single else "all", resumed_from=start, phases=phases)

    if resume:
        before = resume.before
    elif before is not None and evaluate_before:
        if [e.item_id for e in before.items] != [it.id for it in items]:
            raise ValueError("the before-evaluation given is not of these items")
        before = replace(before, reused=True)
        yield before
    else:
        before = (yield from _evaluate_phase("before", policy, items, cfg, prompts, should_stop)) \
            if evaluate_before else None
    if should_stop() and not resume:  # stopped before training: nothing to train or to evaluate again
        yield RunEnd(stopped=True, seconds=time.time() - t_run, summary=_summary(before, None),
                     problems=[str(p) for p in prompts.problems])
        return

    torch.manual_seed(cfg.seed)
    set_recompute(policy, cfg.gradient_checkpointing)
    params = [p for p in policy.model.parameters() if p.requires_grad]
    parallel.broadcast_(params, "sharing the adapter")  # K processes start from rank 0's weights
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = cosine_schedule(opt, int(cfg.warmup_ratio * len(schedule)), len(schedule))
    gen = torch.Generator(device=policy.device).manual_seed(cfg.seed)
    # label-free baseline: how concentrated the adapted items' majority answers were before training
    baseline = concentration([e.majority for e in before.items if e.item_id in train_ids]) if before else None
    # K for the guard's chance level: the fewest options among the adapted items (0: open answers)
    n_answers = min((len(i.options) for i in train_items if i.task != "open"), default=0)
    guard = CollapseGuard(baseline=baseline, n_answers=n_answers) if cfg.collapse_guard else None
    if resume:
        _restore(resume.state, opt, sched, gen, guard, dict(policy.model.named_parameters()))
    elif guard:
        guard.keep(0, policy.model)
    stopped, done = False, start
    for step, batch in enumerate(schedule[start:], start + 1):
        if guard and guard.fired_at:  # resumed after the step where the guard fired
            break
        if should_stop():
            stopped = True
            break
        batch = [it for it in batch if prompts.get(it) is not None]   # items left out (named) do not train
        if not batch:  # none of the step's items can be used: nothing to train on, its learning rate passes
            sched.step()
            continue
        with explain_oom(f"TTRV step {step}", n_votes=cfg.n_votes, n_train=cfg.n_train,
                         checkpointing=cfg.gradient_checkpointing,
                         max_pixels=policy.max_pixels, precision=policy.precision):
            ev = train_step(step, len(schedule), batch, policy, opt, cfg, should_stop, prompts, gen)
        if ev is None:  # a stop within the step, which was undone
            stopped = True
            break
        sched.step()
        done = step
        if guard:
            ev.metrics["guard/concentration"] = guard.check(step, {iv.item_id: iv.majority for iv in ev.items},
                                                            policy.model)
        ev.snapshot = partial(_snapshot, step, opt, sched, gen, guard)
        if policy.lockstep:  # FSDP: the full weights and state, gathered on every rank (rank 0 writes them)
            policy.gathered = fsdp.gathered({n: p.detach() for n, p in policy.model.named_parameters()
                                                 if p.requires_grad})
            snap = _gathered(ev.snapshot())
            ev.snapshot = lambda: snap
        yield ev
        ev.snapshot = None  # the live state has moved on
        if guard and guard.fired_at:
            break

    # a stop before the first step leaves the model as it was: nothing to evaluate again.
    # The stop that ended training does not end this evaluation; a further one does.
    seen = int(should_stop()) if stopped else 0
    after = (yield from _evaluate_phase("after", policy, items, cfg, prompts, lambda: int(should_stop()) > seen)) \
        if done else None
    usable = sum(not prompts.dropped(it) for it in items)
    stopped = stopped or bool(done) and (after is None or len(after.items) < usable)
    summary = _summary(before, after) | run_summary(items, before, after)
    if guard and guard.fired_at:
        summary["guard/fired_step"] = float(guard.fired_at)
    yield RunEnd(stopped=stopped, seconds=time.time() - t_run, summary=summary,
                 guard=guard.message() if guard else None, problems=[str(p) for p in prompts.problems])


def _summary(before: EvalResult | None, after: EvalResult | None) -> dict[str, float]:
    return {f"{r.phase}/{k[5:]}": v for r in (before, after) if r for k, v in r.metrics.items()}


def _snapshot(step: int, opt, sched, gen: torch.Generator, guard: CollapseGuard | None) -> TrainState:
    return TrainState(step, opt.state_dict(), sched.state_dict(), gen.get_state(), torch.get_rng_state(),
                      guard.state_dict() if guard else None, guard.kept if guard else None)


def _gathered(state: TrainState) -> TrainState:
    """The state with FSDP shards replaced by full tensors (fsdp.gathered: on every rank)."""
    state.optimizer = fsdp.gathered(state.optimizer)
    state.guard_kept = fsdp.gathered(state.guard_kept)
    return state


def _restore(state: TrainState, opt, sched, gen: torch.Generator, guard: CollapseGuard | None,
             params: dict[str, torch.Tensor]) -> None:
    # the optimizer after the schedule: building the schedule rewrote the learning rates
    opt.load_state_dict(state.optimizer)
    for p, st in opt.state.items():  # FSDP: a checkpoint's full tensors cut to the rank's shards
        st.update({k: fsdp.resharded(v, p) for k, v in st.items() if torch.is_tensor(v) and v.shape == p.shape})
    sched.load_state_dict(state.scheduler)
    gen.set_state(state.sampler_rng)
    torch.set_rng_state(state.torch_rng)
    if guard and state.guard is not None:
        kept = [(s, {n: fsdp.resharded(w, params[n]) for n, w in ws.items()}) for s, ws in state.guard_kept or []]
        guard.load_state_dict(state.guard, kept)


def _evaluate_phase(phase: str, policy: Policy, items: Sequence[Item], cfg: TTRVConfig, prompts: Prompts,
                    should_stop: Callable[[], bool] = lambda: False):
    """Evaluate items in order (evaluate.py: batches of cfg.eval_batch, the first item alone), with
    about 20 progress events (the first item's included, so that a live view has votes at once); a
    stop ends it before the next item: the result then covers the items so far (None if there are
    none)."""
    evals, t0 = [], time.time()
    every = max(1, len(items) // 20)
    if should_stop():  # before the first item: nothing evaluated, no result
        return None
    # the same random streams before and after (one per item), so differences come from the model
    # K processes: this rank's share of the items (every K-th), gathered back in order below
    parallel.stage(f"evaluate {phase}")
    mine = parallel.shard(items)
    # FSDP (lockstep): one item a batch (a batch's prompts of several lengths prefill in several
    # forwards), and a rank one item short evaluates a stand-in, dropped: as many forwards everywhere
    extra = [items[0]] * fsdp.stand_ins(len(items), len(mine)) if policy.lockstep else []
    run = replace(cfg, eval_batch=1) if policy.lockstep else cfg
    for i, ev in enumerate(evaluate(policy, mine + extra, run, seed=cfg.seed + 1, prompts=prompts), 1):
        if i > len(mine):
            break
        evals.append(ev)
        if i == 1 or i % every == 0 or i == len(mine):  # K > 1: from rank 0's share, an estimate
            yield Progress(phase, min(len(items), i * parallel.size()), len(items), latest=ev)
        if i < len(mine) and should_stop():
            break
    policy.decoders.release()  # the end of a sampling phase (the kept static decoder, on CUDA)
    evals = parallel.gather_shards(evals, f"gathering the {phase}-evaluation")
    result = EvalResult(phase, evals, summarize(evals), time.time() - t0)
    yield result
    return result
