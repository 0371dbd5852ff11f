"""A run's encoded prompts (`Prompts`): each item's prepared once, kept within a budget of bytes, and
checked against the model's context; an item the run cannot use is left out of the run with
a named Problem, and the run goes on.

Every phase of a run (the before-evaluation, each step that samples the item, the after-evaluation)
asks `Prompts` for an item's prompt: the processor's output, the positions and, once a shared path
asked for it, the image encoder's output (prompt.Prompt.encoded), which does not change (the
adapter is on the language model only). Calling it gives what `prompt.prepare_prompt` gives: the
same tensors, so the same numbers.

Memory: up to `budget` bytes of tensors are kept, the least recently used prompt dropped first
(budget 0 prepares every time). A kept prompt's bytes are counted when they are added, the image
encoding included (its first shared forward tells the cache: Prompt.on_grow), so the budget holds
at every moment; bytes are those of the tensors' storages, each once (a view holds its whole storage).

An item is left out of the run (`Dropped`; its Problem goes to `problems`) when
  1. its file cannot be read now: changed since the data check, or read at another count of frames
     than the check read (a truncated clip can give 8 frames and fail at 16);
  2. its prompt and its answer (max_new_tokens) do not fit the model's context (the text model's
     max_position_embeddings, `context_length`). A video is first read at fewer frames, the most
     that fit, and a note in `problems` says so (once per item); an image, or a video too long at
     one frame, is refused, the message naming the length and the limit.
An item left out stays out for the rest of the run: its file is not read again.
"""
from __future__ import annotations

from collections import OrderedDict
from functools import partial

import torch

from ttrv_core.errors import TTRVError
from ttrv_core.inputs.pixels import ImageError
from ttrv_core.model.policy import Policy
from ttrv_core.problems import Problem
from ttrv_core.sampling.prompt import Prompt, prepare_prompt


class Dropped(TTRVError):
    """An item the run cannot use; `problem` names its file and why."""

    def __init__(self, problem: Problem):
        super().__init__(str(problem))
        self.problem = problem


def context_length(policy: Policy) -> int | None:
    """Tokens the model's language model takes (its text config's max_position_embeddings; every
    family in families.FAMILIES states it there), or None where the config states none."""
    config = policy.base.config
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    n = getattr(text, "max_position_embeddings", None)
    return int(n) if n else None


class Prompts:
    """A run's encoded prompts (module docstring): call it with an item for its Prompt (Dropped when
    the item cannot be used), or `get` it (None then)."""

    def __init__(self, policy: Policy, frames: int, budget: int | None = None, max_new_tokens: int = 0):
        self.policy, self.frames, self.max_new_tokens = policy, frames, max_new_tokens
        self.budget = prompt_budget(policy.device) if budget is None else budget
        self.limit = context_length(policy)
        self._kept: OrderedDict[tuple, tuple[Prompt, int]] = OrderedDict()
        self.bytes = 0
        self.prepared = 0   # prompts prepared so far (the tests and benchmarks read it)
        self.problems: list[Problem] = []   # what the run found, in order: items left out, videos read at fewer frames
        self._dropped: dict[tuple, Problem] = {}
        self._noted: set[tuple] = set()

    @staticmethod
    def _key(item) -> tuple:
        return item.id, str(item.path), item.prompt

    def __call__(self, item) -> Prompt:
        key = self._key(item)
        if key in self._dropped:
            raise Dropped(self._dropped[key])
        if key in self._kept:
            self._kept.move_to_end(key)
            return self._kept[key][0]
        try:
            prompt = self._prepare(item, key)
        except Dropped as e:
            self._dropped[key] = e.problem
            self.problems.append(e.problem)
            raise
        self.prepared += 1
        self._keep(key, prompt)
        return prompt

    def get(self, item) -> Prompt | None:
        """The item's prompt, or None when the item is left out of the run (`problems` says why)."""
        try:
            return self(item)
        except Dropped:
            return None

    def dropped(self, item) -> bool:
        """The item was left out of the run (without reading anything)."""
        return self._key(item) in self._dropped

    def clear(self) -> None:
        """Drop every kept prompt (out of memory: the memory goes back to the run)."""
        for prompt, _ in self._kept.values():
            prompt.on_grow = None
        self._kept.clear()
        self.bytes = 0

    # ------------------------------------------------------------------ preparing

    def _prepare(self, item, key: tuple) -> Prompt:
        """The item's prompt at the run's frames, or at fewer where a video's does not fit the context."""
        k = self.frames
        prompt = self._read(item, k)
        if self.limit is None:
            return prompt
        room = self.limit - self.max_new_tokens       # tokens the prompt may take
        first = prompt.length
        while item.video and k > 1 and prompt.length > room:
            # image tokens grow about linearly with the frames: aim at the count that fits, then one fewer at a time
            k = max(1, min(k - 1, k * room // prompt.length))
            prompt = self._read(item, k)
        answer = f" and its answer up to {self.max_new_tokens} more" if self.max_new_tokens else ""
        if prompt.length > room:
            at = f" (at {k} frame{'s' if k > 1 else ''})" if item.video else ""
            raise Dropped(Problem(item.id, f"its prompt{at} is {prompt.length:,} tokens{answer}: over the model's "
                                           f"context of {self.limit:,} tokens; left out of the run"))
        if k < self.frames and key not in self._noted:
            self._noted.add(key)
            self.problems.append(Problem(item.id, f"at {self.frames} frames its prompt is {first:,} tokens{answer}: "
                                                  f"over the model's context of {self.limit:,} tokens; read at "
                                                  f"{k} frame{'s' if k > 1 else ''} instead ({prompt.length:,} tokens)"))
        return prompt

    def _read(self, item, frames: int) -> Prompt:
        try:
            image = item.image(frames)
        except (ImageError, OSError) as e:   # changed since the data check, or another count of frames
            raise Dropped(Problem(item.id, f"{e}; left out of the run")) from None
        return prepare_prompt(self.policy, image, item.prompt)

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
