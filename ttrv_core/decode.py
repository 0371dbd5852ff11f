"""The decode step: one new token for each of N rows over a prefilled prompt.

Decoding 16 answer tokens is launch-bound on a GPU: every step runs thousands
of small kernels (36 layers x projections, 4-bit dequantization, LoRA, norms,
rope, attention) whose Python and launch cost dwarfs the math (H100, 3B shape,
4-bit, 32 rows: 104-128 ms per token eager, 12.6 ms as a CUDA graph under bf16
autocast, against a 0.64 ms bandwidth floor; bench/RESULTS.md). Two decoders:

eager   the HF dynamic cache, grown by concatenation each step. Any family,
        any device; the reference.
static  a fixed-size cache (HF StaticCache, N rows x bucketed length) and a
        4D additive attention mask that opens one more column per step. Shapes
        and addresses never change, so on CUDA the step is captured once per
        sampling phase as a CUDA graph (after one eager warm-up step) and
        replayed for every token of every prompt of that phase: one launch per
        token. `release()` frees it before training. Only families whose layers
        all use full attention (no sliding window) take it; a failed capture
        falls back to the eager step for that model type, with a warning.

Both read the same prefix (a batch-1 cache when it is shared by all rows,
else N rows) and return the last-position logits (N, V) of each step.
"""
from __future__ import annotations

import math
import warnings
import weakref

import torch

CACHE_BUCKET = 64
"""Static cache lengths are rounded up to a multiple of this."""

_no_static: set[str] = set()  # model types without a static decode (sliding-window layers)
_no_graph: set[str] = set()   # model types whose CUDA graph capture failed once


class EagerDecoder:
    def __init__(self, model, prompt, rows: int, prefix_cache, shared: bool):
        if shared:
            prefix_cache.batch_repeat_interleave(rows)
        self.model, self.prompt, self.rows, self.cache = model, prompt, rows, prefix_cache

    def step(self, tokens: torch.Tensor, t: int) -> torch.Tensor:
        out = self.model(input_ids=tokens[:, None], past_key_values=self.cache, use_cache=True,
                         position_ids=self.prompt.answer_positions(self.rows, 1, offset=t))
        self.cache = out.past_key_values
        return out.logits[:, -1]

    def close(self) -> None:
        self.cache = None


class StaticDecoder:
    """Static cache of `rows` x `length` + 4D mask; a CUDA graph of the step on CUDA.

    Reusable: `load` puts the next prompt's prefix in the same buffers, so one
    captured graph serves every prompt of a sampling phase (same rows, same
    length bucket). `release()` frees it before training needs the memory."""

    def __init__(self, model, config, rows: int, length: int, dtype: torch.dtype, device, graph: bool):
        from transformers import StaticCache
        from transformers.cache_utils import StaticLayer

        self.cache = StaticCache(config=config, max_cache_len=length)
        if any(type(layer) is not StaticLayer for layer in self.cache.layers):
            raise NotImplementedError("sliding-window layers")
        self.model = weakref.ref(model)  # a kept decoder must not keep a finished run's model alive
        self.rows, self.length, self.dtype = rows, length, dtype
        self.tokens = torch.zeros(rows, 1, dtype=torch.long, device=device)
        self.mask = torch.zeros(rows, 1, 1, length, dtype=dtype, device=device)
        self.positions: torch.Tensor | None = None
        self.logits: torch.Tensor | None = None
        self.use_graph, self.graph, self.warm = graph, None, False

    def load(self, prompt, prefix_cache) -> StaticDecoder:
        """Copy a prefilled prompt (1 or `rows` rows) into the buffers."""
        p = prompt.length
        for dst, src in zip(self.cache.layers, prefix_cache.layers):
            k, v = src.keys, src.values                      # (1 or rows, H, P, D)
            if not dst.is_initialized:
                dst.lazy_initialization(k[:1].expand(self.rows, -1, -1, -1), v[:1].expand(self.rows, -1, -1, -1))
            dst.keys[:, :, :p].copy_(k)
            dst.values[:, :, :p].copy_(v)
            dst.cumulative_length.fill_(p)
        pos = prompt.answer_positions(self.rows, 1)
        if self.positions is None:
            self.positions = torch.empty_like(pos)
        self.positions.copy_(pos)
        self.mask.fill_(torch.finfo(self.dtype).min)
        self.mask[..., :p] = 0
        self.prompt, self.p = prompt, p
        return self

    def _forward(self) -> torch.Tensor:
        out = self.model()(input_ids=self.tokens, position_ids=self.positions, attention_mask=self.mask,
                         past_key_values=self.cache, use_cache=True)
        return out.logits[:, -1]

    def step(self, tokens: torch.Tensor, t: int) -> torch.Tensor:
        self.tokens.copy_(tokens[:, None])
        self.positions.copy_(self.prompt.answer_positions(self.rows, 1, offset=t))
        self.mask[..., self.p + t] = 0                  # the token fed now sits at column p + t
        if self.use_graph and self.graph is None and self.warm:
            self._capture()                             # records only: the replay below runs it
        if self.graph is not None:
            self.graph.replay()
            return self.logits
        if not self.use_graph:
            return self._forward()
        # the first step runs eagerly on a side stream (warm-up, as graph capture asks)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            logits = self._forward()
        torch.cuda.current_stream().wait_stream(side)
        self.warm = True
        return logits

    def _capture(self) -> None:
        """Record the step as a CUDA graph; on failure, decode eagerly from then on."""
        g = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(g):
                self.logits = self._forward()
        except Exception as e:  # noqa: BLE001 - any capture failure means: stay eager
            self.use_graph = False
            _no_graph.add(_model_type(self.model()))
            warnings.warn(f"CUDA graph capture of the decode step failed ({type(e).__name__}: {e}); "
                          "decoding eagerly", stacklevel=3)
            torch.cuda.synchronize()
            return
        self.graph = g

    def close(self) -> None:
        """End of one sample() call: the buffers stay for the next prompt."""

    def free(self) -> None:
        self.graph = self.cache = self.logits = None


_live: dict[int, StaticDecoder] = {}  # id(model) -> the decoder kept for the next prompt
_watched: weakref.WeakSet = weakref.WeakSet()  # models whose end releases the kept decoder


def release() -> None:
    """Free kept decoders (static caches, CUDA graphs): call before training."""
    for dec in _live.values():
        dec.free()
    _live.clear()


def _model_type(model) -> str:
    return getattr(getattr(model, "config", None), "model_type", "?")


def decoder(policy, prompt, rows: int, prefix_cache, shared: bool, max_new_tokens: int, mode: str = "auto"):
    """The decoder for one sample() call.

    mode: "auto" = static + CUDA graph on CUDA where the family allows, eager
    elsewhere; "static" = static cache (graph on CUDA); "eager"."""
    kind = _model_type(policy.model)
    cuda = policy.device.type == "cuda"
    if mode == "auto":
        mode = "static" if cuda and kind not in _no_static else "eager"
    if mode == "static" and kind not in _no_static:
        length = math.ceil((prompt.length + max_new_tokens) / CACHE_BUCKET) * CACHE_BUCKET
        dec = _live.get(id(policy.model))
        if dec is None or dec.model() is not policy.model or (dec.rows, dec.length) != (rows, length):
            release()
            try:
                dec = StaticDecoder(policy.model, policy.base.config, rows, length, policy.compute_dtype,
                                    policy.device, graph=cuda and kind not in _no_graph)
            except NotImplementedError:
                _no_static.add(kind)
                return EagerDecoder(policy.model, prompt, rows, prefix_cache, shared)
            if policy.model not in _watched:  # the model's end frees the buffers and the graph
                _watched.add(policy.model)
                weakref.finalize(policy.model, release)
        _live[id(policy.model)] = dec.load(prompt, prefix_cache)
        return dec
    return EagerDecoder(policy.model, prompt, rows, prefix_cache, shared)
