"""Tiny random models, built from a config with the locally trained tokenizer.

No hub: the tokenizer is the BPE of assets/build_demo_model.py with each
family's special tokens added, the processor is built from its classes, the
weights are random (seeded). Each builder saves a checkpoint folder that loads
through AutoModelForImageTextToText / AutoProcessor like any other. Every model
is 0.1-0.25M parameters (2 LM layers of width 64, 1 vision layer of width 32)
with 4-72 image tokens, so a family's whole TTRV path runs in a second or two
on a laptop CPU. Image sizes are set small in each processor, but every
processor keeps its family's way of cutting an image (Qwen's dynamic grid,
InternVL's tiles, Idefics3's split + global view, OneVision's anyres grid).

    BUILDERS[model_type](folder) -> folder     every config.model_type in families.FAMILIES
    TinyModels(root)[model_type] -> folder     built on first use, then reused
"""
from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path
from typing import Callable

import torch

ROOT = Path(__file__).resolve().parents[1]

# the language model of every tiny family: 2 layers, width 64 (head_dim 16)
TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=1024)
VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
ROPE = dict(rope_type="default", rope_theta=1e4)


@lru_cache(maxsize=1)
def demo_builder():
    spec = importlib.util.spec_from_file_location("build_demo_model", ROOT / "assets" / "build_demo_model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@lru_cache(maxsize=1)
def _bpe_json() -> str:
    """The demo tokenizer (byte-level BPE + Qwen specials), trained once per process."""
    return demo_builder().build_tokenizer().backend_tokenizer.to_str()


def chat_template(user: str, image: str, end: str, assistant: str, bos: str = "",
                  role: str = "message['role']", video: str = "") -> str:
    """A one-turn-per-message template in a family's own markup, with no system turn.

    user: text that opens a turn ('{role}' becomes the Jinja expression `role`),
    image: what an image item becomes, end: what closes a turn, assistant: the
    generation prompt, video: what a video item becomes (families whose processors take video)."""
    opener = user.replace("{role}", "' + " + role + " + '")
    return (
        "{{- '" + bos + "' -}}"
        "{%- for message in messages -%}"
        "{{- '" + opener + "' -}}"
        "{%- if message['content'] is string -%}{{- message['content'] -}}"
        "{%- else -%}{%- for content in message['content'] -%}"
        "{%- if content['type'] == 'image' -%}{{- '" + image + "' -}}"
        "{%- elif content['type'] == 'video' -%}{{- '" + video + "' -}}"
        "{%- elif content['type'] == 'text' -%}{{- content['text'] -}}"
        "{%- endif -%}{%- endfor -%}{%- endif -%}"
        "{{- '" + end + "' -}}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{- '" + assistant + "' -}}{%- endif -%}"
    )


def family_tokenizer(specials: list[str], eos: str, pad: str, template: str, bos: str | None = None,
                     named: dict[str, str] | None = None):
    """The demo BPE plus `specials` (appended as special tokens); `named` become
    tokenizer attributes (tok.image_token, tok.image_token_id, ...) as processors expect.
    With a `bos`, the tokenizer prepends it to every text (as Llama's and Gemma's do)."""
    from tokenizers import Tokenizer, processors
    from transformers import PreTrainedTokenizerFast
    raw = Tokenizer.from_str(_bpe_json())
    raw.add_special_tokens(specials)
    if bos is not None:
        raw.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, raw.token_to_id(bos))])
    return PreTrainedTokenizerFast(tokenizer_object=raw, eos_token=eos, pad_token=pad, bos_token=bos,
                                   unk_token=None, extra_special_tokens=named or {}, chat_template=template,
                                   padding_side="left")


def _save(model, processor, tok, folder: Path, eos: str, pad: str, bos: str | None = None) -> Path:
    from transformers import GenerationConfig
    ids = dict(eos_token_id=tok.convert_tokens_to_ids(eos), pad_token_id=tok.convert_tokens_to_ids(pad))
    if bos is not None:
        ids["bos_token_id"] = tok.convert_tokens_to_ids(bos)
    model.generation_config = GenerationConfig(**ids)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def _text(tok, **kw) -> dict:
    return dict(TEXT, vocab_size=len(tok), pad_token_id=tok.pad_token_id, **kw)


# --------------------------------------------------------------------------- Qwen-VL

def build_qwen(folder: Path, family: str = "qwen2_5_vl", seed: int = 0) -> Path:
    """A Qwen2-VL, Qwen2.5-VL or Qwen3-VL with random weights, saved to `folder`.

    The demo model's tokenizer and 112x112 processor (16 image tokens; Qwen3-VL:
    patch 16, 128x128 -> 16 image tokens)."""
    from transformers import (
        GenerationConfig,
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLProcessor,
    )
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
    elif family == "qwen3_vl":
        from transformers import (
            Qwen2VLImageProcessor,
            Qwen3VLConfig,
            Qwen3VLForConditionalGeneration,
            Qwen3VLProcessor,
            Qwen3VLVideoProcessor,
        )
        text = dict(text, head_dim=16, rope_parameters=dict(
            rope_type="default", rope_theta=1e4, mrope_section=[2, 3, 3], mrope_interleaved=True))
        cfg = Qwen3VLConfig(text_config=text, vision_config=dict(
            depth=1, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=16, spatial_merge_size=2,
            temporal_patch_size=2, out_hidden_size=64, num_position_embeddings=16,
            deepstack_visual_indexes=[0]), **tokens)
        model = Qwen3VLForConditionalGeneration(cfg)
        size = dict(size={"shortest_edge": 128 * 128, "longest_edge": 128 * 128}, patch_size=16, merge_size=2,
                    temporal_patch_size=2)
        proc = Qwen3VLProcessor(image_processor=Qwen2VLImageProcessor(**size),
                                video_processor=Qwen3VLVideoProcessor(**size),
                                tokenizer=tok, chat_template=proc.chat_template)
    else:
        raise ValueError(family)
    model.generation_config = GenerationConfig(bos_token_id=pad, eos_token_id=eos, pad_token_id=pad)
    model.save_pretrained(folder)
    proc.save_pretrained(folder)
    return folder


# --------------------------------------------------------------------------- InternVL3 (-hf)

def build_internvl(folder: Path, seed: int = 0) -> Path:
    """InternVL (Qwen2 LM): 56x56 tiles of 14-pixel patches, pixel-shuffled to 4 tokens a tile;
    up to 2 tiles + a thumbnail per image (crop_to_patches, as the real processor)."""
    from transformers import (
        GotOcr2ImageProcessor,
        InternVLConfig,
        InternVLForConditionalGeneration,
        InternVLProcessor,
        InternVLVideoProcessor,
    )
    specials = ["<img>", "</img>", "<IMG_CONTEXT>", "<video>"]
    tok = family_tokenizer(
        specials, eos="<|im_end|>", pad="<|endoftext|>",
        template=chat_template("<|im_start|>{role}\n", "<IMG_CONTEXT>\n", "<|im_end|>\n",
                               "<|im_start|>assistant\n", video="<video>\n"),
        named=dict(start_image_token="<img>", end_image_token="</img>", context_image_token="<IMG_CONTEXT>",
                   video_token="<video>"))
    torch.manual_seed(seed)
    cfg = InternVLConfig(
        vision_config=dict(VISION, image_size=[56, 56], patch_size=[14, 14]),
        text_config=dict(_text(tok, rope_parameters=ROPE), model_type="qwen2"),
        image_token_id=tok.context_image_token_id, image_seq_length=4, downsample_ratio=0.5,
        tie_word_embeddings=False)
    model = InternVLForConditionalGeneration(cfg)
    size = {"height": 56, "width": 56}
    proc = InternVLProcessor(
        image_processor=GotOcr2ImageProcessor(size=size, crop_to_patches=True, min_patches=1, max_patches=2),
        video_processor=InternVLVideoProcessor(size=size), tokenizer=tok, image_seq_length=4,
        chat_template=tok.chat_template)
    return _save(model, proc, tok, folder, "<|im_end|>", "<|endoftext|>")


# --------------------------------------------------------------------------- Idefics3 / SmolVLM

def _idefics_tokens() -> list[str]:
    rows = [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]
    return ["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>", "<video>"] + rows


def build_idefics3(folder: Path, seed: int = 0, smolvlm: bool = False) -> Path:
    """Idefics3 or SmolVLM (Llama LM called `text_model`): images split into 32x32 tiles
    (up to 2x2 + the global image), 8-pixel patches, pixel-shuffled to 4 tokens a tile."""
    import transformers as tr
    tok = family_tokenizer(
        _idefics_tokens(), eos="<end_of_utterance>", pad="<|endoftext|>",
        template=chat_template("<|im_start|>{role}:", "<image>", "<end_of_utterance>\n", "Assistant:",
                               role="(message['role'] | capitalize)"),
        named=dict(image_token="<image>", fake_image_token="<fake_token_around_image>",
                   global_image_token="<global-img>", end_of_utterance_token="<end_of_utterance>",
                   video_token="<video>"))
    torch.manual_seed(seed)
    prefix = "SmolVLM" if smolvlm else "Idefics3"
    cfg = getattr(tr, f"{prefix}Config")(
        vision_config=dict(VISION, image_size=32, patch_size=8),
        text_config=dict(_text(tok, rope_parameters=ROPE), model_type="llama"),
        image_token_id=tok.image_token_id, scale_factor=2)
    model = getattr(tr, f"{prefix}ForConditionalGeneration")(cfg)
    image_kw = dict(do_image_splitting=True, size={"longest_edge": 64}, max_image_size={"longest_edge": 32})
    image_processor = getattr(tr, f"{prefix}ImageProcessor")(**image_kw)
    if smolvlm:
        proc = tr.SmolVLMProcessor(image_processor=image_processor, tokenizer=tok, image_seq_len=4,
                                   video_processor=tr.SmolVLMVideoProcessor(**image_kw),
                                   chat_template=tok.chat_template)
    else:
        proc = tr.Idefics3Processor(image_processor=image_processor, tokenizer=tok, image_seq_len=4,
                                    chat_template=tok.chat_template)
    return _save(model, proc, tok, folder, "<end_of_utterance>", "<|endoftext|>")


# --------------------------------------------------------------------------- LLaVA 1.5 / OneVision

def build_llava(folder: Path, seed: int = 0) -> Path:
    """LLaVA-1.5 (CLIP tower, Llama LM): 32x32 images, 8-pixel patches -> 16 image tokens."""
    from transformers import CLIPImageProcessor, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor
    tok = family_tokenizer(["<s>", "</s>", "<image>"], eos="</s>", pad="<|endoftext|>", bos="<s>",
                           template=chat_template("{role}: ", "<image>\n", " ", "ASSISTANT:",
                                                  role="(message['role'] | upper)"),
                           named=dict(image_token="<image>"))
    torch.manual_seed(seed)
    cfg = LlavaConfig(
        vision_config=dict(VISION, model_type="clip_vision_model", image_size=32, patch_size=8, projection_dim=32),
        text_config=dict(_text(tok, rope_parameters=ROPE), model_type="llama"),
        image_token_index=tok.image_token_id, image_seq_length=16, vision_feature_layer=-1,
        vision_feature_select_strategy="default")
    model = LlavaForConditionalGeneration(cfg)
    proc = LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        tokenizer=tok, patch_size=8, vision_feature_select_strategy="default", num_additional_image_tokens=1,
        chat_template=tok.chat_template)
    return _save(model, proc, tok, folder, "</s>", "<|endoftext|>", bos="<s>")


def build_llava_onevision(folder: Path, seed: int = 0) -> Path:
    """LLaVA-OneVision (SigLIP tower, Qwen2 LM): 32x32 base tile + anyres grid (up to 2x2 tiles)."""
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionImageProcessor,
        LlavaOnevisionProcessor,
        LlavaOnevisionVideoProcessor,
    )
    tok = family_tokenizer(["<image>", "<video>"], eos="<|im_end|>", pad="<|endoftext|>",
                           template=chat_template("<|im_start|>{role} ", "<image>\n", "<|im_end|>\n",
                                                  "<|im_start|>assistant\n", video="<video>\n"),
                           named=dict(image_token="<image>", video_token="<video>"))
    pinpoints = [[32, 32], [32, 64], [64, 32], [64, 64]]
    torch.manual_seed(seed)
    cfg = LlavaOnevisionConfig(
        vision_config=dict(VISION, model_type="siglip_vision_model", image_size=32, patch_size=8),
        text_config=dict(_text(tok, rope_parameters=ROPE), model_type="qwen2"),
        image_token_index=tok.image_token_id, video_token_index=tok.video_token_id,
        vision_feature_select_strategy="full", vision_feature_layer=-1, image_grid_pinpoints=pinpoints)
    model = LlavaOnevisionForConditionalGeneration(cfg)
    size = {"height": 32, "width": 32}
    proc = LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(size=size, image_grid_pinpoints=pinpoints),
        video_processor=LlavaOnevisionVideoProcessor(size=size), tokenizer=tok, num_image_tokens=16,
        vision_feature_select_strategy="full", chat_template=tok.chat_template)
    return _save(model, proc, tok, folder, "<|im_end|>", "<|endoftext|>")


# --------------------------------------------------------------------------- Gemma 3

def build_gemma3(folder: Path, seed: int = 0) -> Path:
    """Gemma 3 (SigLIP tower, Gemma3 LM with sliding + global layers): 32x32 images,
    16 patches average-pooled to 4 soft tokens, attended bidirectionally."""
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3ImageProcessor, Gemma3Processor
    specials = ["<bos>", "<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<end_of_image>",
                "<image_soft_token>"]
    tok = family_tokenizer(
        specials, eos="<end_of_turn>", pad="<|endoftext|>", bos="<bos>",
        template=chat_template("<start_of_turn>{role}\n", "<start_of_image>", "<end_of_turn>\n",
                               "<start_of_turn>model\n", bos="<bos>",
                               role="('model' if message['role'] == 'assistant' else message['role'])"),
        named=dict(boi_token="<start_of_image>", eoi_token="<end_of_image>", image_token="<image_soft_token>"))
    torch.manual_seed(seed)
    text = _text(tok, head_dim=16, query_pre_attn_scalar=16, sliding_window=8,
                 layer_types=["sliding_attention", "full_attention"],
                 bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    cfg = Gemma3Config(
        text_config=text, vision_config=dict(VISION, model_type="siglip_vision_model", image_size=32, patch_size=8,
                                             vision_use_head=False),
        mm_tokens_per_image=4, boi_token_index=tok.boi_token_id, eoi_token_index=tok.eoi_token_id,
        image_token_index=tok.image_token_id)
    model = Gemma3ForConditionalGeneration(cfg)
    proc = Gemma3Processor(image_processor=Gemma3ImageProcessor(size={"height": 32, "width": 32}),
                           tokenizer=tok, image_seq_length=4, chat_template=tok.chat_template)
    return _save(model, proc, tok, folder, "<end_of_turn>", "<|endoftext|>", bos="<bos>")


BUILDERS: dict[str, Callable[[Path], Path]] = {
    "qwen2_5_vl": lambda f: build_qwen(f, "qwen2_5_vl"),
    "qwen2_vl": lambda f: build_qwen(f, "qwen2_vl"),
    "qwen3_vl": lambda f: build_qwen(f, "qwen3_vl"),
    "internvl": build_internvl,
    "idefics3": build_idefics3,
    "smolvlm": lambda f: build_idefics3(f, smolvlm=True),
    "llava": build_llava,
    "llava_onevision": build_llava_onevision,
    "gemma3": build_gemma3,
}
"""config.model_type -> builder of a tiny checkpoint of that architecture."""


class TinyModels(dict):
    """model_type -> checkpoint folder under `root`, built on first access."""

    def __init__(self, root: Path):
        super().__init__()
        self.root = Path(root)

    def __missing__(self, model_type: str) -> Path:
        # an ImportError (transformers without the architecture, SmolVLM without num2words) is an
        # error: a skip here would quietly drop a family's tests
        self[model_type] = BUILDERS[model_type](self.root / model_type)
        return self[model_type]
