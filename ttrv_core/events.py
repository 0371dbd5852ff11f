"""Typed events the engine yields; the CLI, the app and the run log only read them.

Metric keys are namespaced and stable: reward/*, answers/*, loss/*, grad/*,
time/*, acc/* (acc/* only where the user gave answers; they are never used
for rewards).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class ItemVotes:
    """One item's votes at one training step (label-free, plus correctness if known)."""
    item_id: str
    counts: dict[str, int]     # answer -> votes, most common first
    majority: str
    majority_share: float
    entropy: float             # normalised, H / ln M
    reward_mean: float
    majority_correct: bool | None = None


@dataclass
class ItemEval:
    """One item evaluated: a greedy answer and N samples at temperature T."""
    item_id: str
    greedy: str                # extracted answer of the greedy decode
    greedy_text: str           # its raw text
    majority: str
    majority_share: float
    entropy: float
    counts: dict[str, int]
    reference: str | None = None
    greedy_correct: bool | None = None
    majority_correct: bool | None = None
    single_acc: float | None = None   # share of the N samples that are correct


@dataclass
class RunStart:
    config: dict
    n_items: int
    train_ids: list[str]
    total_steps: int
    mode: str                  # "all" or "single"
    type: str = "run_start"


@dataclass
class Progress:
    phase: str                 # "before", "after"
    done: int
    total: int
    type: str = "progress"


@dataclass
class EvalResult:
    phase: str                 # "before" or "after"
    items: list[ItemEval]
    metrics: dict[str, float]  # eval/greedy_acc, eval/maj_acc, eval/single_acc, eval/entropy, ...
    type: str = "eval"


@dataclass
class StepEvent:
    step: int                  # 1-based
    total_steps: int
    items: list[ItemVotes]
    metrics: dict[str, float] = field(default_factory=dict)
    type: str = "step"


@dataclass
class RunEnd:
    stopped: bool              # True when a stop was asked for before the last step
    seconds: float
    summary: dict[str, float]  # before/* and after/* of the eval metrics
    error: str | None = None
    guard: str | None = None   # what the collapse guard did, if it fired
    type: str = "run_end"


Event = RunStart | Progress | EvalResult | StepEvent | RunEnd


def to_json(event: Event) -> dict:
    return asdict(event)
