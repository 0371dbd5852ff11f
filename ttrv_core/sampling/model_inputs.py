"""One image (or one video) + one question -> model inputs, through the processor's chat template.

Every family goes through here (prompt: one user turn, image first, no system
turn added by us; DESIGN.md section 2), so training the demo model and running
the engine see byte-identical prompts. A video goes in as the family says
(families.Family.video): as a video (one {"type": "video"} item, the frames to the
processor's videos= with their fps), or as K images in the same turn.
"""
from __future__ import annotations

from PIL import Image

from ttrv_core.errors import TTRVError
from ttrv_core.inputs.video import Video


class VideoRefused(TTRVError):
    """A video item for a family that can take neither a video nor several images."""


def chat_text(processor, text: str, kind: str = "image", n: int = 1) -> str:
    """The templated prompt string, ending where the assistant's answer starts."""
    content = [{"type": kind} for _ in range(n)] + [{"type": "text", "text": text}]
    messages = [{"role": "user", "content": content}]
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def encode(processor, image: Image.Image | Video, text: str, video_as: str = "frames"):
    """BatchFeature for a batch of one: input_ids (1, P), attention_mask, pixel values, ...

    video_as: how a Video goes in ("video", "frames" or "": refused; families.Family.video)."""
    if not isinstance(image, Video):
        visual, prompt = {"images": [image]}, chat_text(processor, text)
    elif video_as == "video":
        k = len(image.frames)  # the frames are sampled already: the processor must keep them all
        meta = {"fps": image.fps, "total_num_frames": k, "frames_indices": list(range(k))}
        visual = {"videos": [list(image.frames)], "fps": image.fps, "video_metadata": [meta],
                  "do_sample_frames": False}
        prompt = chat_text(processor, text, "video")
    elif video_as == "frames":
        visual, prompt = {"images": [list(image.frames)]}, chat_text(processor, text, "image", len(image.frames))
    else:
        raise VideoRefused("this model takes neither videos nor several images: give it still images, "
                           "or choose a model that takes video (Qwen2-VL, Qwen2.5-VL, Qwen3-VL, "
                           "InternVL3, LLaVA-OneVision)")
    # as processor.apply_chat_template(tokenize=True) does: a template that writes BOS itself
    # (Gemma 3) must not get a second one from the tokenizer
    bos = processor.tokenizer.bos_token
    kw = {"add_special_tokens": False} if bos and prompt.startswith(bos) else {}
    return processor(text=[prompt], return_tensors="pt", **visual, **kw)
