"""Fused LoRA projections: the base layer and its LoRA branch in one autograd function.

peft computes a LoRA projection as base(x) + lora_B(lora_A(dropout(x))) * scaling.
With a 4-bit base that is bitsandbytes' Python layers, a defensive clone, dtype
casts of x, A and B under autocast, two matmuls, a multiply and an add, and about
as many autograd nodes, for each of the 7 projections of every layer. A TTRV update
on one packed row is launch-bound (bench/RESULTS.md): the number of operations, not
the arithmetic, is its cost. Here one Function does

    forward:   W = dequantize(weight) (4-bit) or weight;   u = x A^T
               y = x W^T + bias + s u B^T                        (one addmm for the LoRA term)
    backward:  gx = g W + s (g B) A;   gA = s (g B)^T x;   gB = s g^T u

W is dequantized again in backward, as bitsandbytes does, never kept. It is used
only where it computes what peft computes: vanilla LoRA, one active adapter, no
dropout, not merged, adapters enabled, an nn.Linear or bitsandbytes Linear4bit
base, and consistent dtypes (autocast, or everything in one dtype); anything else
goes to peft's own forward (the adapter switched off for the reference pass, a
single-row 4-bit decode that bitsandbytes serves with its gemv kernel, ...).
Same values and gradients as peft in fp32 (tests/test_lora.py).

Measured on an H100 (bench/RESULTS.md, runs 6 and 8; 3B shape, 4-bit): no gain
beyond run-to-run noise (update 0.34 s fused vs 0.40 s peft in one run, 0.47 vs
0.44 s in another; sampling 0.52 vs 0.49 s), LoRA gradients 1.2-1.9% apart from
peft's in bf16 (log-probs identical). The launch count it saves is small next to
the rest of a layer. It is the code the GPU numbers were measured with; `ENABLED
= False` gives peft's forward everywhere.
"""
from __future__ import annotations

import torch
from torch import nn

from .mixins import add_mixin, remove_mixin

ENABLED = True
"""Fuse the LoRA layers of models loaded by models.load_policy (False: peft's forward everywhere)."""


def fuse(model: nn.Module) -> int:
    """Give every peft LoRA Linear / Linear4bit in `model` the fused forward (in place: the
    module's class becomes a subclass of its own, mixins.py). Returns how many were fused."""
    n = 0
    for module in model.modules():
        cls = type(module)
        if cls.__name__ in ("Linear", "Linear4bit") and cls.__module__.startswith("peft.tuners.lora"):
            add_mixin(module, _Fused)
            n += 1
    return n


def unfuse(model: nn.Module) -> None:
    for module in model.modules():
        remove_mixin(module, _Fused)


class _Fused:
    """Mixin over a peft LoRA layer class: the fused forward where it applies."""

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        plan = None if args or kwargs else _plan(self, x)
        if plan is None:
            return super().forward(x, *args, **kwargs)
        return _LoRALinear.apply(x, *plan)


def _plan(layer, x: torch.Tensor):
    """(A, B, weight, bias, scale, dtype, quant_state) for the fused function, or None."""
    if layer.disable_adapters or layer.merged or len(layer.active_adapters) != 1:
        return None
    name = layer.active_adapters[0]
    if name not in layer.lora_A or name in getattr(layer, "lora_variant", {}):
        return None
    if not isinstance(layer.lora_dropout[name], nn.Identity):
        return None
    a, b = layer.lora_A[name], layer.lora_B[name]
    if a.bias is not None or b.bias is not None:
        return None
    base = layer.get_base_layer()
    quant_state = None
    if type(base) is nn.Linear:
        weight = base.weight
        dtype = weight.dtype
    elif type(base).__name__ == "Linear4bit" and type(base).__module__.startswith("bitsandbytes"):
        weight = base.weight
        quant_state = getattr(weight, "quant_state", None)
        if quant_state is None:
            return None
        if not torch.is_grad_enabled() and x.numel() == x.shape[-1]:
            return None  # one row: bitsandbytes' gemv kernel reads the packed weight directly
        dtype = base.compute_dtype or x.dtype
    else:
        return None
    dev = x.device.type
    if torch.is_autocast_enabled(dev):
        dtype = torch.get_autocast_dtype(dev)
    elif not (x.dtype == a.weight.dtype == b.weight.dtype == dtype):
        return None  # mixed dtypes without autocast: peft's casts decide, keep them
    return a.weight, b.weight, weight, base.bias, float(layer.scaling[name]), dtype, quant_state


def _dense(weight: torch.Tensor, quant_state, dtype: torch.dtype) -> torch.Tensor:
    """(out, in) base weight in `dtype`: dequantized when 4-bit."""
    if quant_state is None:
        return weight.to(dtype)
    import bitsandbytes.functional as F
    return F.dequantize_4bit(weight, quant_state).to(dtype)


class _LoRALinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, lora_a, lora_b, weight, bias, scale, dtype, quant_state):
        with torch.autocast(x.device.type, enabled=False):
            x2 = x.reshape(-1, x.shape[-1]).to(dtype)
            a, b = lora_a.to(dtype), lora_b.to(dtype)
            w = _dense(weight, quant_state, dtype)
            u = x2 @ a.t()                                              # (T, r)
            y = torch.addmm(bias.to(dtype), x2, w.t()) if bias is not None else x2 @ w.t()
            y.addmm_(u, b.t(), alpha=scale)
        ctx.save_for_backward(x2, u, a, b, weight)
        ctx.meta = (scale, dtype, quant_state, x.shape, x.dtype, lora_a.dtype, lora_b.dtype, bias is not None)
        out = y.view(*x.shape[:-1], -1)
        # peft + bitsandbytes return the input's dtype for a 4-bit base (fp32 stays fp32)
        return out.to(x.dtype) if quant_state is not None else out

    @staticmethod
    def backward(ctx, gy):
        x2, u, a, b, weight = ctx.saved_tensors
        scale, dtype, quant_state, shape, x_dtype, a_dtype, b_dtype, has_bias = ctx.meta
        need_x, need_a, need_b, _, need_bias = ctx.needs_input_grad[:5]
        gx = ga = gb = gbias = None
        with torch.autocast(gy.device.type, enabled=False):
            g = gy.reshape(-1, gy.shape[-1]).to(dtype)                  # (T, out)
            gu = g @ b                                                  # (T, r): the gradient reaching u / s
            if need_x:
                gx = g @ _dense(weight, quant_state, dtype)             # (T, in)
                gx.addmm_(gu, a, alpha=scale)
                gx = gx.view(shape).to(x_dtype)
            if need_a:
                ga = (gu.t() * scale) @ x2
                ga = ga.to(a_dtype)
            if need_b:
                gb = g.t() @ (u * scale)
                gb = gb.to(b_dtype)
            if need_bias and has_bias:
                gbias = g.sum(0)
        return gx, ga, gb, None, gbias, None, None, None
