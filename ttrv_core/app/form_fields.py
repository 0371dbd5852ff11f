"""The app's form in plain Python: what its settings are called and capped at, the config its
values make, and the dataset its image and question fields describe. app.py lays the widgets
out; everything they mean is here, gradio-free, so it is tested without a browser.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ttrv_core.inputs import dataset
from ttrv_core import inputs
from ttrv_core.app import model_menu, sessions
from ttrv_core.config import TTRVConfig
from ttrv_core.inputs.images import DICOM_EXTS
from ttrv_core.inputs.video import FRAMES, VIDEO_EXTS
from ttrv_core.problems import Problem

EXAMPLE_SET, MY_IMAGES = "Bundled example set", "My images"
UPLOAD_TYPES = ["image", "video", *sorted(DICOM_EXTS | VIDEO_EXTS), ".zip", ".csv", ".jsonl"]
"""What the upload box takes: gradio's "image" and "video" go by MIME type, which DICOM (application/dicom)
and Matroska are not; the extensions cover them."""
NUMBERS = {"n_votes": int, "n_train": int, "temperature": float, "train_items": int, "max_steps": int, "epochs": int,
           "prompts_per_step": int, "lr": float, "lora_r": int, "eval_votes": int, "alpha": float, "beta": float,
           "max_pixels": int, "prior_weight": float, "consensus": float}
"""Number fields, named as the config's, with their type."""
LABELS = {"n_votes": "Votes N per image", "n_train": "Trained answers G (≤ N)", "temperature": "Temperature",
          "train_items": "Images adapted on (a random subset; 0 = all)", "max_steps": "Steps (0 = by epochs)",
          "epochs": "Epochs over the images", "prompts_per_step": "Images per step", "lr": "Learning rate (LoRA)",
          "lora_r": "LoRA rank (alpha = 2 × rank)", "eval_votes": "Eval votes (0 = N)",
          "alpha": "alpha: entropy weight", "beta": "beta: KL weight",
          "max_pixels": "Max pixels per image (0 = the model's default; lower it if memory runs out)",
          "prior_weight": "lambda: prior weight (calibrated reward)",
          "consensus": "Consensus: skip images whose top answer has under this share of the votes (0 = off)"}
CAPPED = {"n_votes": "n_votes", "n_train": "n_train", "max_steps": "steps", "prompts_per_step": "prompts_per_step",
          "lora_r": "lora_r", "eval_votes": "eval_votes"}
"""Field -> the sessions.CAPS bound a public Space holds it to."""
FIELD = {"checkpointing": "gradient_checkpointing", "guard": "collapse_guard"}
"""Fields whose config name differs."""
SETTINGS = ["precision", "checkpointing", *NUMBERS, "reward", "guard"]
"""Every setting of the form, in the order the page shows them."""
REWARD_HELP = ("ttrv = r1 - alpha*H_norm as in the paper's code. Under group-normalised advantages the entropy term "
               "cancels exactly (it is one number per image), so ttrv trains like 'frequency'; 'ttrv_marginal' is our "
               "variant in which it acts. majority = TTRL's 0/1 reward. soft = for phrase answers: each "
               "answer's mean word overlap (token F1) with all the votes; under exact match it is 'frequency'. "
               "calibrated (the multiple-choice demos' default) = a reply that is no valid answer earns 0, a valid "
               "one how often it was voted minus lambda x how often the whole step votes it, so the model is not "
               "rewarded for a letter it favours on every image.")
GUARD_HELP = ("Label-free: when most images get the same majority answer for 2 steps in a row, training stops and "
              "the adapter goes back to the last healthy step (the method's known failure is collapse).")
CHECKPOINTING_HELP = ("less GPU memory, slower steps: mlp recomputes the MLPs (a 3B model: 4.9 instead of 6.5 GiB), "
                      "layers whole layers")


def model_id(model: str | None, custom: str | None) -> str:
    """The menu's value, or the typed id when the menu says 'Other'."""
    return (custom or "").strip() if model == model_menu.OTHER else (model or "").strip()


def config(model: str, precision: str = "auto", checkpointing: str = "off", guard: bool = True,
           reward: str = "ttrv", **numbers) -> TTRVConfig:
    """The run's config from the form's values (raises ValueError with the config's reason).

    >>> config("m", n_votes=8, n_train=4, lr=0.01).n_train
    4
    """
    return TTRVConfig(model=model, precision=precision or "auto", gradient_checkpointing=checkpointing or "off",
                      collapse_guard=bool(guard), reward=reward,
                      **{k: NUMBERS[k](v or 0) for k, v in numbers.items() if k in NUMBERS})


def values(cfg: TTRVConfig) -> list:
    """The form's values (SETTINGS order) that show this config."""
    return [getattr(cfg, FIELD.get(name, name)) for name in SETTINGS]


def example_sets(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def read(sess: sessions.Session, examples: Path, workdir: Path | None, source: str, example: str | None,
         files: Sequence[str], question: str | None, qfile: str | None, task: str, options: str | None,
         public: bool = False, frames: int = FRAMES) -> inputs.Inputs:
    """The dataset the fields describe. workdir None: the preview (uploads copied once per set of files).
    frames: the frames a run reads from each video (TTRVConfig.video_frames): the check reads as many."""
    opts = [o.strip() for o in (options or "").split("|") if o.strip()]
    if source == EXAMPLE_SET and example not in example_sets(examples):
        return inputs.Inputs(dataset.Dataset(problems=[Problem("example set", f"no example set named '{example}'")]),
                             "", "")
    if source != EXAMPLE_SET and not files:
        return inputs.Inputs(dataset.Dataset(problems=[Problem("upload", "no images yet: add images, a .zip of a "
                                                                      "folder, or a folder")]), "your uploads", "")
    if source == EXAMPLE_SET:
        got = inputs.collect(examples / example, sess.root, label=f"example set '{example}'")
    else:
        got = sess.collect_preview(files) if workdir is None else inputs.collect(list(files), workdir)
    inp = inputs.load(got, question, Path(qfile) if qfile else None, task, opts, frames)
    if public:
        sessions.cap_items(inp.dataset)
    return inp
