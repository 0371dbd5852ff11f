"""Gradient checkpointing of the training forward: none, the MLPs only, or whole layers.

On the packed training row (grpo._packed_logits) a decoder layer keeps ~69 MB of
activations for backward on the 3B shape (543 tokens, bf16), two thirds of it in
the MLP: the gate and up projections' outputs (11,008 wide), the SiLU, their
product, and the down projection's input. Three modes:

off     keep everything: the fastest update, the most memory.
mlp     recompute each layer's MLP in the backward pass from its input (2,048
        wide), keeping attention's activations.
layers  recompute whole decoder layers (transformers' activation checkpointing):
        the least memory, the slowest.

With mlp a whole TTRV step (N = G = 16) is as fast as with off at less memory (3B
shape, 4-bit, H100: bench/RESULTS.md, run 7).

All three give the same gradients (tests/test_shared_prefix.py). Sampling runs in
eval mode and without gradients, where nothing is recomputed.

"mlp" swaps each MLP's class for a subclass whose forward is checkpointed (`_Recomputed`):
the module stays where it is, with the same names and state dict, and swapping back
restores the original class exactly.
"""
from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

from ttrv_core.config import RECOMPUTE as MODES
from ttrv_core.model.policy import Policy


def set_recompute(policy: Policy, mode: str) -> None:
    """Switch the policy's training forwards to `mode` ("off", "mlp" or "layers")."""
    if mode not in MODES:
        raise ValueError(f"checkpointing must be one of {', '.join(MODES)}, got '{mode}'")
    if mode == "layers":
        policy.base.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    elif policy.base.is_activation_checkpointing:
        policy.base.activation_checkpointing_disable()
    for mlp in _mlps(policy):
        cls = type(mlp)
        if mode == "mlp" and not issubclass(cls, _Recomputed):
            if cls not in _RECOMPUTED:
                _RECOMPUTED[cls] = type(f"Recomputed{cls.__name__}", (_Recomputed, cls), {"__module__": __name__})
            mlp.__class__ = _RECOMPUTED[cls]
        elif mode != "mlp" and issubclass(cls, _Recomputed):
            mlp.__class__ = cls.__mro__[2]  # (the subclass, _Recomputed, the original)


def _mlps(policy: Policy) -> list[torch.nn.Module]:
    return [layer.mlp for layer in policy.base.get_decoder().layers if hasattr(layer, "mlp")]


class _Recomputed:
    """Mixin over a decoder layer's MLP class: its forward checkpointed when training."""

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if self.training and torch.is_grad_enabled():
            return checkpoint(super().forward, x, *args, use_reentrant=False, **kwargs)
        return super().forward(x, *args, **kwargs)


_RECOMPUTED: dict[type, type] = {}  # an MLP class -> its recomputed subclass, made once (a cache, no switch)
