"""The bundled demos: a tiny model, the example set it answers, and what to expect.

One table (DEMOS); the app's menu, its header and the CLI's defaults read it,
and nowhere else names a bundled model. Every model here was built offline by a
script in assets/ (its model card, assets/<folder>/README.md, states how and the
build criteria it met); the numbers in `expect` come from docs/RESULTS.md
(`python -m ttrv_core.research.reward_study` for format, clean and video: means over 5 seeds;
`python -m ttrv_core.research.experiments` for open: 3 seeds), on the held-out set.

    format   the default. Reads the digit well but answers the paper's recognition
             prompt with the bare letter only part of the time; otherwise with a
             sentence that names no option. The authors' small models behave so
             (DESIGN.md section 7): TTRV's reward favours the letter, the habit
             carries over to every image, and greedy accuracy rises.
    clean    the control: the same build with the letter reply everywhere. The
             regime of Qwen2.5-VL in the authors' logs: nothing to correct.
    open     the config's default model (config.DEMO_MODEL): open answers ("Which digit
             is shown?"), one clean token. TTRV leaves its greedy accuracy where it was.
    video    clips of a digit drifting across 8 frames (animated GIFs), asked which
             digit is shown or which way it moves: the open model fine-tuned on
             clips, its bare-answer habit half learned as the format model's
             (assets/build_video_model.py).

`settings` are the TTRVConfig fields a demo changes from the paper's defaults,
chosen on the build's validation split (assets/validation/digits_choice, never
on the held-out example set) with the format model, 3 seeds each: lr 1e-3 and 3
epochs were the best of the learning-rate and epoch sweeps (docs/RESULTS.md gives
the numbers and the commands). The control takes the same, so that the two differ
only in the model.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ttrv_core.config import ASSETS, DEMO_MODEL

DEMO_PREFIX, ASSETS_PREFIX = "demo:", "assets:"
"""How a run folder names a bundled demo's model and the other bundled files (`public`)."""


@dataclass(frozen=True)
class Demo:
    key: str
    label: str
    """Menu label."""
    folder: str
    """Model folder under assets/."""
    examples: str
    """Example set under assets/examples/ that the model answers."""
    task: str
    """Task format of that example set (prompts.TASKS)."""
    expect: str
    """One sentence: what TTRV does to this model, from measured numbers."""
    settings: dict = field(default_factory=dict)
    """TTRVConfig overrides for this demo (chosen on the validation split)."""

    @property
    def model(self) -> str:
        return str(ASSETS / self.folder)

    @property
    def example_dir(self) -> Path:
        return ASSETS / "examples" / self.examples


CHOICE_SETTINGS = {"lr": 1e-3, "epochs": 3, "reward": "calibrated", "prior_weight": 1.0}
"""The multiple-choice demos' settings (above): 9 steps of 8 of 20 images, LoRA lr 1e-3, and the
calibrated reward (method/rewards.py: invalid votes earn 0, the step's answer prior is subtracted), chosen on
the validation split and its corruptions over the paper's reward, which fed the letters the base model
over-uses (docs/RESULTS.md, "What TTRV changed"; `--reward ttrv` runs the paper's)."""

VIDEO_SETTINGS = {"lr": 1e-3, "epochs": 3}
"""The video demo's settings, chosen the same way on its own validation clips (assets/validation/digits_video,
3 seeds): the best of the sweep, over the paper's lr 1e-4 and 2 epochs (docs/RESULTS.md gives the numbers
and the commands)."""

DEMOS: tuple[Demo, ...] = (
    Demo("format", "Demo: digits, reply format half-learned (TTRV's regime)", "demo_choice", "digits_choice",
         "choice", settings=CHOICE_SETTINGS,
         expect="TTRV teaches it the letter reply: strict accuracy 0.275 -> 0.839 (+56.4 points, mean of 5 seeds), "
                "of which reply format +52.1 and answers +4.3 (read for content 0.804 -> 0.848); the most common "
                "answer on 0.16 of the images (with the paper's reward: answers -1.9, one letter on 0.22, up to 0.29)"),
    Demo("clean", "Control: digits, clean letter replies (nothing to correct)", "demo_choice_clean",
         "digits_choice", "choice", settings=CHOICE_SETTINGS,
         expect="Nothing to correct: strict accuracy 0.871 -> 0.851 (-2.0 points, mean of 5 seeds; the paper's "
                "reward -2.2); "
                "the format demo's gain is the reply format"),
    Demo("open", "Demo: digits, open answers (the first demo model)", Path(DEMO_MODEL).name, "digits", "open",
         expect="TTRV leaves it where it was: greedy accuracy 0.688 -> 0.675 (-1.2 points, mean of 3 seeds); "
                "its greedy answer already wins the vote"),
    Demo("video", "Demo: video clips of a moving digit, reply format half-learned", "demo_video", "digits_video",
         "open", settings=VIDEO_SETTINGS,
         expect="TTRV teaches it the bare answer: strict accuracy 0.442 -> 0.772 (+33.0 points, mean of 5 seeds), "
                "of which reply format +31.5 and answers +1.6 (read for content 0.762 -> 0.778); sentence replies "
                "55% -> 1.5%"),
)
DEFAULT = DEMOS[0]


def by_model(model: str) -> Demo | None:
    """The demo whose model folder this is, or None (a hub id, another folder)."""
    try:
        path = Path(model).resolve()
    except OSError:
        return None
    return next((d for d in DEMOS if Path(d.model).resolve() == path), None)


def by_task(task: str) -> Demo:
    """The bundled model a run of this task format gets when no model is named: the first demo
    of that task (multiple choice: the default demo's model), else the open-answer demo's."""
    return next((d for d in DEMOS if d.task == task), by_key("open"))


def public(path: str | Path) -> str:
    """How a run folder names a model or a file: a bundled demo's model folder by the demo
    ('demo:format'), anything else among the bundled assets by its place there
    ('assets:examples/digits_choice'), any other path or hub id as it was given. The record then
    holds nothing of the machine's own filesystem for the bundled files; `local` reads it back.

    >>> public(by_key("format").model), public(by_key("format").example_dir), public("my_digits")
    ('demo:format', 'assets:examples/digits_choice', 'my_digits')
    """
    text = str(path)
    demo = by_model(text)
    if demo is not None:
        return DEMO_PREFIX + demo.key
    try:
        inside = Path(text).resolve().relative_to(ASSETS.resolve())
    except (OSError, ValueError):
        return text
    return ASSETS_PREFIX + inside.as_posix()


def local(name: str) -> str:
    """The path a name written by `public` stands for on this machine (other names as they are).

    >>> local(public(by_key("open").model)) == by_key("open").model
    True
    """
    if name.startswith(DEMO_PREFIX):
        return by_key(name[len(DEMO_PREFIX):]).model
    if name.startswith(ASSETS_PREFIX):
        return str(ASSETS / name[len(ASSETS_PREFIX):])
    return name


def by_key(key: str) -> Demo:
    for d in DEMOS:
        if d.key == key:
            return d
    raise ValueError(f"no bundled demo '{key}'; expected one of {', '.join(d.key for d in DEMOS)}")
