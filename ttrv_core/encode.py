"""One image + one question -> model inputs, through the processor's chat template.

Every family goes through here (prompt: one user turn, image first, no system
turn added by us; DESIGN.md section 2), so training the demo model and running
the engine see byte-identical prompts.
"""
from __future__ import annotations

from PIL import Image


def chat_text(processor, text: str) -> str:
    """The templated prompt string, ending where the assistant's answer starts."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def encode(processor, image: Image.Image, text: str):
    """BatchFeature for a batch of one: input_ids (1, P), attention_mask, pixel values, ..."""
    prompt = chat_text(processor, text)
    # as processor.apply_chat_template(tokenize=True) does: a template that writes BOS itself
    # (Gemma 3) must not get a second one from the tokenizer
    bos = processor.tokenizer.bos_token
    kw = {"add_special_tokens": False} if bos and prompt.startswith(bos) else {}
    return processor(text=[prompt], images=[image], return_tensors="pt", **kw)
