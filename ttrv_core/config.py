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
    model: str = setting(DEMO_MODEL, "A Hugging Face Hub id or a local model folder. Default: the bundled demo model "
                         "(assets/).")
    precision: str = setting(
        "auto", "How the model's weights are stored. auto: 4-bit on a GPU (least memory), 32-bit on a CPU. Or pick "
        "4bit, bf16 (16-bit) or fp32 (32-bit: most exact, most memory).", flag="precision", label="Precision",
        choices=PRECISIONS)

    # --- sampling (paper code: n_votes_per_prompt / n_samples_per_prompt) ---
    n_votes: int = setting(
        32, "How many answers the model samples for each image. How much they agree is the reward, so more votes "
        "give a steadier signal but take longer (the paper's N).",
        flag="votes", label="Votes N per image", low=1, cap=32)
    n_train: int = setting(
        16, "How many of those answers (the first ones) the model learns from in each step. Fewer is faster and "
        "needs less memory (the paper's G; at most N).",
        flag="train", label="Trained answers G (≤ N)", low=2, cap=16,
        why="each answer is scored against the others of its image: two at least")
    temperature: float = setting(
        1.0, "How random the sampled answers are: higher gives more varied votes, lower makes them agree more "
        "(paper code: 1; 1.5 in its Qwen2.5-VL runs).",
        flag="temperature", label="Temperature", above=0,
        why="always taking the likeliest answer is for the evaluation only")
    top_p: float = setting(
        1.0, "Sample each next word piece only from the likeliest ones that together hold this share of the "
        "chance; 1: off, as in the paper code (nucleus sampling).", flag="top-p", above=0, high=1)
    max_new_tokens: int = setting(
        16, "The longest reply, in word pieces (tokens). Answers are a letter or a short phrase, with no reasoning "
        "written out, so 16 is enough; raise it for long answers.", flag="max-new-tokens", low=1)
    video_frames: int = setting(
        8, "For a video: how many frames, evenly spaced, the model sees. Each costs about as much as an image "
        "(the paper's K).", flag="video-frames", low=1, high=MAX_FRAMES, cap=16)

    # --- reward ---
    # the help of a field the form shows is on the page: plain words, no repository paths, ~200 characters
    # (method/rewards.py states each reward as a formula)
    reward: str = setting(
        "ttrv", "Scores an answer by its votes. frequency: its share; ttrv: the paper's, acts as frequency; "
        "majority: 1 if most voted; soft: word overlap, for phrases; calibrated: share less how common across "
        "images.",
        flag="reward", label="Reward", choices=REWARDS)
    alpha: float = setting(
        0.75, "Weight of the ttrv rewards' term for how spread out the votes are (entropy). In ttrv it changes "
        "nothing, being the same for every answer of an image; it acts in ttrv_marginal (paper: 0.75).",
        flag="alpha", label="Entropy weight (alpha; ttrv rewards)")
    prior_weight: float = setting(
        1.0, "For the calibrated reward: how much an answer loses for being common on all images, so the "
        "model's favourite does not win by habit. 0: none; a reply that is no valid answer still earns 0.",
        flag="prior-weight", label="Discount for answers common on all images (lambda; calibrated)", low=0)
    consensus: float = setting(
        0.0, "An image whose most voted answer has less than this share of the votes is not learned from that "
        "step: a weak majority is a poor guess. 0: off, as in the paper (tau, from SCRL).",
        flag="consensus", low=0, high=1, zero="off",
        label="Consensus: skip images whose top answer has under this share of the votes (0 = off)",
        why="a share of the votes")

    # --- GRPO (verl defaults used by the paper code) ---
    eps_clip: float = setting(
        0.2, "How far one update may push an answer's probability from where the step began, as a share: 0.2 is "
        "20% either way (PPO's ratio clip; verl's clip_ratio).")
    dual_clip: float = setting(
        3.0, "For an answer scored below its image's average: caps its weight in the update at this many times its "
        "score gap, so a runaway probability cannot dominate (dual clip c; verl's clip_ratio_c).")
    beta: float = setting(
        0.001, "How strongly training keeps the adapted model close to the original: higher is safer, lower learns "
        "more freely. 0: off, and each step skips one pass of the model (KL penalty; paper code).",
        flag="beta", label="Stay close to the original model (beta)")
    adv_eps: float = setting(
        1e-6, "A tiny number added to the spread of an image's answer scores before each score is divided by it, "
        "so that equal scores do not divide by zero (the GRPO advantage's epsilon; verl).")

    # --- optimisation ---
    lr: float = setting(
        1e-4, "How far each update moves the trained weights. 1e-4 did least harm on the open demo; the "
        "multiple-choice demos use 1e-3; real 2-8B models: try 1e-5 to 1e-4 (paper: 5e-7, all weights).",
        flag="lr", label="Learning rate (LoRA)")
    weight_decay: float = setting(
        0.01, "Pulls the trained weights a little towards zero at each update, against overfitting (AdamW weight "
        "decay; paper code).")
    grad_clip: float = setting(
        1.0, "Caps the size of each update (the gradient's length), so that one odd batch cannot throw training off "
        "(paper code).")
    warmup_ratio: float = setting(
        0.03, "The share of the steps over which the learning rate rises from 0 to its value; it then falls to 0 "
        "along a cosine curve (paper code).")
    prompts_per_step: int = setting(
        8, "How many images are sampled and learned from in one step. More: steadier steps, fewer of them per "
        "epoch (paper code: 8).",
        flag="prompts-per-step", label="Images per step", low=1, cap=8)
    prompts_per_update: int = setting(
        0, "How many images one weight update learns from: their gradients are averaged, then clipped once (the "
        "last update of a step may hold fewer). Each image then samples from its own random stream, seeded from "
        "the seed, the step and its place in the step, so a run shared by K processes (torchrun) makes the same "
        "updates as one process. 0: the paper code's one update per image, one process only.",
        flag="prompts-per-update", low=0, zero="one update per prompt, one process (K processes: K)")
    train_items: int = setting(
        20, "How many images the model adapts on, picked at random (by the seed); every image is still evaluated. "
        "0: all of them. The paper adapts on 20 test images.", flag="train-items",
        label="Images adapted on (a random subset; 0 = all)", low=0, zero="all")
    train_first: bool = setting(
        False, "Adapt on the first --train-items items instead of a random (seeded) choice of them.")
    epochs: int = setting(
        2, "How many times training goes over the images adapted on, unless a number of steps is set (paper: 2 "
        "passes over 20 images).", flag="epochs", label="Epochs over the images", low=1)
    max_steps: int = setting(
        0, "Run exactly this many steps, going over the images again as needed, instead of counting by epochs. "
        "0: by epochs. A public Space caps the steps however they are set.", flag="steps",
        label="Steps (0 = by epochs)", low=0, zero="by --epochs", cap=12)
    lora_r: int = setting(
        16, "Size of the small add-on weights that are trained (LoRA rank): larger can learn more, needs more "
        "memory. Only the language part is adapted; the vision part stays frozen (paper).",
        flag="lora-r", label="LoRA rank (alpha = 2 × rank)", low=1, cap=64)
    lora_alpha: int = setting(
        0, "How strongly the add-on weights act (LoRA alpha). 0: twice the rank, the common choice; the saved "
        "config holds the value used.", flag="lora-alpha", low=0,
        zero="2 x --lora-r")

    # --- run ---
    seed: int = setting(
        0, "Fixes the run's randomness: the sampled answers, the add-on weights' start and which images are "
        "picked. Change it to see how much a result owes to chance.", flag="seed")
    shared_prefix: bool = setting(
        True, "Read each image's prompt once and share it among all its answers, in sampling and in training. "
        "Off: a full copy per answer, slower (the reference this is checked against).")
    gradient_checkpointing: str = setting(
        "off", "Saves GPU memory for slower steps, by working parts of the model out again during training. mlp: "
        "the feed-forward parts (a 3B model: 4.9 instead of 6.5 GiB); layers: whole layers.",
        label="Gradient checkpointing", choices=RECOMPUTE)
    max_pixels: int = setting(
        0, "Each image is shrunk (shape kept) to at most this many pixels before the model sees it. 0: the model's "
        "own default. Images take most of the memory: lower this first when it runs out.", flag="max-pixels",
        low=0, zero="the model family's",
        label="Max pixels per image (0 = the model's default; lower it if memory runs out)")
    recompute_old_logprobs: bool = setting(
        True, "Before a step's updates, work out each answer's probability again with the training code, so the "
        "first update starts from exactly no change, in 16-bit too (verl's pi_old). Off: reuse the sampler's, "
        "cheaper.")
    collapse_guard: bool = setting(
        True, "Stops training and goes back to a recent healthy state if the model starts giving one answer to "
        "most images, the method's known failure. It needs no labels.",
        label="Collapse guard")
    single_copies: int = setting(
        4, "Single-example mode: the one chosen image is repeated this many times (paper).", flag="single-copies",
        low=1)
    eval_votes: int = setting(
        0, "How many answers are sampled per image to measure accuracy before and after (by majority vote and by "
        "single answers). 0: as many as the votes N.",
        flag="eval-votes", label="Eval votes (0 = N)", low=0, zero="--votes", cap=32)
    eval_batch: int = setting(
        16, "How many images are evaluated at once. It changes the speed only, never the answers (each image has "
        "its own random stream); 16 was the fastest of 8 to 64 on the demo model on a CPU. When memory runs out, "
        "the evaluation goes on with half as many.", low=1)

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
