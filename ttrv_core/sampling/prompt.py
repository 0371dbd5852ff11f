"""`Prompt`: one image (or video) and its question, encoded once for every pass over it: the
processor's inputs through the chat template (model_inputs.py), with the image downscaled to the
policy's max_pixels, the explicit positions of its tokens (3D for mrope families), and, added on the
first shared forward, the image encoder's output, so that sampling, pi_old, the reference pass and
the training forward encode the image once (Prompt.encoded)."""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field, replace
from typing import Callable

import torch
from PIL import Image

from ttrv_core.inputs.video import Video
from ttrv_core.model.policy import Policy
from ttrv_core.sampling.model_inputs import encode


@dataclass
class Prompt:
    """One encoded image prompt (batch of one) with its explicit positions."""
    inputs: dict[str, torch.Tensor]  # input_ids (1, P), attention_mask, pixel_values, image_grid_thw, ...
    positions: torch.Tensor          # (3, 1, P) mrope or (1, P)
    next_position: int               # position of the first answer token
    _images: dict | None = field(default=None, repr=False)  # the image encoder's outputs, once computed
    on_grow: Callable[[], None] | None = field(default=None, repr=False, compare=False)
    """Called when the image encoding is added (prompt_cache.Prompts counts a kept prompt's bytes then)."""

    @property
    def length(self) -> int:
        return self.inputs["input_ids"].shape[1]

    def answer_positions(self, rows: int, length: int, offset: int = 0) -> torch.Tensor:
        """Positions of answer tokens offset..offset+length-1 for `rows` rows."""
        dev = self.positions.device
        pos = self.next_position + offset + torch.arange(length, device=dev)  # (L,)
        if self.positions.dim() == 3:
            return pos.view(1, 1, -1).expand(3, rows, -1)
        return pos.view(1, -1).expand(rows, -1)

    def encoded(self, policy: Policy) -> dict[str, torch.Tensor]:
        """The inputs for the shared paths, with the image encoded ONCE per prompt.

        The vision tower and projector run the first time this is asked (under no
        grad: their weights are frozen, the adapter is on the language model only)
        and their outputs go to every later forward of this prompt as transformers'
        `mm_encoder_outputs`, in place of the pixels: the sampling prefill, the
        reference pass and the training forward share one image encoding instead of
        running the vision tower three times (Qwen2.5-VL-3B: 32 vision blocks, ~3,700
        operations and a GPU sync per block, bench/RESULTS.md). Where that cannot be done (no
        `mm_encoder_outputs` in the model's forward, or trainable vision weights from a
        loaded adapter) the pixels go to every forward."""
        if self._images is None:
            self._images = _encode_images(policy, self.inputs)
            if self._images and self.on_grow is not None:
                self.on_grow()
        if not self._images:
            return self.inputs
        consumed, outputs = self._images["consumed"], self._images["outputs"]
        return {**{k: v for k, v in self.inputs.items() if k not in consumed}, "mm_encoder_outputs": dict(outputs)}

    def repeated(self, rows: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Inputs and positions of `rows` copies of the prompt (the naive path).

        Every processor output has the batch (or the images) on dim 0, so repeating
        dim 0 is right for every family (Qwen: patches and grids; InternVL: tiles;
        LLaVA, Gemma 3: images; Idefics3, OneVision: images of tiles with their
        masks / sizes; token_type_ids: per token)."""
        inputs = {k: v.repeat(rows, *([1] * (v.dim() - 1))) for k, v in self.inputs.items()}
        pos = self.positions.expand(3, rows, -1) if self.positions.dim() == 3 else self.positions.expand(rows, -1)
        return inputs, pos


def fit_image(image: Image.Image, max_pixels: int) -> Image.Image:
    """Downscale (aspect kept) to at most max_pixels pixels; smaller images pass unchanged."""
    w, h = image.size
    if max_pixels <= 0 or w * h <= max_pixels:
        return image
    s = (max_pixels / (w * h)) ** 0.5
    return image.resize((max(1, int(w * s)), max(1, int(h * s))), Image.BICUBIC)


def _encode_images(policy: Policy, inputs: dict[str, torch.Tensor]) -> dict:
    """{"outputs": {"image": encoder output}, "consumed": the input keys it used}, or {} when
    the model cannot take pre-encoded images. As transformers' generate does before its
    prefill (`_prepare_multimodal_encoder_kwargs_for_generation`): the base model's
    get_image_features, called with the inputs its signature names."""
    encode = getattr(policy.base.base_model, "get_image_features", None)
    takes = "mm_encoder_outputs" in inspect.signature(policy.base.forward).parameters
    if encode is None or not takes or "pixel_values" not in inputs or policy.vision_trainable:
        return {}
    kw = {k: inputs[k] for k in inspect.signature(encode).parameters if k != "kwargs" and k in inputs}
    with torch.no_grad():
        out = encode(**kw, return_dict=True)
    return {"outputs": {"image": out}, "consumed": frozenset(kw)}


def prepare_prompt(policy: Policy, image: Image.Image | Video, text: str) -> Prompt:
    """Encode through the processor's chat template (model_inputs.py); positions by family.

    Every tensor the processor returns goes to the model (pixel_values,
    image_grid_thw, pixel_attention_mask, image_sizes, token_type_ids, ...)."""
    if isinstance(image, Video):  # each frame capped as an image is
        image = replace(image, frames=tuple(fit_image(f, policy.max_pixels) for f in image.frames))
    else:
        image = fit_image(image, policy.max_pixels)
    batch = encode(policy.processor, image, text, policy.family.video)
    inputs = {k: v.to(policy.device) for k, v in batch.items() if isinstance(v, torch.Tensor)}
    for k, v in inputs.items():
        # pixel values in the model's compute dtype; Qwen2.5-VL's seconds per temporal patch
        # stay fp32 (they scale the video's temporal positions)
        if v.is_floating_point() and k != "second_per_grid_ts":
            inputs[k] = v.to(policy.base.dtype)
    ids = inputs["input_ids"]
    if policy.family.mrope:
        pos, _ = policy.base.model.get_rope_index(
            ids, mm_token_type_ids=inputs["mm_token_type_ids"], image_grid_thw=inputs.get("image_grid_thw"),
            video_grid_thw=inputs.get("video_grid_thw"), attention_mask=inputs.get("attention_mask"),
            **{k: inputs[k] for k in ("second_per_grid_ts",) if k in inputs})
        nxt = int(pos.max()) + 1
    else:
        pos = torch.arange(ids.shape[1], device=ids.device).unsqueeze(0)
        nxt = ids.shape[1]
    return Prompt(inputs=inputs, positions=pos, next_position=nxt)
