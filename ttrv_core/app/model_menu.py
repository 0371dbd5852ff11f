"""The app's model menu and what it says before a run: the bundled demos (demos.DEMOS, those
whose folder exists) and the real presets (families.PRESETS); the default model and the example
set it opens on; what to expect from the chosen model, from measured numbers (ours, or the
authors' logs named as theirs); what a preset needs before Run (a download, a GPU); a warning
when a demo model meets images it was not built for; and the plan of a run (how many images are
adapted on, in how many steps).

The default is demos.DEFAULT (the first demo that exists if it does not), unless a CUDA GPU
and the hub (or the cached weights) are there: then REAL_DEFAULT, InternVL3-2B, a model in
TTRV's regime (its reply format half-learned in the authors' logs), on the bundled photos.
default_model() probes the network once, for at most 1.5 s, and only on a machine with a GPU;
what a preset needs is read from the local cache and torch alone, never from the network.
Gradio-free.
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
REAL_DEFAULT = families.PRESETS["InternVL3 2B"].model_id
"""The default where a GPU and its weights (cached, or the hub) are there."""
PHOTOS = "photos"
"""The bundled photographs (assets/examples/photos, multiple choice with the paper's recognition prompt):
the example set a preset opens on, since no real model finds the 8x8 digits hard."""
AUTHORS_LOGS = {
    REAL_DEFAULT: "In the authors' logs (Singh et al. 2025) InternVL3-2B moves 0.679 -> 0.963 on ImageNet-A, with "
                  "a third of its replies invalid before; not measured by us (needs a GPU and the Hub)",
    families.PRESETS["Qwen2.5-VL 3B"].model_id:
        "In the authors' logs (Singh et al. 2025) Qwen2.5-VL-3B moves 0.964 -> 0.965 on ImageNet-A: its replies "
        "were already clean, so there was nothing to correct; not measured by us (needs a GPU and the Hub)",
    families.PRESETS["Qwen2.5-VL 7B"].model_id:
        "In the authors' logs (Singh et al. 2025) Qwen2.5-VL-7B moves 0.980 -> 0.981 on ImageNet-A: its replies "
        "were already clean, so there was nothing to correct; not measured by us (needs a GPU and the Hub)",
}
"""What the authors' own run logs show for a preset (greedy accuracy before -> after; DESIGN.md section 7),
quoted as theirs."""
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


def gpu_name() -> str | None:
    """This machine's CUDA GPU, or None (no GPU, or no torch)."""
    try:
        import torch
    except ImportError:
        return None
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def weights_cached(model_id: str) -> bool:
    """Whether this hub model's weights are in the local Hugging Face cache: its config.json and a
    weights file beside it in the same snapshot. A file check only, never the network."""
    try:
        from huggingface_hub import try_to_load_from_cache
        config = try_to_load_from_cache(model_id, "config.json")
    except Exception:  # noqa: BLE001 - not a hub id, no hub library: not cached
        return False
    return isinstance(config, str) and any(f.suffix in (".safetensors", ".bin") for f in Path(config).parent.iterdir())


def offline() -> bool:
    """HF_HUB_OFFLINE is set: nothing can be downloaded."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def default_model() -> str:
    """The default demo unless a GPU and REAL_DEFAULT's weights (cached, or the hub) are available."""
    demo = default_demo()
    fallback = demo.model if demo else REAL_DEFAULT
    if gpu_name() is None:
        return fallback
    if weights_cached(REAL_DEFAULT):
        return REAL_DEFAULT
    if offline():
        return fallback
    try:
        socket.create_connection(("huggingface.co", 443), timeout=1.5).close()
        return REAL_DEFAULT
    except OSError:
        return fallback


def opens_on(model: str) -> tuple[str, str] | None:
    """The example set and task format choosing this model brings: a demo its own set, a preset the
    bundled photos (multiple choice); any other model none (the images stay as they are).

    >>> opens_on(REAL_DEFAULT)
    ('photos', 'choice')
    """
    demo = demos.by_model(model)
    if demo is not None:
        return demo.examples, demo.task
    return (PHOTOS, "choice") if preset_of(model) is not None else None


def preset_of(model: str) -> families.Preset | None:
    return next((p for p in families.PRESETS.values() if p.model_id == model), None)


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
    """What to expect from this model, in words measured where there are measurements, then what it
    needs before Run (needs())."""
    demo = demos.by_model(model)
    if demo is not None:
        return f"**What to expect:** {for_page(demo.expect)}"
    preset = preset_of(model)
    if preset is None:
        expect = f"**What to expect:** {GENERIC}"
    else:
        said = AUTHORS_LOGS.get(model, GENERIC.replace("No measurements for this model here. ", ""))
        expect = f"{for_page(preset.note)}{elsewhere(preset.note)}. **What to expect:** {said}"
    return "\n\n".join(filter(None, [expect, needs(model)]))


def elsewhere(note: str) -> str:
    """A label for a note's H100 figures on a machine that is not an H100."""
    here = gpu_name()
    if "H100" not in note or (here and "H100" in here):
        return ""
    return f" — figures from an H100, not from this machine{' (' + here + ')' if here else ''}"


def needs(model: str) -> str:
    """What Run needs that may not be here, said before it is pressed: the weights, when a hub model is
    not in the local cache (Run downloads them; with HF_HUB_OFFLINE set it cannot), and a GPU, when a preset
    meets a machine without one. From the cache and torch alone: whether the hub answers is only known
    when Run tries."""
    said = []
    if demos.by_model(model) is None and not Path(model).exists() and not weights_cached(model):
        said.append("its weights are not in this machine's Hugging Face cache and **HF_HUB_OFFLINE is set**: "
                    "Run will fail; download them where the hub is reachable (`huggingface-cli download "
                    f"{model}`) or choose a bundled demo" if offline() else
                    "its weights are not in this machine's Hugging Face cache: **Run downloads them first** "
                    "(whether the hub is reachable from here is only known when Run tries)")
    if preset_of(model) is not None and gpu_name() is None:
        said.append("**it needs a GPU** and this machine has none: on this CPU it would load in full precision "
                    "(fp32, 4 bytes per weight) and sample every vote on the CPU: far slower than on a GPU, and "
                    "not measured by us; the bundled demos are what runs here")
    return "⚠️ **Before Run:** " + "; ".join(said) + "." if said else ""


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
