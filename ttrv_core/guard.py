"""A label-free guard against collapse onto one answer (the method's known failure).

Signal, per step, from the votes alone: `concentration`, the largest share of
the step's items whose majority answer is one and the same answer. On a
varied image set it stays near its level before training (measured on the
before-evaluation, also label-free); a collapsing run drives every item to
the same answer (in the paper's own logs Resisc45 fell 83.6 -> 24.6, DTD 46.8
-> 0.0; here the demo model goes to one digit for every image).

Rule: a step is unhealthy when concentration >= max(FLOOR, baseline + MARGIN).
After PATIENCE unhealthy steps in a row the guard fires: the LoRA weights go
back to those after the last healthy step (kept in memory; they are small)
and training stops. The guard needs MIN_ITEMS distinct items in a step, so it
is silent in single-example mode (one image, repeated).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence

import torch

FLOOR = 0.75
MARGIN = 0.25
PATIENCE = 2
MIN_ITEMS = 4


def concentration(majorities: Sequence[str]) -> float:
    """Largest share of items with the same majority answer.

    >>> concentration(["3", "3", "7", "3"])
    0.75
    """
    return Counter(majorities).most_common(1)[0][1] / len(majorities) if majorities else 0.0


@dataclass
class CollapseGuard:
    baseline: float | None = None   # concentration over all items before training
    unhealthy: int = 0
    fired_at: int | None = None
    healthy_step: int = 0
    _snapshot: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    def threshold(self) -> float:
        return max(FLOOR, (self.baseline or 0.0) + MARGIN)

    def keep(self, model: torch.nn.Module) -> None:
        """Remember the trainable (LoRA) weights as the last healthy state."""
        self._snapshot = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    def check(self, step: int, majority_by_item: dict[str, str], model: torch.nn.Module) -> float:
        """Update after a step with each distinct item's majority answer; returns the
        step's concentration. Sets `fired_at` and restores the last healthy weights
        when the rule fires."""
        c = concentration(list(majority_by_item.values()))
        if len(majority_by_item) < MIN_ITEMS:
            return c
        if c >= self.threshold():
            self.unhealthy += 1
            if self.unhealthy >= PATIENCE:
                self.fired_at = step
                self.restore(model)
        else:
            self.unhealthy = 0
            self.healthy_step = step
            self.keep(model)
        return c

    def restore(self, model: torch.nn.Module) -> None:
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n in self._snapshot:
                    p.copy_(self._snapshot[n])

    def message(self) -> str | None:
        if self.fired_at is None:
            return None
        return (f"collapse guard: at step {self.fired_at} most images had the same majority answer "
                f"(>= {self.threshold():.2f} of a step's images, {PATIENCE} steps in a row); training stopped "
                f"and the adapter was rolled back to step {self.healthy_step}")
