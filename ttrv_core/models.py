"""Load a VLM (+4-bit, +LoRA on the language model only) behind one `Policy`.

Model-family differences live in the FAMILIES table and nowhere else: how
positions are built (Qwen's 3D mrope vs plain 1D), where the language model's
projections are (LoRA targets), which modules stay unquantized, and whether the
shared-prefix path is proven for the family.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

LM_PROJ = "(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message says why and what to do."""


@dataclass(frozen=True)
class Family:
    name: str
    model_types: tuple[str, ...]
    """config.model_type values of this family."""
    lm_module: str
    """Name of the language-model submodule; LoRA targets live under it only."""
    mrope: bool
    """3D (temporal, height, width) rotary positions from get_rope_index (Qwen-VL)."""
    keep_full_precision: tuple[str, ...]
    """Module prefixes left unquantized in 4-bit (vision tower, projector, lm_head)."""
    shared_prefix: bool
    """The shared-prefix path is proven exact for this family (tests/test_shared_prefix.py)."""

    @property
    def lora_targets(self) -> str:
        # peft matches a str target as a full regex over module names
        return rf".*{self.lm_module}.*\.{LM_PROJ}"


FAMILIES: tuple[Family, ...] = (
    Family("qwen2_5_vl", ("qwen2_5_vl",), "language_model", True,
           ("model.visual", "lm_head"), True),
    Family("qwen2_vl", ("qwen2_vl",), "language_model", True,
           ("model.visual", "lm_head"), True),
)


def family_of(model_type: str) -> Family:
    for f in FAMILIES:
        if model_type in f.model_types:
            return f
    names = ", ".join(t for f in FAMILIES for t in f.model_types)
    raise ModelLoadError(f"architecture '{model_type}' is not supported; supported: {names}")


@dataclass
class Policy:
    """A loaded model with its LoRA adapter, processor and decoding constants."""
    model: torch.nn.Module  # peft PeftModel over the HF model
    base: torch.nn.Module   # the HF *ForConditionalGeneration inside it
    processor: object
    family: Family
    device: torch.device
    eos_ids: torch.Tensor   # (E,) token ids that end an answer
    suppress: torch.Tensor  # (V,) bool: tokens never sampled (special tokens but EOS)
    pad_id: int

    @property
    def tokenizer(self):
        return self.processor.tokenizer


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision == "auto":
        return "4bit" if device.type == "cuda" else "fp32"
    return precision


def load_policy(model_id: str, precision: str = "auto", device: str | None = None,
                lora_r: int = 16, lora_alpha: int = 32, seed: int = 0,
                adapter: str | None = None) -> Policy:
    """Load model + processor, quantize if asked, wrap the LM in a fresh LoRA adapter
    (or load a saved one from `adapter`)."""
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    prec = resolve_precision(precision, dev)
    try:
        config = AutoConfig.from_pretrained(model_id)
    except (OSError, ValueError) as e:
        where = "folder" if os.path.isdir(model_id) else "model id"
        raise ModelLoadError(f"could not read the config of {where} '{model_id}': {e}") from e
    family = family_of(config.model_type)
    kw: dict = {}
    if prec == "4bit":
        if dev.type != "cuda":
            raise ModelLoadError("4-bit loading needs a CUDA GPU here; choose fp32 on CPU")
        from transformers import BitsAndBytesConfig
        kw["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16, llm_int8_skip_modules=list(family.keep_full_precision))
        kw["dtype"] = torch.bfloat16
        kw["device_map"] = {"": dev.index or 0}
    else:
        kw["dtype"] = {"bf16": torch.bfloat16, "fp32": torch.float32}[prec]
    base = AutoModelForImageTextToText.from_pretrained(model_id, **kw)
    if prec != "4bit":
        base.to(dev)
    processor = AutoProcessor.from_pretrained(model_id)
    for p in base.parameters():
        p.requires_grad_(False)
    torch.manual_seed(seed)
    if adapter:
        model = PeftModel.from_pretrained(base, adapter, is_trainable=True)
    else:
        model = get_peft_model(base, LoraConfig(
            r=lora_r, lora_alpha=lora_alpha, lora_dropout=0.0, target_modules=family.lora_targets))
    model.to(dev) if prec != "4bit" else None
    tok = processor.tokenizer
    eos = _eos_ids(base, tok)
    vocab = base.get_output_embeddings().weight.shape[0]
    return Policy(model=model, base=base, processor=processor, family=family, device=dev,
                  eos_ids=torch.tensor(sorted(eos), device=dev),
                  suppress=_suppress_mask(tok, eos, vocab).to(dev),
                  pad_id=tok.pad_token_id if tok.pad_token_id is not None else min(eos))


def _eos_ids(base, tok) -> set[int]:
    ids = base.generation_config.eos_token_id
    ids = set(ids if isinstance(ids, (list, tuple)) else [ids] if ids is not None else [])
    if tok.eos_token_id is not None:
        ids.add(tok.eos_token_id)
    if not ids:
        raise ModelLoadError("the model defines no end-of-sequence token")
    return ids


def _suppress_mask(tok, eos: set[int], vocab: int) -> torch.Tensor:
    """Special tokens but EOS, and padded vocabulary rows beyond the tokenizer.

    Sampling <|image_pad|> breaks the re-forward ("Image features and image
    tokens do not match", DESIGN.md section 5)."""
    mask = torch.zeros(vocab, dtype=torch.bool)
    special = set(tok.all_special_ids)
    special |= {i for i, t in getattr(tok, "added_tokens_decoder", {}).items() if t.special}
    for i in special - eos:
        if i < vocab:
            mask[i] = True
    if len(tok) < vocab:
        mask[len(tok):] = True
    return mask
