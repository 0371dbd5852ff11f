"""The supported model families and the preset checkpoints: one table, and
nowhere else a branch on a model's name.

Per family: how positions are built (Qwen's 3D mrope vs plain 1D), where the
language model's projections are (LoRA targets), which modules stay
unquantized in 4-bit, how large an image may get, and whether the
shared-prefix path is proven for the family. Everything else goes through the
Auto classes and the processor's own chat template (sampling/model_inputs.py), so any
checkpoint of a listed architecture loads whatever its size or hub id.
"""
from __future__ import annotations

from dataclasses import dataclass

from ttrv_core.errors import ModelLoadError

LM_PROJ = "(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


@dataclass(frozen=True)
class Family:
    name: str
    label: str
    """Human name, as the app and the error messages show it."""
    model_types: tuple[str, ...]
    """config.model_type values of this family."""
    lm_module: str
    """Name of the language-model submodule; LoRA targets live under it only
    (q_proj... also exist in the vision towers)."""
    mrope: bool
    """3D (temporal, height, width) rotary positions from get_rope_index (Qwen-VL)."""
    keep_full_precision: tuple[str, ...]
    """Module prefixes left unquantized in 4-bit (vision tower, projector, lm_head);
    bitsandbytes needs full prefixes (DESIGN.md section 5)."""
    shared_prefix: bool
    """The shared-prefix path is proven exact for this family (tests/test_shared_prefix.py)."""
    max_pixels: int
    """Images larger than this are downscaled (aspect kept) before the processor, so
    one huge image cannot blow memory; dynamic-resolution families scale their
    image tokens with it. Overridable per load (load_policy(max_pixels=...))."""
    video: str = "frames"
    """How a video item goes in: "video" (the processor's videos= input: its own video
    tokens, Qwen's temporal patches), "frames" (K images in one turn), or "" (refused)."""
    image_limits: tuple[tuple[str, int], ...] = ()
    """Caps on image-processor attributes (attr, most), e.g. InternVL's tile count."""
    note: str = ""
    """How the image goes in, and any quirk the code relies on."""

    @property
    def lora_targets(self) -> str:
        # peft matches a str target as a full regex over module names
        return rf".*{self.lm_module}.*\.{LM_PROJ}"


QWEN_KEEP = ("model.visual", "lm_head")
LLAVA_KEEP = ("model.vision_tower", "model.multi_modal_projector", "lm_head")

FAMILIES: tuple[Family, ...] = (
    Family("qwen2_5_vl", "Qwen2.5-VL", ("qwen2_5_vl",), "language_model", True, QWEN_KEEP, True,
           max_pixels=512 * 28 * 28, video="video",
           note="dynamic resolution: one <|image_pad|> per 28x28 pixels; 3D mrope positions from "
                "get_rope_index (the model caches rope_deltas: one run per model object)"),
    Family("qwen2_vl", "Qwen2-VL", ("qwen2_vl",), "language_model", True, QWEN_KEEP, True,
           max_pixels=512 * 28 * 28, video="video", note="as Qwen2.5-VL"),
    Family("qwen3_vl", "Qwen3-VL", ("qwen3_vl",), "language_model", True, QWEN_KEEP, True,
           max_pixels=512 * 32 * 32, video="video",
           note="one token per 32x32 pixels; interleaved mrope; DeepStack adds visual features "
                "into the first LM layers at the image positions (prefill only)"),
    Family("internvl", "InternVL3-hf", ("internvl",), "language_model", False, LLAVA_KEEP, True,
           max_pixels=1024 * 1024, image_limits=(("max_patches", 6),), video="video",
           note="transformers-native -hf checkpoints only; 448px tiles (up to 6 + a thumbnail), "
                "256 <IMG_CONTEXT> tokens each, expanded by the processor"),
    Family("idefics3", "SmolVLM / Idefics3", ("idefics3", "smolvlm"), "text_model", False,
           ("model.vision_model", "model.connector", "lm_head"), True, max_pixels=1536 * 1536,
           note="LM called text_model; the image is split into tiles + a global view: pixel_values "
                "(B, n_tiles, C, H, W) with pixel_attention_mask; SmolVLM's processor needs num2words"),
    Family("llava", "LLaVA-1.5", ("llava",), "language_model", False, LLAVA_KEEP, True,
           max_pixels=1024 * 1024,
           note="one fixed-size image (336px: 576 <image> tokens, expanded by the processor)"),
    Family("llava_onevision", "LLaVA-OneVision", ("llava_onevision",), "language_model", False,
           LLAVA_KEEP, True, max_pixels=768 * 768, video="video",
           note="anyres: a base view plus a grid of 384px tiles picked by image size; image_sizes input"),
    Family("gemma3", "Gemma 3", ("gemma3",), "language_model", False, LLAVA_KEEP, True,
           max_pixels=1024 * 1024,
           note="fixed 896px -> 256 soft tokens attended bidirectionally: token_type_ids mark them "
                "in every forward that contains the prompt (prefill, full-row training); "
                "sliding-window and global layers"),
)


@dataclass(frozen=True)
class Preset:
    model_id: str
    family: str
    """FAMILIES name the checkpoint belongs to."""
    note: str


PRESETS: dict[str, Preset] = {
    "Qwen2.5-VL 3B": Preset("Qwen/Qwen2.5-VL-3B-Instruct", "qwen2_5_vl",
                            "good default; a whole 4-bit TTRV step on one image 1.1-1.2 s at "
                            "6.6 GiB peak on an H100 (N=32, G=16, 448 px, measured on random weights)"),
    "Qwen2.5-VL 7B": Preset("Qwen/Qwen2.5-VL-7B-Instruct", "qwen2_5_vl",
                            "a whole 4-bit TTRV step on one image 1.0-1.3 s at "
                            "10.9 GiB peak on an H100 (N=32, G=16, 448 px, measured on random weights)"),
    "Qwen2-VL 2B": Preset("Qwen/Qwen2-VL-2B-Instruct", "qwen2_vl", "the smallest Qwen-VL"),
    "Qwen3-VL 4B": Preset("Qwen/Qwen3-VL-4B-Instruct", "qwen3_vl", "DeepStack + interleaved mrope"),
    "Qwen3-VL 8B": Preset("Qwen/Qwen3-VL-8B-Instruct", "qwen3_vl", "DeepStack + interleaved mrope"),
    "InternVL3 2B": Preset("OpenGVLab/InternVL3-2B-hf", "internvl",
                           "the paper's headline model (recognition 62.0 -> 95.0)"),
    "InternVL3 8B": Preset("OpenGVLab/InternVL3-8B-hf", "internvl", "the paper's large model (66.7 -> 95.7)"),
    "SmolVLM2 2.2B": Preset("HuggingFaceTB/SmolVLM2-2.2B-Instruct", "idefics3",
                            "small and fast; its processor needs `pip install num2words`"),
    "LLaVA-OneVision 0.5B": Preset("llava-hf/llava-onevision-qwen2-0.5b-ov-hf", "llava_onevision",
                                   "the smallest real preset: quick to try"),
    "LLaVA-1.5 7B": Preset("llava-hf/llava-1.5-7b-hf", "llava", "fixed 336px images (576 tokens); a baseline"),
    "Gemma 3 4B": Preset("google/gemma-3-4b-it", "gemma3",
                         "gated: accept the license on its hub page, then `huggingface-cli login` or set HF_TOKEN"),
}
"""Menu label -> checkpoint; any other hub id or local folder of a listed family works too."""


def supported() -> str:
    return ", ".join(f"{f.label} ({'/'.join(f.model_types)})" for f in FAMILIES)


def family_of(model_type: str) -> Family:
    for f in FAMILIES:
        if model_type in f.model_types:
            return f
    raise ModelLoadError(f"architecture '{model_type}' is not supported; supported: {supported()}")
