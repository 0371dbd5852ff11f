"""Sampling N answers to one image prompt: prefill once, decode N rows.

shared (default): the image + question prompt is prefilled once (batch 1) and
its KV cache is copied into the N rows of the decoder (decode.py: a static
cache, replayed as a CUDA graph on CUDA), so only the answer tokens are decoded
per row. naive: the prompt is prefilled as N full rows, as
generate(num_return_sequences=N) does. Both use the same decode loop and random
stream, so for one seed they sample the same answers (up to float rounding in
the prefill). On CUDA, 4-bit and bf16 models sample under bf16 autocast
(models.Policy.autocast), as they train.

The log-probs a Rollout stores are the sampler's, of the unmasked policy at
temperature T. GRPO's pi_old is recomputed from the training forward by
default, as verl does (grpo.old_logprobs, config.recompute_old_logprobs): the
decode's numerics (a KV cache, bf16, a CUDA graph) differ from the packed
training row's by up to a few hundredths per token in bf16, which would start
every step at a ratio off 1.

Departure from the authors' code (verl + vLLM): special tokens other than EOS
are never sampled (DESIGN.md section 5).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import torch
from PIL import Image

from .decode import decoder
from .encode import encode
from .models import Policy


@dataclass
class Prompt:
    """One encoded image prompt (batch of one) with its explicit positions."""
    inputs: dict[str, torch.Tensor]  # input_ids (1, P), attention_mask, pixel_values, image_grid_thw, ...
    positions: torch.Tensor          # (3, 1, P) mrope or (1, P)
    next_position: int               # position of the first answer token
    _images: dict | None = field(default=None, repr=False)  # the image encoder's outputs, once computed

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
        operations and a GPU sync per block). Where that cannot be done (no
        `mm_encoder_outputs` in the model's forward, or trainable vision weights from a
        loaded adapter) the pixels go to every forward, as before."""
        if self._images is None:
            self._images = _encode_images(policy, self.inputs)
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


def prepare_prompt(policy: Policy, image: Image.Image, text: str) -> Prompt:
    """Encode through the processor's chat template (encode.py); positions by family.

    Every tensor the processor returns goes to the model (pixel_values,
    image_grid_thw, pixel_attention_mask, image_sizes, token_type_ids, ...)."""
    batch = encode(policy.processor, fit_image(image, policy.max_pixels), text)
    inputs = {k: v.to(policy.device) for k, v in batch.items() if isinstance(v, torch.Tensor)}
    for k, v in inputs.items():
        if v.is_floating_point():  # pixel values in the model's compute dtype
            inputs[k] = v.to(policy.base.dtype)
    ids = inputs["input_ids"]
    if policy.family.mrope:
        pos, _ = policy.base.model.get_rope_index(
            ids, mm_token_type_ids=inputs["mm_token_type_ids"], image_grid_thw=inputs.get("image_grid_thw"),
            attention_mask=inputs.get("attention_mask"))
        nxt = int(pos.max()) + 1
    else:
        pos = torch.arange(ids.shape[1], device=ids.device).unsqueeze(0)
        nxt = ids.shape[1]
    return Prompt(inputs=inputs, positions=pos, next_position=nxt)


@dataclass
class Rollout:
    """N sampled answers to one prompt."""
    tokens: torch.Tensor    # (N, L) answer tokens, pad after EOS
    mask: torch.Tensor      # (N, L) 1.0 on answer tokens (EOS included), 0.0 after
    logprobs: torch.Tensor  # (N, L) log-probs at temperature T under the sampling policy, by the sampler's numerics
    texts: list[str]        # decoded answers, special tokens dropped

    def take(self, g: int) -> "Rollout":
        """The first g answers (the paper trains on the first G of the N votes)."""
        t, m, lp = self.tokens[:g], self.mask[:g], self.logprobs[:g]
        keep = max(int(m.sum(1).max().item()), 1) if g else 1  # trim all-padding columns
        return Rollout(t[:, :keep], m[:, :keep], lp[:, :keep], self.texts[:g])


def prefill(policy: Policy, prompt: Prompt, rows: int, shared: bool):
    """Forward the prompt; returns (last-position logits (rows, V), its cache: one
    row when shared (the decoder replicates it), else `rows` rows)."""
    if shared:
        out = policy.model(**prompt.encoded(policy), position_ids=prompt.positions, use_cache=True,
                           logits_to_keep=1)
        return out.logits[:, -1].expand(rows, -1), out.past_key_values
    inputs, pos = prompt.repeated(rows)
    out = policy.model(**inputs, position_ids=pos, use_cache=True, logits_to_keep=1)
    return out.logits[:, -1], out.past_key_values


@torch.no_grad()
def sample(policy: Policy, prompt: Prompt, n: int, temperature: float = 1.0, top_p: float = 1.0,
           max_new_tokens: int = 16, generator: torch.Generator | None = None,
           greedy_rows: int = 0, shared: bool = True, decode: str = "auto") -> Rollout:
    """Sample n answers; the first `greedy_rows` rows decode greedily instead.

    Rows stop at EOS; the loop stops when every row has. decode: the decode
    step (decode.py): "auto" (static cache + CUDA graph on CUDA), "static", "eager"."""
    was_training = policy.model.training
    policy.model.eval()
    try:
        with policy.autocast():
            return _sample(policy, prompt, n, temperature, top_p, max_new_tokens, generator, greedy_rows, shared,
                           decode)
    finally:
        policy.model.train(was_training)


def _sample(policy, prompt, n, temperature, top_p, max_new_tokens, generator, greedy_rows, shared, decode):
    logits, cache = prefill(policy, prompt, n, shared)
    dec = decoder(policy, prompt, n, cache, shared, max_new_tokens, decode)
    del cache
    try:
        done = torch.zeros(n, dtype=torch.bool, device=policy.device)
        toks, lps, mask = [], [], []
        for t in range(max_new_tokens):
            scaled = logits.float() / temperature                             # (n, V)
            logp_all = torch.log_softmax(scaled, -1)
            masked = scaled.masked_fill(policy.suppress, float("-inf"))
            tok = _draw(masked, top_p, generator)                             # (n,)
            if greedy_rows:
                tok[:greedy_rows] = masked[:greedy_rows].argmax(-1)
            lps.append(logp_all.gather(-1, tok[:, None]).squeeze(-1))
            mask.append((~done).float())
            tok = tok.masked_fill(done, policy.pad_id)
            toks.append(tok)
            done = done | torch.isin(tok, policy.eos_ids)
            if bool(done.all()) or t == max_new_tokens - 1:
                break
            logits = dec.step(tok, t)
    finally:
        dec.close()
    tokens = torch.stack(toks, 1)
    m = torch.stack(mask, 1)
    texts = _decode(policy, tokens, m)
    return Rollout(tokens=tokens, mask=m, logprobs=torch.stack(lps, 1) * m, texts=texts)


def _draw(scaled: torch.Tensor, top_p: float, generator: torch.Generator | None) -> torch.Tensor:
    probs = torch.softmax(scaled, -1)
    if top_p < 1.0:
        sp, idx = probs.sort(-1, descending=True)
        drop = (sp.cumsum(-1) - sp) > top_p  # keep the smallest set reaching top_p
        sp = sp.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, idx, sp)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def _decode(policy: Policy, tokens: torch.Tensor, mask: torch.Tensor) -> list[str]:
    eos = set(policy.eos_ids.tolist())
    rows = [[t for t, keep in zip(r, mk) if keep and t not in eos]
            for r, mk in zip(tokens.tolist(), mask.tolist())]
    return policy.tokenizer.batch_decode(rows, skip_special_tokens=True)
