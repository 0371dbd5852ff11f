"""One frozen config for a TTRV run. Each default says where it comes from.

"paper code" = the authors' release (github.com/Akshit21112002/TTRV, a fork of
TTRL on verl): its run scripts and verl's defaults they rely on.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

from ttrv_core.demos import by_key
from ttrv_core.method.rewards import REWARDS
from ttrv_core.inputs.video import MAX_FRAMES

DEMO_MODEL = by_key("open").model
"""The bundled demo model the config defaults to (demos.py), a folder under assets/."""
PRECISIONS = ("auto", "4bit", "bf16", "fp32")
RECOMPUTE = ("off", "mlp", "layers")
"""Gradient checkpointing modes: what the training forward recomputes in backward (recompute.py).
In code, "checkpoint" means a resume checkpoint of a run folder (runs.py) and nothing else."""


@dataclass(frozen=True)
class TTRVConfig:
    model: str = DEMO_MODEL
    """Hub id or local folder. Default: the bundled demo model (assets/)."""
    precision: str = "auto"
    """auto = 4-bit NF4 on CUDA, fp32 on CPU; or 4bit, bf16, fp32."""

    # --- sampling (paper code: n_votes_per_prompt / n_samples_per_prompt) ---
    n_votes: int = 32
    """N: answers sampled per prompt; rewards are computed over all N (paper code)."""
    n_train: int = 16
    """G: the first G of the N answers are trained on (paper code)."""
    temperature: float = 1.0
    """Sampling temperature (paper code; 1.5 in its Qwen2.5-VL runs)."""
    top_p: float = 1.0
    """Nucleus sampling (paper code: 1.0, i.e. off)."""
    max_new_tokens: int = 16
    """Answer length cap; answers are a letter or a short phrase (no chain of thought)."""
    video_frames: int = 8
    """K: frames sampled uniformly from each video item (issue 17's default; at most video.MAX_FRAMES)."""

    # --- reward ---
    reward: str = "ttrv"
    """ttrv (r1 - alpha*H_norm, paper), frequency, majority (TTRL), ttrv_marginal (ours), soft
    (mean token-F1 similarity to the N votes, ours, for phrase answers: similarity.py), calibrated
    (ours: invalid votes earn 0, the step's answer prior is subtracted; rewards.py)."""
    alpha: float = 0.75
    """Entropy weight (paper). Cancels under group-normalised advantages: see rewards.py."""
    prior_weight: float = 1.0
    """lambda of the calibrated reward (ours, rewards.py): how much of the step's answer prior is
    subtracted from a valid vote's frequency; 0 keeps only "invalid votes earn 0"."""
    consensus: float = 0.0
    """tau (SCRL): a prompt whose majority share of the N votes is below it trains on nothing
    (advantages 0); 0 = off, the paper's."""

    # --- GRPO (verl defaults used by the paper code) ---
    eps_clip: float = 0.2
    """PPO ratio clip (verl clip_ratio)."""
    dual_clip: float = 3.0
    """Dual-clip constant c for negative advantages (verl clip_ratio_c)."""
    beta: float = 0.001
    """KL loss weight to the base policy, low_var_kl (k3) estimator (paper code)."""
    adv_eps: float = 1e-6
    """GRPO advantage (r - mean) / (std + eps) (verl)."""

    # --- optimisation ---
    lr: float = 1e-4
    """LoRA learning rate. Paper: 5e-7 for a full fine-tune. Ours, measured on the demo
    model with the other defaults (3 seeds, bench/RESULTS.md; the sweep is rerun by
    `python -m ttrv_core.research.experiments --groups lr`, docs/RESULTS.md): greedy change
    -1.0 at 1e-4, -2.8 at 3e-4, -12.4 at 1e-3 (collapse); the smallest harm wins.
    Real 2-8B models: try 1e-5..1e-4."""
    weight_decay: float = 0.01
    """AdamW weight decay (paper code)."""
    grad_clip: float = 1.0
    """Gradient-norm clip (paper code)."""
    warmup_ratio: float = 0.03
    """Linear warm-up share of the cosine schedule (paper code)."""
    prompts_per_step: int = 8
    """Prompts sampled per step (paper code: train_batch_size 8)."""
    prompts_per_update: int = 0
    """k: the prompts of one optimizer update. The update's gradient is the MEAN over its prompts
    of each prompt's GRPO loss gradient (token-mean within a prompt), clipped once; the last update
    of a step may hold fewer. Each prompt then samples from its own random stream, seeded from
    (seed, step, its place in the step), so that K processes, each taking a share of every
    update's prompts (parallel.py), compute what one process does. 0 = the paper code's one update
    per prompt, the step's prompts sampled from one stream (one process only; as before issue 18)."""
    train_items: int = 20
    """Unlabeled items adapted on, drawn at random (seeded) from all items; every item is
    evaluated. Paper main setting: 20 test samples. 0 = adapt on all items."""
    epochs: int = 2
    """Passes over the unlabeled items (paper: 2 epochs over 20 test samples)."""
    max_steps: int = 0
    """If > 0, run exactly this many steps (epochs repeat as needed), instead of `epochs`."""
    lora_r: int = 16
    """LoRA rank, language-model projections only (vision tower frozen, paper)."""
    lora_alpha: int = 0
    """LoRA scaling numerator; 0 means 2 x lora_r (the common alpha/r = 2), resolved here, once,
    for every front end. The stored config holds the value used (older run folders: 32)."""

    # --- run ---
    seed: int = 0
    """Seeds sampling, LoRA init and item order."""
    shared_prefix: bool = True
    """Prefill each image prompt once and share it across the N answers
    (sampling) and the G trained answers (training). False: full rows (reference)."""
    gradient_checkpointing: str = "off"
    """Recompute activations in the backward pass of the training forward: "off", "mlp"
    (each layer's MLP) or "layers" (whole layers); less GPU memory for a slower step
    (recompute.py; bench/RESULTS.md measures all three on an H100). True/False
    (older run folders) mean "layers"/"off"."""
    max_pixels: int = 0
    """Images are downscaled (aspect kept) to at most this many pixels before the processor;
    0 = the model family's default (families.py). Image tokens make most of a prompt: the
    first thing to lower when memory runs out (errors.py)."""
    recompute_old_logprobs: bool = True
    """GRPO's pi_old from one no-grad pass of the training forward per prompt before the
    step's updates (verl), so the first ratio of a step is exactly 1 in bf16 too; False: the
    sampler's log-probs (no extra pass; grpo.py)."""
    collapse_guard: bool = True
    """Stop and roll back when most images get the same majority answer (guard.py; ours)."""
    single_copies: int = 4
    """Single-example mode: the chosen item is repeated this many times (paper)."""
    eval_votes: int = 0
    """Samples per item for maj@N / single@T evaluation; 0 means n_votes."""
    eval_batch: int = 16
    """Items evaluated together: the N + 1 rows of each decode in one batch (evaluate.py). Ours; it
    changes the speed only, never the answers (each item samples from its own random stream). 16:
    the fastest of 8, 16, 32, 64 on the demo model on a CPU (80 items: 1.95, 1.61, 1.81, 1.78 s).
    Memory grows with it (on CUDA, eval_batch x (N + 1) rows of the prompt's KV cache); out of
    memory, the evaluation goes on with half as many."""

    def __post_init__(self) -> None:
        if isinstance(self.gradient_checkpointing, bool):  # older configs (frozen: set through object)
            object.__setattr__(self, "gradient_checkpointing", "layers" if self.gradient_checkpointing else "off")
        if self.gradient_checkpointing not in RECOMPUTE:
            raise ValueError(f"gradient_checkpointing must be one of {', '.join(RECOMPUTE)}, "
                             f"got '{self.gradient_checkpointing}'")
        if self.n_train > self.n_votes:
            raise ValueError(f"n_train (G={self.n_train}) must be <= n_votes (N={self.n_votes})")
        if self.n_train < 2:
            raise ValueError("n_train (G) must be >= 2: group advantages need two answers")
        if self.reward not in REWARDS:
            raise ValueError(f"reward must be one of {', '.join(REWARDS)}, got '{self.reward}'")
        if not 0.0 <= self.consensus <= 1.0:
            raise ValueError(f"consensus must be 0 to 1 (a share of the votes), got {self.consensus}")
        if self.prior_weight < 0:
            raise ValueError(f"prior_weight must be >= 0, got {self.prior_weight}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got '{self.precision}'")
        if self.temperature <= 0:
            raise ValueError("temperature must be > 0 (greedy decoding is used for evaluation only)")
        for name in ("prompts_per_step", "epochs", "max_new_tokens", "lora_r", "eval_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if not 1 <= self.video_frames <= MAX_FRAMES:
            raise ValueError(f"video_frames must be 1 to {MAX_FRAMES}, got {self.video_frames}")
        for name in ("lora_alpha", "max_pixels", "prompts_per_update"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (0: the default)")
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
