"""A run's encoded prompts (`Prompts`): each item's prepared once and kept within a budget of bytes.

Every phase of a run (the before-evaluation, each step that samples the item, the after-evaluation)
asks `Prompts` for an item's prompt: the processor's output, the positions and, once a shared path
asked for it, the image encoder's output (rollout.Prompt.encoded), which does not change (the
adapter is on the language model only). Calling it gives what `rollout.prepare_prompt` gives: the
same tensors, so the same numbers.

Memory: up to `budget` bytes of tensors are kept, the least recently used prompt dropped first
(budget 0 prepares every time). A kept prompt's bytes are counted when they are added, the image
encoding included (its first shared forward tells the cache: Prompt.on_grow), so the budget holds
at every moment; bytes are those of the tensors' storages, each once (a view holds its whole storage).
"""
from __future__ import annotations

from collections import OrderedDict
from functools import partial

import torch

from .models import Policy
from .rollout import Prompt, prepare_prompt


class Prompts:
    """A run's encoded prompts (module docstring): call it with an item for its Prompt."""

    def __init__(self, policy: Policy, frames: int, budget: int | None = None):
        self.policy, self.frames = policy, frames
        self.budget = prompt_budget(policy.device) if budget is None else budget
        self._kept: OrderedDict[tuple, tuple[Prompt, int]] = OrderedDict()
        self.bytes = 0
        self.prepared = 0   # prompts prepared so far (the tests and benchmarks read it)

    @staticmethod
    def _key(item) -> tuple:
        return item.id, str(item.path), item.prompt

    def __call__(self, item) -> Prompt:
        key = self._key(item)
        if key in self._kept:
            self._kept.move_to_end(key)
            return self._kept[key][0]
        prompt = prepare_prompt(self.policy, item.image(self.frames), item.prompt)
        self.prepared += 1
        self._keep(key, prompt)
        return prompt

    def clear(self) -> None:
        """Drop every kept prompt (out of memory: the memory goes back to the run)."""
        for prompt, _ in self._kept.values():
            prompt.on_grow = None
        self._kept.clear()
        self.bytes = 0

    # ------------------------------------------------------------------ the budget

    def _keep(self, key: tuple, prompt: Prompt) -> None:
        size = _nbytes(prompt)
        if size > self.budget:
            return
        prompt.on_grow = partial(self._grew, key)
        self._kept[key] = (prompt, size)
        self.bytes += size
        self._fit()

    def _grew(self, key: tuple) -> None:
        """A kept prompt's image encoding was just added: its bytes counted now, the budget kept."""
        if key not in self._kept:
            return
        prompt, old = self._kept[key]
        size = _nbytes(prompt)
        self._kept[key] = (prompt, size)
        self._kept.move_to_end(key)   # in use now
        self.bytes += size - old
        self._fit()

    def _fit(self) -> None:
        """Drop the least recently used prompts until the kept bytes are within the budget."""
        while self.bytes > self.budget:
            _, (prompt, size) = self._kept.popitem(last=False)
            prompt.on_grow = None
            self.bytes -= size


def prompt_budget(device: torch.device) -> int:
    """Bytes of encoded prompts a run keeps: 1 GiB in host memory; on a GPU, where the prompts live
    beside the model, 5% of the card's memory, at most 2 GiB (Qwen2.5-VL-3B at 1,000 image tokens:
    ~14 MB a prompt, so the 20 trained items of the default easily, all 240 of a set on 80 GB)."""
    if device.type == "cuda":
        return min(2 * 2**30, torch.cuda.get_device_properties(device).total_memory // 20)
    return 2**30


def _nbytes(x) -> int:
    """Bytes of memory the tensors in a Prompt, a dict, a list or tuple, or a model output hold: each
    storage once, whole (a view, such as features without their first token, holds all of its storage)."""
    storages: dict[tuple, int] = {}
    for t in _tensors(x):
        s = t.untyped_storage()
        storages[(t.device, s.data_ptr())] = s.nbytes()
    return sum(storages.values())


def _tensors(x):
    if isinstance(x, torch.Tensor):
        yield x
    elif isinstance(x, Prompt):
        yield from _tensors(x.inputs)
        yield from _tensors(x.positions)
        yield from _tensors((x._images or {}).get("outputs"))
    elif isinstance(x, dict):   # transformers' ModelOutput is a dict too
        for v in x.values():
            yield from _tensors(v)
    elif isinstance(x, (list, tuple)):
        for v in x:
            yield from _tensors(v)
