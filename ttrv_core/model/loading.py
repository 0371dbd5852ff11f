"""Load a VLM (+4-bit, +LoRA on the language model only) behind one `Policy`.

Model-family differences come from the table in families.py and nowhere else.

Precision: "auto" is 4-bit NF4 with double quantization (bf16 compute) on CUDA
and fp32 on CPU; "bf16" and "fp32" load unquantized. "4bit" on CPU runs
through bitsandbytes' CPU kernels (fp32 compute), with the AVX512-BF16 fast
path switched off (DESIGN.md section 5).

A process that runs one model after another (the app) keeps the loaded base model
between runs (kept_base.KeptBase): each run gets a fresh adapter on it.

Loading errors become ModelLoadError with a message that says what to do
(load_checks.py, errors.py); nothing here branches on a model's name.

Code shipped inside a checkpoint (trust_remote_code) never runs unless the
caller passes trust_remote_code=True; the app does so only when the operator
sets TTRV_TRUST_REMOTE_CODE=1 (remote_code_allowed), and never in public mode.
"""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager, nullcontext

import torch

from ttrv_core.errors import ModelLoadError, explain_oom
from ttrv_core.model.families import Family
from ttrv_core.model.kept_base import KeptBase
from ttrv_core.model.load_checks import TRUST_REMOTE_CODE_ENV, check_config, load_errors
from ttrv_core.model.policy import Policy

__all__ = ["ModelLoadError", "Policy", "load_policy", "remote_code_allowed", "save_adapter"]


def remote_code_allowed() -> bool:
    """True only when the operator set TTRV_TRUST_REMOTE_CODE=1 (custom code runs arbitrary Python)."""
    return os.environ.get(TRUST_REMOTE_CODE_ENV, "").strip() == "1"


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision == "auto":
        return "4bit" if device.type == "cuda" else "fp32"
    return precision


def load_policy(model_id: str, precision: str = "auto", device: str | None = None,
                lora_r: int = 16, lora_alpha: int = 32, seed: int = 0,
                adapter: str | None = None, *, max_pixels: int | None = None,
                trust_remote_code: bool = False, keep: KeptBase | None = None, fsdp: bool = False,
                only_model: bool = False) -> Policy:
    """Load model + processor, quantize if asked, wrap the LM in a fresh LoRA adapter
    (or load a saved one from `adapter`).

    model_id: hub id or local folder. max_pixels: image size limit (default: the
    family's). trust_remote_code: run code shipped with the checkpoint (refused
    by default). keep: reuse the base model loaded by an earlier call with the same
    model (a local folder: with the same files), precision, device and trust (KeptBase); the adapter
    is new all the same. fsdp: a 4-bit base stores its packed weights in the compute dtype, as FSDP
    needs (_load_kwargs).
    only_model: the process loads no other model (the CLI): an unquantized one is then loaded without
    importing bitsandbytes (_bitsandbytes_hidden)."""
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    prec = resolve_precision(precision, dev)
    key = KeptBase.key(model_id, prec, str(dev), trust_remote_code, fsdp) if keep is not None else None
    loaded = keep.take(key) if keep is not None else None
    with _bitsandbytes_hidden() if only_model and prec != "4bit" else nullcontext():
        if loaded is None:
            loaded = _load_base(model_id, prec, dev, trust_remote_code, fsdp)
            if keep is not None:
                keep.put(key, loaded)
        base, processor, family = loaded
        return _wrap(base, processor, family, dev, prec, lora_r, lora_alpha, seed, adapter,
                     family.max_pixels if max_pixels is None else max_pixels, keep)


def import_peft() -> None:
    """Import peft now (with bitsandbytes where it is installed): a long-lived process (the app) does
    at startup, so that its first run does not wait for it in load_policy."""
    import peft  # noqa: F401


_PEFT_WITHOUT_BNB = False
"""True once peft was imported with bitsandbytes hidden: its 4-bit LoRA layers are then missing."""


@contextmanager
def _bitsandbytes_hidden():
    """peft imports bitsandbytes whenever it is installed: on a CPU that takes ~2 s of a CLI run
    (bench/RESULTS.md; bitsandbytes registers its kernels and pulls in torch's compiler) and prints a warning about a
    missing `kernels` package, for a model that never uses it. While peft is imported for the first
    time, bitsandbytes is hidden (None in sys.modules: find_spec says it is not there), so peft
    leaves its 4-bit layers out for the life of the process: only a process that loads one
    unquantized model asks for this (load_policy's only_model), and a 4-bit load after it is refused
    (_load_kwargs)."""
    global _PEFT_WITHOUT_BNB
    if "peft" in sys.modules or "bitsandbytes" in sys.modules:
        yield
        return
    sys.modules["bitsandbytes"] = None
    try:
        yield
    finally:
        if "bitsandbytes" in sys.modules and sys.modules["bitsandbytes"] is None:
            del sys.modules["bitsandbytes"]
        _PEFT_WITHOUT_BNB = "peft" in sys.modules


def _load_base(model_id: str, prec: str, dev: torch.device, trust_remote_code: bool, fsdp: bool = False):
    """(base model with frozen weights, processor, family)."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    family = check_config(model_id, trust_remote_code)
    kw = _load_kwargs(family, prec, dev, fsdp)
    with explain_oom(f"loading '{model_id}'", precision=prec), load_errors(model_id):
        base = AutoModelForImageTextToText.from_pretrained(model_id, trust_remote_code=trust_remote_code, **kw)
        if prec != "4bit":
            base.to(dev)
    with load_errors(model_id):
        processor = AutoProcessor.from_pretrained(model_id, trust_remote_code=trust_remote_code)
    for attr, most in family.image_limits:
        if getattr(processor.image_processor, attr, None) is not None:
            setattr(processor.image_processor, attr, min(getattr(processor.image_processor, attr), most))
    videos = getattr(processor, "video_processor", None)
    if videos is not None and hasattr(videos, "cap_pixels_per_frame") and videos.cap_pixels_per_frame is None:
        # Qwen3-VL: the reference's per-frame pixel cap (qwen-vl-utils; transformers' coming default),
        # not the uncapped frames transformers still uses unless told, with a warning on every load
        videos.cap_pixels_per_frame = True
    if prec == "4bit" and dev.type == "cpu":
        _disable_avx512bf16(base)
    for p in base.parameters():
        p.requires_grad_(False)
    return base, processor, family


def _wrap(base, processor, family: Family, dev: torch.device, prec: str, lora_r: int, lora_alpha: int, seed: int,
          adapter: str | None, max_pixels: int, keep: KeptBase | None) -> Policy:
    """The base in a fresh LoRA adapter (initialised from `seed`) or a saved one, as a Policy."""
    from peft import LoraConfig, PeftModel, get_peft_model

    torch.manual_seed(seed)
    if adapter:
        model = PeftModel.from_pretrained(base, adapter, is_trainable=True)
    else:
        model = get_peft_model(base, LoraConfig(
            r=lora_r, lora_alpha=lora_alpha, lora_dropout=0.0, target_modules=family.lora_targets))
    if keep is not None:
        keep.wrapped(model)
    tok = processor.tokenizer
    eos = _eos_ids(base, tok)
    lm = f".{family.lm_module}."
    vision_trainable = any(p.requires_grad and lm not in n for n, p in model.named_parameters())
    vocab = base.get_output_embeddings().weight.shape[0]
    return Policy(model=model, base=base, processor=processor, family=family, device=dev,
                  eos_ids=torch.tensor(sorted(eos), device=dev),
                  suppress=_suppress_mask(tok, eos, vocab).to(dev),
                  pad_id=tok.pad_token_id if tok.pad_token_id is not None else min(eos),
                  max_pixels=max_pixels, precision=prec,
                  autocast_dtype=torch.bfloat16 if dev.type == "cuda" and prec in ("4bit", "bf16") else None,
                  vision_trainable=vision_trainable)


def save_adapter(policy: Policy, folder: str) -> None:
    """The LoRA adapter in peft's format: PeftModel.from_pretrained(base, folder) loads it
    onto the base model anywhere (or load_policy(..., adapter=folder))."""
    policy.model.save_pretrained(folder, state_dict=policy.gathered)   # None: the model's own


def _load_kwargs(family: Family, prec: str, dev: torch.device, fsdp: bool = False) -> dict:
    if prec in ("bf16", "fp32"):
        return {"dtype": {"bf16": torch.bfloat16, "fp32": torch.float32}[prec]}
    if prec != "4bit":
        raise ModelLoadError(f"precision must be auto, 4bit, bf16 or fp32, got '{prec}'")
    if _PEFT_WITHOUT_BNB:
        raise ModelLoadError("this process loaded an unquantized model with only_model=True, so peft has no "
                             "4-bit layers here; load a 4-bit model in a new process")
    try:
        import bitsandbytes  # noqa: F401
        from transformers import BitsAndBytesConfig
    except ImportError as e:
        raise ModelLoadError("4-bit loading needs bitsandbytes (`pip install bitsandbytes`); "
                             "or choose bf16 / fp32") from e
    if dev.type not in ("cuda", "cpu"):
        raise ModelLoadError(f"4-bit loading runs on CUDA or CPU, not {dev.type}; choose bf16 or fp32")
    # CPU: compute in fp32, as the unquantized CPU path does (only the weights are 4-bit)
    compute = torch.bfloat16 if dev.type == "cuda" else torch.float32
    # FSDP shards floating-point tensors only: under FSDP the packed 4-bit weights are stored in the
    # compute dtype, the dtype the model is loaded in (peft's FSDP-QLoRA recipe); else bnb's uint8
    storage = compute if fsdp else torch.uint8
    return {
        "quantization_config": BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute, bnb_4bit_quant_storage=storage,
            llm_int8_skip_modules=list(family.keep_full_precision)),
        "dtype": compute,
        "device_map": {"": dev.index or 0} if dev.type == "cuda" else {"": "cpu"},
    }


def _disable_avx512bf16(model: torch.nn.Module) -> None:
    """bitsandbytes 0.50 on AVX512-BF16 CPUs repacks 4-bit weights during no-grad eval
    forwards (sampling); the next training forward of a layer with a bias then fails
    ("a view of a leaf Variable ... in-place"). The plain CPU path has no such state."""
    for m in model.modules():
        if hasattr(m, "support_avx512bf16_for_cpu"):
            m.support_avx512bf16_for_cpu = False


# --------------------------------------------------------------------------- decoding constants

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

