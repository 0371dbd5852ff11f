"""One frozen config for a TTRV run: every setting, said once.

Each field is a `setting(...)`: its default and where that comes from, its help text, its bounds,
and how the front ends show it: the CLI flag (cli/ derives its flags from these), the app form's
label (app/form_fields.py derives the form) and the largest value a public Space allows (app/sessions.py
derives its caps). A new setting is one field here.

"paper code" = the authors' release (github.com/Akshit21112002/TTRV, a fork of
TTRL on verl): its run scripts and verl's defaults they rely on. This module imports nothing of
ttrv_core's: it is the bottom layer (docs/ARCHITECTURE.md).
"""
from __future__ import annotations

import math
from dataclasses import Field, asdict, dataclass, field, fields, replace
from pathlib import Path


def _assets() -> Path:
    """The demo models and example sets: the package data of an installed copy (`pip install .`
    puts assets/ at ttrv_core/assets), else the checkout's assets/ beside the package."""
    here = Path(__file__).resolve().parent
    installed = here / "assets"
    return installed if (installed / "demo_model").is_dir() else here.parent / "assets"


ASSETS = _assets()
DEMO_MODEL = str(ASSETS / "demo_model")
"""The model the config defaults to: the bundled open-answer demo model (demos.py names it 'open')."""
PRECISIONS = ("auto", "4bit", "bf16", "fp32")
RECOMPUTE = ("off", "mlp", "layers")
"""Gradient checkpointing modes: what the training forward recomputes in backward
(model/gradient_checkpointing.py). In code, "checkpoint" means a resume checkpoint of a run folder
(runs/checkpoint.py) and nothing else."""
REWARDS = ("ttrv", "frequency", "majority", "ttrv_marginal", "soft", "calibrated")
"""The rewards by name (method/rewards.py holds them)."""
MAX_FRAMES = 64
"""The most frames a video may give the model: each frame costs image tokens."""


@dataclass(frozen=True)
class Setting:
    """How a config field is checked and shown. Bounds are inclusive; `above` is an exclusive lower bound."""
    help: str
    flag: str | None = None
    """The CLI flag, without its dashes (None: not a flag)."""
    label: str | None = None
    """The app form's label (None: not in the form)."""
    low: float | None = None
    high: float | None = None
    above: float | None = None
    choices: tuple[str, ...] = ()
    zero: str | None = None
    """What 0 stands for, where 0 is a default to be resolved ("2 x lora_r")."""
    cap: int | None = None
    """The largest value a public Space allows (app/sessions.py)."""
    why: str = ""
    """Said after a bound's message."""


def setting(default, help: str, **how) -> Field:
    """A config field: its default and a Setting (`TTRVConfig.settings()` reads them back)."""
    return field(default=default, metadata={"setting": Setting(help, **how)})


@dataclass(frozen=True)
class TTRVConfig:
    model: str = setting(DEMO_MODEL, "Hub id or local folder. Default: the bundled demo model (assets/).")
    precision: str = setting(
        "auto", "auto = 4-bit NF4 on CUDA, fp32 on CPU; or 4bit, bf16, fp32.", flag="precision", label="Precision",
        choices=PRECISIONS)

    # --- sampling (paper code: n_votes_per_prompt / n_samples_per_prompt) ---
    n_votes: int = setting(
        32, "N: answers sampled per prompt; rewards are computed over all N (paper code).",
        flag="votes", label="Votes N per image", low=1, cap=32)
    n_train: int = setting(
        16, "G: the first G of the N answers are trained on (paper code).",
        flag="train", label="Trained answers G (≤ N)", low=2, cap=16, why="group advantages need two answers")
    temperature: float = setting(
        1.0, "Sampling temperature (paper code; 1.5 in its Qwen2.5-VL runs).",
        flag="temperature", label="Temperature", above=0, why="greedy decoding is used for evaluation only")
    top_p: float = setting(1.0, "Nucleus sampling (paper code: 1.0, i.e. off).", flag="top-p", above=0, high=1)
    max_new_tokens: int = setting(
        16, "Answer length cap; answers are a letter or a short phrase (no chain of thought).",
        flag="max-new-tokens", low=1)
    video_frames: int = setting(
        8, "K: frames sampled uniformly from each video item.", flag="video-frames", low=1, high=MAX_FRAMES, cap=16)

    # --- reward ---
    # the help of a field the form shows as a choice or a switch is on the page: no repository paths
    reward: str = setting(
        "ttrv", "ttrv = r1 - alpha*H_norm as in the paper's code. Under group-normalised advantages the entropy "
        "term cancels exactly (it is one number per image), so ttrv trains like 'frequency'; 'ttrv_marginal' is our "
        "variant in which it acts. majority = TTRL's 0/1 reward. soft = for phrase answers: each answer's mean word "
        "overlap (token F1) with all the votes; under exact match it is 'frequency'. calibrated (the multiple-choice "
        "demos' default) = a reply that is no valid answer earns 0, a valid one how often it was voted minus lambda x "
        "how often the whole step votes it, so the model is not rewarded for a letter it favours on every image.",
        flag="reward", label="Reward", choices=REWARDS)
    alpha: float = setting(
        0.75, "Entropy weight (paper). Cancels under group-normalised advantages: see method/rewards.py.",
        flag="alpha", label="alpha: entropy weight")
    prior_weight: float = setting(
        1.0, "lambda of the calibrated reward (ours): how much of the step's answer prior is subtracted from a "
        "valid vote's frequency; 0 keeps only \"invalid votes earn 0\".",
        flag="prior-weight", label="lambda: prior weight (calibrated reward)", low=0)
    consensus: float = setting(
        0.0, "tau (SCRL): a prompt whose majority share of the N votes is below it trains on nothing "
        "(advantages 0); 0 = off, the paper's.", flag="consensus", low=0, high=1, zero="off",
        label="Consensus: skip images whose top answer has under this share of the votes (0 = off)",
        why="a share of the votes")

    # --- GRPO (verl defaults used by the paper code) ---
    eps_clip: float = setting(0.2, "PPO ratio clip (verl clip_ratio).")
    dual_clip: float = setting(3.0, "Dual-clip constant c for negative advantages (verl clip_ratio_c).")
    beta: float = setting(
        0.001, "KL loss weight to the base policy, low_var_kl (k3) estimator (paper code).",
        flag="beta", label="beta: KL weight")
    adv_eps: float = setting(1e-6, "GRPO advantage (r - mean) / (std + eps) (verl).")

    # --- optimisation ---
    lr: float = setting(
        1e-4, "LoRA learning rate. Paper: 5e-7 for a full fine-tune. Ours: the smallest harm on the open demo "
        "model with the other defaults (docs/RESULTS.md); the multiple-choice demos take 1e-3, chosen on their "
        "validation split (demos.py). Real 2-8B models: try 1e-5..1e-4.",
        flag="lr", label="Learning rate (LoRA)")
    weight_decay: float = setting(0.01, "AdamW weight decay (paper code).")
    grad_clip: float = setting(1.0, "Gradient-norm clip (paper code).")
    warmup_ratio: float = setting(0.03, "Linear warm-up share of the cosine schedule (paper code).")
    prompts_per_step: int = setting(
        8, "Prompts sampled per step (paper code: train_batch_size 8).",
        flag="prompts-per-step", label="Images per step", low=1, cap=8)
    prompts_per_update: int = setting(
        0, "k: the prompts of one optimizer update. The update's gradient is the MEAN over its prompts of each "
        "prompt's GRPO loss gradient (token-mean within a prompt), clipped once; the last update of a step may hold "
        "fewer. Each prompt then samples from its own random stream, seeded from (seed, step, its place in the "
        "step), so that K processes, each taking a share of every update's prompts (dist/parallel.py), compute "
        "what one process does. 0 = the paper code's one update per prompt, the step's prompts sampled from one "
        "stream (one process only).", flag="prompts-per-update", low=0,
        zero="one update per prompt, one process (K processes: K)")
    train_items: int = setting(
        20, "Unlabeled items adapted on, drawn at random (seeded) from all items; every item is evaluated. "
        "Paper main setting: 20 test samples.", flag="train-items",
        label="Images adapted on (a random subset; 0 = all)", low=0, zero="all")
    train_first: bool = setting(
        False, "Adapt on the first train_items items instead of a seeded random subset (--train-first).")
    epochs: int = setting(
        2, "Passes over the unlabeled items (paper: 2 epochs over 20 test samples).",
        flag="epochs", label="Epochs over the images", low=1)
    max_steps: int = setting(
        0, "If > 0, run exactly this many steps (epochs repeat as needed), instead of `epochs`. Its public cap "
        "bounds a run's steps however they are set.", flag="steps", label="Steps (0 = by epochs)", low=0,
        zero="by --epochs", cap=12)
    lora_r: int = setting(
        16, "LoRA rank, language-model projections only (vision tower frozen, paper).",
        flag="lora-r", label="LoRA rank (alpha = 2 × rank)", low=1, cap=64)
    lora_alpha: int = setting(
        0, "LoRA scaling numerator; 0 means 2 x lora_r (the common alpha/r = 2), resolved here, once, for every "
        "front end. The stored config holds the value used.", flag="lora-alpha", low=0, zero="2 x --lora-r")

    # --- run ---
    seed: int = setting(0, "Seeds sampling, LoRA init and item order.", flag="seed")
    shared_prefix: bool = setting(
        True, "Prefill each image prompt once and share it across the N answers (sampling) and the G trained "
        "answers (training). False: full rows (reference).")
    gradient_checkpointing: str = setting(
        "off", "Recompute activations in the backward pass of the training forward: less GPU memory, slower "
        "steps. mlp recomputes the MLPs (a 3B model: 4.9 instead of 6.5 GiB), layers whole layers.",
        label="Gradient checkpointing", choices=RECOMPUTE)
    max_pixels: int = setting(
        0, "Images are downscaled (aspect kept) to at most this many pixels before the processor; 0 = the "
        "model family's default (model/families.py). Image tokens make most of a prompt: the first thing to "
        "lower when memory runs out.", flag="max-pixels", low=0, zero="the model family's",
        label="Max pixels per image (0 = the model's default; lower it if memory runs out)")
    recompute_old_logprobs: bool = setting(
        True, "GRPO's pi_old from one no-grad pass of the training forward per prompt before the step's updates "
        "(verl), so the first ratio of a step is exactly 1 in bf16 too; False: the sampler's log-probs.")
    collapse_guard: bool = setting(
        True, "Label-free: when most images get the same majority answer for 2 steps in a row, training stops "
        "and the adapter goes back to the last healthy step (the method's known failure is collapse).",
        label="Collapse guard")
    single_copies: int = setting(
        4, "Single-example mode: the chosen item is repeated this many times (paper).", flag="single-copies", low=1)
    eval_votes: int = setting(
        0, "Samples per item for maj@N / single@T evaluation; 0 means n_votes.",
        flag="eval-votes", label="Eval votes (0 = N)", low=0, zero="--votes", cap=32)
    eval_batch: int = setting(
        16, "Items evaluated together: the N + 1 rows of each decode in one batch (method/evaluate.py). It "
        "changes the speed only, never the answers (each item samples from its own random stream); 16 was the "
        "fastest of 8-64 on the demo model on a CPU. Out of memory, the evaluation goes on with half as many.",
        low=1)

    @classmethod
    def settings(cls) -> dict[str, Setting]:
        """Each field's Setting, in field order."""
        return {f.name: f.metadata["setting"] for f in fields(cls)}

    def __post_init__(self) -> None:
        # a config.json may hold a bool here (True: layers); frozen: set through object
        if isinstance(self.gradient_checkpointing, bool):
            object.__setattr__(self, "gradient_checkpointing", "layers" if self.gradient_checkpointing else "off")
        for name, s in self.settings().items():
            if problem := _out_of_bounds(name, getattr(self, name), s):
                raise ValueError(problem)
        if self.n_train > self.n_votes:
            raise ValueError(f"n_train (G={self.n_train}) must be <= n_votes (N={self.n_votes})")
        if self.lora_alpha == 0:  # the one place the rule lives (frozen: set through object)
            object.__setattr__(self, "lora_alpha", 2 * self.lora_r)

    @property
    def votes_for_eval(self) -> int:
        return self.eval_votes or self.n_votes

    def total_steps(self, n_items: int) -> int:
        """Steps of the run: epochs over the items in batches, or max_steps."""
        if self.max_steps > 0:
            return self.max_steps
        return math.ceil(n_items / self.prompts_per_step) * self.epochs

    def to_dict(self) -> dict:
        return asdict(self)

    def with_(self, **kw) -> "TTRVConfig":
        """A copy with some fields changed. An alpha that follows the 2 x rank rule keeps
        following it when only the rank changes.

        >>> TTRVConfig(lora_r=8).with_(lora_r=4).lora_alpha, TTRVConfig(lora_alpha=5).with_(lora_r=4).lora_alpha
        (8, 5)
        """
        if "lora_r" in kw and "lora_alpha" not in kw and self.lora_alpha == 2 * self.lora_r:
            kw["lora_alpha"] = 0
        return replace(self, **kw)


def _out_of_bounds(name: str, value, s: Setting) -> str | None:
    """What is wrong with a field's value by its Setting, or None.

    >>> _out_of_bounds("reward", "best", TTRVConfig.settings()["reward"])
    "reward must be one of ttrv, frequency, majority, ttrv_marginal, soft, calibrated, got 'best'"
    >>> _out_of_bounds("consensus", 2.0, TTRVConfig.settings()["consensus"])
    'consensus must be 0 to 1 (a share of the votes), got 2.0'
    """
    why = f" ({s.why})" if s.why else ""
    if s.choices and value not in s.choices:
        return f"{name} must be one of {', '.join(s.choices)}, got '{value}'"
    if s.low is not None and s.high is not None and not s.low <= value <= s.high:
        return f"{name} must be {s.low:g} to {s.high:g}{why}, got {value}"
    if s.low is not None and value < s.low:
        default = f" (0: {s.zero})" if s.low == 0 and s.zero else ""
        return f"{name} must be >= {s.low:g}{default}{why}, got {value}"
    if s.above is not None and (value <= s.above or s.high is not None and value > s.high):
        upto = f" and <= {s.high:g}" if s.high is not None else ""
        return f"{name} must be > {s.above:g}{upto}{why}, got {value}"
    return None
