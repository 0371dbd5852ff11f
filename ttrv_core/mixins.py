"""Extra behaviour for one module instance: its class swapped for a subclass with a mixin.

lora.py (the fused LoRA forward) and checkpointing.py (recomputed MLPs) change how
existing modules run. A class swap keeps the module where it is: same names, same
state dict, and peft's and transformers' isinstance checks still pass; swapping back
restores the original class exactly.
"""
from __future__ import annotations

from torch import nn

_CLASSES: dict[tuple[type, type], type] = {}


def add_mixin(module: nn.Module, mixin: type) -> None:
    """module's class becomes (mixin, its class): the mixin's methods run first, super() is the original."""
    cls = type(module)
    if issubclass(cls, mixin):
        return
    if (mixin, cls) not in _CLASSES:
        _CLASSES[(mixin, cls)] = type(f"{mixin.__name__.strip('_')}{cls.__name__}", (mixin, cls),
                                      {"__module__": mixin.__module__})
    module.__class__ = _CLASSES[(mixin, cls)]


def remove_mixin(module: nn.Module, mixin: type) -> None:
    """Undo add_mixin: the module's original class again."""
    cls = type(module)
    if issubclass(cls, mixin):
        module.__class__ = cls.__mro__[2]
