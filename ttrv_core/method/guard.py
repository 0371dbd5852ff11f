"""A label-free guard against collapse onto one answer (the method's known failure).

Signal, per step, from the votes alone: `concentration`, the largest share of
the step's items whose majority answer is one and the same answer. On a
varied image set it stays near its level before training (measured on the
same items in the before-evaluation, also label-free); a collapsing run drives every item to
the same answer (in the paper's own logs Resisc45 fell 83.6 -> 24.6, DTD 46.8
-> 0.0; here the demo model goes to one digit for every image).

Rule: over a window of the last WINDOW steps (each item's latest majority),
the run is unhealthy when concentration >= max(FLOOR, baseline + MARGIN,
1 / K + MARGIN), K the number of answers an item can have (its options, for
multiple choice and classification; none for open answers): with 4 options,
a quarter of the items share an answer by chance alone, and a window of
about 20 items often puts 0.4 of them on one letter with no collapse at all.
One step's 8 items are too few to judge. After PATIENCE unhealthy windows in
a row the guard fires: the LoRA weights go back to the oldest of the last
WINDOW healthy states (kept in memory; LoRA weights are small) and training
stops. The guard needs MIN_ITEMS distinct items in the window, so it is
silent in single-example mode (one image, repeated).

Checkpoints (runs/checkpoint.py) keep the guard whole: `state_dict` is plain data (the
window, counters), and each kept healthy state is a weights file of its own,
written once when kept and carried to later checkpoints by hard link; so a
resumed run rolls back exactly as the uninterrupted one would.
"""
from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Sequence

import torch

FLOOR = 0.4
MARGIN = 0.25
WINDOW = 4
PATIENCE = 2
MIN_ITEMS = 8


def concentration(majorities: Sequence[str]) -> float:
    """Largest share of items with the same majority answer.

    >>> concentration(["3", "3", "7", "3"])
    0.75
    """
    return Counter(majorities).most_common(1)[0][1] / len(majorities) if majorities else 0.0


@dataclass
class CollapseGuard:
    baseline: float | None = None   # concentration over the adapted items before training
    n_answers: int = 0              # K: the answers an item can have (options); 0 = open-ended
    unhealthy: int = 0
    fired_at: int | None = None
    restored_step: int = 0
    _window: deque = field(default_factory=lambda: deque(maxlen=WINDOW), repr=False)
    _healthy: deque = field(default_factory=lambda: deque(maxlen=WINDOW), repr=False)  # (step, weights)

    def threshold(self) -> float:
        chance = 1 / self.n_answers if self.n_answers else 0.0
        return max(FLOOR, (self.baseline or 0.0) + MARGIN, chance + MARGIN)

    def keep(self, step: int, model: torch.nn.Module) -> None:
        """Remember the trainable (LoRA) weights after `step` as a healthy state."""
        self._healthy.append((step, {n: p.detach().clone() for n, p in model.named_parameters()
                                     if p.requires_grad}))

    def check(self, step: int, majority_by_item: dict[str, str], model: torch.nn.Module) -> float:
        """Update after a step with each item's majority answer; returns the window's
        concentration. Sets `fired_at` and restores healthy weights when the rule fires."""
        self._window.append(majority_by_item)
        latest: dict[str, str] = {}
        for d in self._window:
            latest.update(d)
        c = concentration(list(latest.values()))
        if len(latest) < MIN_ITEMS:
            return c
        if c >= self.threshold():
            self.unhealthy += 1
            if self.unhealthy >= PATIENCE:
                self.fired_at = step
                self.restore(model)
        else:
            self.unhealthy = 0
            self.keep(step, model)
        return c

    def restore(self, model: torch.nn.Module) -> None:
        """Back to the oldest healthy state kept (before the window that went bad)."""
        if not self._healthy:
            return
        self.restored_step, weights = self._healthy[0]
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n in weights:
                    p.copy_(weights[n])

    def state_dict(self) -> dict:
        """Everything but the kept weights (those are `kept`), as plain data."""
        return {"baseline": self.baseline, "n_answers": self.n_answers, "unhealthy": self.unhealthy, "fired_at": self.fired_at,
                "restored_step": self.restored_step, "window": [dict(d) for d in self._window]}

    @property
    def kept(self) -> list[tuple[int, dict[str, torch.Tensor]]]:
        """The healthy states kept for a rollback, oldest first: (step, trainable weights)."""
        return list(self._healthy)

    def load_state_dict(self, state: dict, kept: Sequence[tuple[int, dict[str, torch.Tensor]]]) -> None:
        self.baseline, self.unhealthy = state["baseline"], state["unhealthy"]
        self.n_answers = state.get("n_answers", 0)  # a checkpoint's state may lack it: 0, no chance level
        self.fired_at, self.restored_step = state["fired_at"], state["restored_step"]
        self._window.clear()
        self._window.extend(state["window"])
        self._healthy.clear()
        self._healthy.extend((step, dict(w)) for step, w in kept)

    def message(self) -> str | None:
        if self.fired_at is None:
            return None
        return (f"collapse guard: by step {self.fired_at} {PATIENCE} windows in a row had most images "
                f"(>= {self.threshold():.2f}) on the same majority answer; training stopped and the adapter "
                f"was rolled back to step {self.restored_step}")
