"""Typed events the engine yields; the CLI, the app and the run log only read them.

Metric keys are namespaced and stable: reward/*, answers/*, loss/*, grad/*,
time/*, acc/* (acc/* only where the user gave answers; they are never used
for rewards).

Invalid replies (label-free, answers.is_valid): `answers/invalid` is the share of
a step's votes that name no valid answer (no option letter in a multiple-choice
reply, no class name, an empty open answer); `eval/greedy_invalid` the share of
items whose greedy reply is invalid, `eval/invalid` the share of sampled replies.

Entropy of the votes: `answers/entropy` and `eval/entropy` are H / ln N (N votes),
which falls whenever votes move to a more common answer; `answers/entropy_paper`
and `eval/entropy_paper` are the paper's H / ln M (M distinct answers), the number
its reward uses, which can rise as the answers sharpen ([.9, .05, .05] gives 0.36,
[.9, .1] gives 0.47).

An error ends a run by an exception from the engine (the CLI and the app turn it
into a message); RunEnd marks a run that ended, stopped or not.

A resumed run (runs/checkpoint.py, `--resume`) appends to the same log: a second
run_start with `resumed_from` = the step it continues after, then the steps
that follow. A step event carries `snapshot`, a way to read the training state
right after that step for a checkpoint; it is never serialised and is valid
only until the engine is resumed (the engine clears it then). Likewise a
progress event carries `latest`, the item evaluated last (for a live view), not logged.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable


@dataclass
class ItemVotes:
    """One item's votes at one training step (label-free, plus correctness if known)."""
    item_id: str
    counts: dict[str, int]     # answer -> votes, most common first
    majority: str
    majority_share: float
    entropy: float             # H / ln N over the N votes: 0 = all agree, 1 = all differ; falls as votes concentrate
    reward_mean: float
    majority_correct: bool | None = None
    entropy_paper: float | None = None  # the paper's H / ln M (M distinct answers; the ttrv reward's), not monotone
    invalid: float = 0.0       # share of the votes with no valid answer (answers.is_valid): label-free


@dataclass
class ItemEval:
    """One item evaluated: a greedy answer and N samples at temperature T."""
    item_id: str
    greedy: str                # extracted answer of the greedy decode
    greedy_text: str           # its raw text
    majority: str
    majority_share: float
    entropy: float             # H / ln N, as ItemVotes.entropy
    counts: dict[str, int]
    reference: str | None = None
    greedy_correct: bool | None = None
    majority_correct: bool | None = None
    single_acc: float | None = None   # share of the N samples that are correct
    entropy_paper: float | None = None  # the paper's H / ln M, as ItemVotes.entropy_paper
    greedy_valid: bool = True  # the greedy reply is a valid answer (answers.is_valid): label-free
    invalid: float = 0.0       # share of the N samples with no valid answer
    valid_acc: float | None = None    # share of the valid samples that are correct (None: no valid sample)
    closed: bool | None = None        # open task with a reference: True for a yes/no reference (exact match only)
    f1: float | None = None           # open, not yes/no: token F1 of the greedy answer to the reference
    rouge1: float | None = None       # open, not yes/no: ROUGE-1 of the greedy reply to the reference (similarity.py)
    named: str = ""                   # the answer the greedy reply names, read for content (content.py); "" none
    content_correct: bool | None = None   # the greedy reply names the reference (content.py), valid or not


@dataclass
class RunStart:
    """What the run will do, so that a front end shows progress without re-deriving the schedule."""
    config: dict
    n_items: int               # items evaluated in each evaluation phase
    train_ids: list[str]
    total_steps: int           # steps of the whole run (a resumed run included)
    mode: str                  # "all" or "single"
    resumed_from: int = 0      # > 0: this run continues a run folder after that step
    phases: list[str] = field(default_factory=lambda: ["before", "train", "after"])  # those this run goes through
    type: str = "run_start"

    @property
    def steps_to_run(self) -> int:
        """The steps this process runs (a resumed run: those after `resumed_from`)."""
        return self.total_steps - self.resumed_from

    @property
    def work(self) -> int:
        """Units of progress a bar counts: each evaluation's items and each step, this process's share."""
        return self.n_items * sum(p != "train" for p in self.phases) + self.steps_to_run


@dataclass
class Progress:
    phase: str                 # "before", "after"
    done: int
    total: int
    type: str = "progress"
    # the item evaluated last, so a live view can show votes before the phase ends; not part of the log
    latest: ItemEval | None = field(default=None, repr=False, compare=False)


@dataclass
class EvalResult:
    phase: str                 # "before" or "after"
    items: list[ItemEval]
    metrics: dict[str, float]  # eval/greedy_acc, eval/maj_acc, eval/single_acc, eval/entropy, ...
    seconds: float = field(default=0.0, compare=False)   # how long the evaluation took (not in ==)
    reused: bool = False       # taken from an earlier run on the same base model (engine.adapt's before=)
    type: str = "eval"


@dataclass
class StepEvent:
    step: int                  # 1-based
    total_steps: int
    items: list[ItemVotes]
    metrics: dict[str, float] = field(default_factory=dict)
    type: str = "step"
    # () -> engine.TrainState after this step; not part of the log (see the module docstring)
    snapshot: Callable[[], Any] | None = field(default=None, repr=False, compare=False)


@dataclass
class RunEnd:
    stopped: bool              # True when a stop cut the run short (training or an evaluation; engine.py)
    seconds: float
    summary: dict[str, float]  # before/* and after/* of the eval metrics
    guard: str | None = None   # what the collapse guard did, if it fired
    problems: list[str] = field(default_factory=list)  # "file: what": items the run left out, videos read at fewer frames
    type: str = "run_end"


Event = RunStart | Progress | EvalResult | StepEvent | RunEnd


def to_json(event: Event) -> dict:
    if isinstance(event, StepEvent):
        event = replace(event, snapshot=None)
    elif isinstance(event, Progress):
        event = replace(event, latest=None)
    d = asdict(event)
    d.pop("snapshot", None)
    d.pop("latest", None)
    return d


def eval_from_json(d: dict) -> EvalResult:
    """An `eval` line of events.jsonl back as an EvalResult."""
    return EvalResult(d["phase"], [ItemEval(**e) for e in d["items"]], d["metrics"], d.get("seconds", 0.0),
                      d.get("reused", False))
