"""Tiny random models, built from a config with the locally trained tokenizer.

No hub: the tokenizer and processor come from assets/build_demo_model.py,
the weights are random (seeded). Each builder saves a checkpoint folder that
loads through AutoModelForImageTextToText / AutoProcessor like any other.
"""
from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


@lru_cache(maxsize=1)
def demo_builder():
    spec = importlib.util.spec_from_file_location("build_demo_model", ROOT / "assets" / "build_demo_model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def build_qwen(folder: Path, family: str = "qwen2_5_vl", seed: int = 0) -> Path:
    """A ~1M-parameter Qwen2-VL or Qwen2.5-VL with random weights, saved to `folder`."""
    from transformers import (GenerationConfig, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration,
                              Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor)
    b = demo_builder()
    tok = b.build_tokenizer()
    proc = b.build_processor(tok)
    ids = b.special_ids(tok)
    pad, eos = ids["<|endoftext|>"], ids["<|im_end|>"]
    text = dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                rope_parameters=dict(rope_type="default", rope_theta=1e4, mrope_section=[2, 3, 3]),
                bos_token_id=pad, eos_token_id=eos, pad_token_id=pad)
    vision = dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=14,
                  spatial_merge_size=2, temporal_patch_size=2)
    tokens = dict(image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                  vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    torch.manual_seed(seed)
    if family == "qwen2_5_vl":
        cfg = Qwen2_5_VLConfig(text_config=text, vision_config=dict(
            vision, out_hidden_size=64, window_size=112, fullatt_block_indexes=[0]), **tokens)
        model = Qwen2_5_VLForConditionalGeneration(cfg)
    elif family == "qwen2_vl":
        cfg = Qwen2VLConfig(text_config=text, vision_config=dict(
            depth=1, embed_dim=32, hidden_size=64, mlp_ratio=2, num_heads=2, patch_size=14,
            spatial_merge_size=2, temporal_patch_size=2), **tokens)
        model = Qwen2VLForConditionalGeneration(cfg)
        proc = Qwen2VLProcessor(image_processor=proc.image_processor, video_processor=proc.video_processor,
                                tokenizer=tok, chat_template=proc.chat_template)
    else:
        raise ValueError(family)
    model.generation_config = GenerationConfig(bos_token_id=pad, eos_token_id=eos, pad_token_id=pad)
    model.save_pretrained(folder)
    proc.save_pretrained(folder)
    return folder
