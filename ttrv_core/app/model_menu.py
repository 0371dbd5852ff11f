"""The app's model menu and what it says before a run: the bundled demos (demos.DEMOS, those
whose folder exists) and the real presets (families.PRESETS); the default model; what to
expect from the chosen model, from measured numbers; a warning when a demo model meets images
it was not built for; and the plan of a run (how many images are adapted on, in how many steps).

The default is demos.DEFAULT (the first demo that exists if it does not), unless a CUDA GPU
and the hub (or a cached Qwen2.5-VL-3B) are there: default_model() probes the network once,
for at most 1.5 s, and only on a machine with a GPU. Gradio-free.
"""
from __future__ import annotations

import os
import re
import socket
from pathlib import Path

from ttrv_core import demos
from ttrv_core.config import TTRVConfig
from ttrv_core.demos import Demo
from ttrv_core.model import families

INTRO = ("# TTRV: adapt a vision-language model to your own unlabeled images\n"
         "The model answers each image N times; each answer is rewarded by how often the model itself gave it, and "
         "GRPO steps on LoRA weights follow that reward. No labels are used for training (an answers column is used "
         "for evaluation only). It sharpens what the model already does: what that does to accuracy depends on the "
         "model (see under the model menu).")
"""The page's header: what TTRV does, without promising what it does to accuracy."""
OTHER = "other"
"""Menu value of 'Other: type a hub id or a local folder' (not on a public Space)."""
REAL_DEFAULT = "Qwen/Qwen2.5-VL-3B-Instruct"
GENERIC = ("No measurements for this model here. TTRV sharpens what the model already does: it helps most when the "
           "model often knows the answer but replies in a form the task does not accept (watch 'votes with no "
           "valid answer'); on a model that already replies cleanly expect little change, and a wrong majority "
           "answer can become more common.")


def available() -> list[Demo]:
    """The demos whose model folder is there (one being built is left out of the menu)."""
    return [d for d in demos.DEMOS if (Path(d.model) / "config.json").is_file()]


def default_demo() -> Demo | None:
    found = available()
    return demos.DEFAULT if demos.DEFAULT in found else found[0] if found else None


def choices(public: bool = False) -> list[tuple[str, str]]:
    """(label, value) pairs: demos, presets, then 'Other' where custom models are allowed."""
    out = [(d.label, d.model) for d in available()]
    out += [(label, p.model_id) for label, p in families.PRESETS.items()]
    return out + ([] if public else [("Other: type a Hugging Face model id or a local folder", OTHER)])


def allowed() -> set[str]:
    """The models a public Space runs: the menu's, nothing typed."""
    return {v for _, v in choices(public=True)}


def default_model() -> str:
    """The default demo unless a GPU and the hub (or a cached Qwen2.5-VL-3B) are available."""
    demo = default_demo()
    fallback = demo.model if demo else REAL_DEFAULT
    try:
        import torch
        if not torch.cuda.is_available():
            return fallback
    except ImportError:
        return fallback
    try:
        from huggingface_hub import try_to_load_from_cache
        if isinstance(try_to_load_from_cache(REAL_DEFAULT, "config.json"), str):
            return REAL_DEFAULT
    except Exception:  # noqa: BLE001 - any failure means: not cached
        pass
    if os.environ.get("HF_HUB_OFFLINE") in ("1", "true"):
        return fallback
    try:
        socket.create_connection(("huggingface.co", 443), timeout=1.5).close()
        return REAL_DEFAULT
    except OSError:
        return fallback


def for_page(text: str) -> str:
    """A note without the repository paths it cites (the page has no repository).

    >>> for_page("4-bit step 2.4 s (N=32, G=16, 448px; bench/RESULTS.md)")
    '4-bit step 2.4 s (N=32, G=16, 448px)'
    >>> for_page("greedy 0.69 -> 0.72 (measured in docs/RESULTS.md)")
    'greedy 0.69 -> 0.72 (measured)'
    """
    text = re.sub(r"[;,]?\s*(?:\b(?:in|see)\s+)?\b[\w./-]+\.(?:md|py)\b", "", text)
    return text.replace("()", "").strip()


def about(model: str) -> str:
    """What to expect from this model, in words measured where there are measurements."""
    demo = demos.by_model(model)
    if demo is not None:
        return f"**What to expect:** {for_page(demo.expect)}"
    preset = next((p for p in families.PRESETS.values() if p.model_id == model), None)
    if preset is not None:
        return f"{for_page(preset.note)}. **What to expect:** {GENERIC.replace('No measurements for this model here. ', '')}"
    return f"**What to expect:** {GENERIC}"


def warning(model: str, own_images: bool, example: str | None) -> str:
    """A warning when a bundled demo model is run on images other than the set it was built for."""
    demo = demos.by_model(model)
    if demo is None or (not own_images and example == demo.examples):
        return ""
    return (f"⚠️ This demo model was built on the 8x8 digits of the '{demo.examples}' example set and knows "
            "nothing else: on other images its answers mean nothing (it answers a photo of an astronaut "
            "with '9'). For your own images choose a real model (a GPU helps).")


def plan(n_items: int, cfg: TTRVConfig, single: str | None = None) -> str:
    """What Run will do with these images and settings, before it is pressed.

    >>> plan(240, TTRVConfig())
    '**Run:** evaluate all 240 images (a greedy answer and 32 votes each), adapt on **20 of the 240** (a random subset; Settings: images adapted on, 0 = all) in 6 steps of 8, then evaluate all 240 again.'
    """
    if n_items == 0:
        return "**Run:** nothing to run yet (no usable images)."
    evals = f"evaluate all {n_items} images (a greedy answer and {cfg.votes_for_eval} votes each)"
    if single:
        pool, what = cfg.single_copies, f"adapt on **one image**, {single} ({cfg.single_copies} copies)"
    elif 0 < cfg.train_items < n_items:
        pool = cfg.train_items
        what = (f"adapt on **{pool} of the {n_items}** (a random subset; Settings: images adapted on, "
                "0 = all)")
    else:
        pool, what = n_items, f"adapt on **all {n_items}**"
    steps = cfg.total_steps(pool)
    return (f"**Run:** {evals}, {what} in {steps} step{'s' * (steps != 1)} of {min(cfg.prompts_per_step, pool)}, "
            f"then evaluate all {n_items} again.")
