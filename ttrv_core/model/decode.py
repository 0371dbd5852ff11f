"""The decode step: one new token for each of R rows over prefilled prompts.

Decoding 16 answer tokens is launch-bound on a GPU: every step runs thousands
of small kernels (36 layers x projections, 4-bit dequantization, LoRA, norms,
rope, attention) whose Python and launch cost dwarfs the math: recorded once as
a CUDA graph, the step is about ten times faster (bench/RESULTS.md). On a CPU, with
several prompts' rows decoding together (evaluation), it is the copying and the
finished rows. Three decoders:

eager   the HF dynamic cache, the prompt replicated into every row and the
        whole cache grown by concatenation each step. Any family, any device;
        the reference.
static  a fixed-size cache (HF StaticCache, R rows x bucketed length) and a
        4D additive attention mask that opens one more column per step. Shapes
        and addresses never change, so on CUDA the step is captured once per
        sampling phase as a CUDA graph (after one eager warm-up step) and
        replayed for every token of every prompt of that phase: one launch per
        token. At the end of a training step's sampling the engine asks
        Decoders.end_sampling() to keep it through the update where memory allows,
        so the next step replays the recorded step instead of recording it again
        (Decoders.keep says when). The CUDA default.
prefix  each prompt's keys and values held once, a small cache of the answer
        tokens, attention over both in one softmax (`_prefix_attention`), and
        only the rows still decoding go through the model. The CPU default
        (prefix_decode.py).
Static and prefix take only families whose layers all use full attention (no
sliding window: those decode eagerly); a failed graph capture falls back to
the eager step for that policy, with a warning. What a policy keeps between
calls (the static decoder, what its model cannot do) is its `Decoders`
(Policy.decoders): no state at module level.

All read a `Prefix`: one or more prompts prefilled in groups of equal length
(a cache of one row per prompt when the rows share it, else one per row),
`rows` answer rows per prompt, each row at its own positions. Prompts of
different lengths decode together: the shorter ones are left-padded to the
longest and the padding columns masked. All return the last-position logits
(R, V) of each step, R = rows x prompts. Prompts of one length need no padding:
the eager and static steps are then those of a single prompt.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch

from ttrv_core.model.prefix import Prefix
from ttrv_core.model.prefix_decode import PrefixDecoder

CACHE_BUCKET = 64
"""Static cache lengths are rounded up to a multiple of this."""



class EagerDecoder:
    def __init__(self, model, prefix: Prefix):
        self.model, self.prefix, self.cache = model, prefix, prefix.cache()
        pad = prefix.padding()
        self.mask = None if pad is None else (~pad).long()  # (R, length) 2D attention mask; grows a column a step

    def step(self, tokens: torch.Tensor, t: int, live: torch.Tensor | None = None) -> torch.Tensor:
        if self.mask is not None:
            self.mask = torch.cat([self.mask, self.mask.new_ones(self.mask.shape[0], 1)], 1)
        out = self.model(input_ids=tokens[:, None], past_key_values=self.cache, use_cache=True,
                         position_ids=self.prefix.positions(t), attention_mask=self.mask)
        self.cache = out.past_key_values
        return out.logits[:, -1]

    def close(self) -> None:
        self.cache = None


class StaticDecoder:
    """Static cache of `rows` x `length` + 4D mask; a CUDA graph of the step on CUDA.

    Reusable: `load` puts the next prompt's prefix in the same buffers, so one
    captured graph serves every prompt of a sampling phase (same rows, same
    length bucket), and where memory allows every step's (Decoders.end_sampling)."""

    def __init__(self, model, config, rows: int, length: int, dtype: torch.dtype, device, graph: bool):
        from transformers import StaticCache
        from transformers.cache_utils import StaticLayer

        self.cache = StaticCache(config=config, max_cache_len=length)
        if any(type(layer) is not StaticLayer for layer in self.cache.layers):
            raise NotImplementedError("sliding-window layers")
        self.model = model
        self.rows, self.length, self.dtype = rows, length, dtype
        self.tokens = torch.zeros(rows, 1, dtype=torch.long, device=device)
        self.mask = torch.zeros(rows, 1, 1, length, dtype=dtype, device=device)
        self.positions: torch.Tensor | None = None
        self.logits: torch.Tensor | None = None
        self.use_graph, self.graph, self.warm = graph, None, False
        self.graph_failed = False
        self.graph_bytes = 0    # device memory the recorded graph's private pool took
        self.adapter_on = True  # the LoRA switch when the step was recorded (decoder() keeps one per state)

    def load(self, prefix: Prefix) -> StaticDecoder:
        """Copy prefilled prompts into the buffers, each group's rows left-padded to the longest
        prompt (a shared row is broadcast into its prompt's rows, never replicated first)."""
        p, r0, rows = prefix.length, 0, prefix.rows
        self.mask.fill_(torch.finfo(self.dtype).min)
        for cache, k, plen in prefix.groups:
            for dst, src in zip(self.cache.layers, cache.layers):      # src: (k or k x rows, H, plen, D)
                if not dst.is_initialized:
                    dst.lazy_initialization(src.keys[:1].expand(self.rows, -1, -1, -1),
                                            src.values[:1].expand(self.rows, -1, -1, -1))
                for j in range(k):
                    out = slice(r0 + j * rows, r0 + (j + 1) * rows)
                    own = slice(j, j + 1) if prefix.shared else slice(j * rows, (j + 1) * rows)
                    dst.keys[out, :, p - plen:p].copy_(src.keys[own])    # one shared row broadcasts
                    dst.values[out, :, p - plen:p].copy_(src.values[own])
                    dst.keys[out, :, :p - plen] = 0
                    dst.values[out, :, :p - plen] = 0
            self.mask[r0:r0 + k * rows, ..., p - plen:p] = 0
            r0 += k * rows
        for dst in self.cache.layers:
            dst.cumulative_length.fill_(p)
        pos = prefix.positions(0)
        if self.positions is None:
            self.positions = torch.empty_like(pos)
        self.positions.copy_(pos)
        self.prefix, self.p = prefix, p
        return self

    def _forward(self) -> torch.Tensor:
        out = self.model(input_ids=self.tokens, position_ids=self.positions, attention_mask=self.mask,
                         past_key_values=self.cache, use_cache=True)
        return out.logits[:, -1]

    def step(self, tokens: torch.Tensor, t: int, live: torch.Tensor | None = None) -> torch.Tensor:
        self.tokens.copy_(tokens[:, None])
        self.positions.copy_(self.prefix.positions(t))
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
        before = torch.cuda.memory_reserved(self.tokens.device)
        try:
            with torch.cuda.graph(g):
                self.logits = self._forward()
        except Exception as e:  # noqa: BLE001 - any capture failure means: stay eager
            self.use_graph, self.graph_failed = False, True
            warnings.warn(f"CUDA graph capture of the decode step failed ({type(e).__name__}: {e}); "
                          "decoding eagerly", stacklevel=3)
            torch.cuda.synchronize()
            return
        self.graph = g
        self.graph_bytes = torch.cuda.memory_reserved(self.tokens.device) - before

    @property
    def nbytes(self) -> int:
        """Memory this decoder holds between calls: the static cache, its buffers and the graph's pool."""
        tensors = [self.tokens, self.mask, self.positions, self.logits]
        for layer in self.cache.layers if self.cache is not None else []:
            tensors += [getattr(layer, "keys", None), getattr(layer, "values", None)]
        return self.graph_bytes + sum(t.numel() * t.element_size() for t in tensors if t is not None)

    def close(self) -> None:
        """End of one sample() call: the buffers stay for the next prompt."""

    def free(self) -> None:
        self.graph = self.cache = self.logits = None


KEEP_WITHIN = 0.9
"""Keep the static decoder through training only while the process's peak memory plus the
decoder's stays within this share of what the device can give the process."""


@dataclass
class Decoders:
    """One policy's decode state between sample() calls (Policy.decoders): the static decoder
    kept for the next prompt, and what its model was found unable to do.

    The engine calls `end_sampling()` when a training step's sampling ends and `release()`
    when an evaluation ends. Keeping the static decoder through the update saves the next
    step its CUDA-graph recording (a third of its first sampling call on the 3B shape, bench/RESULTS.md
    run 8) at the cost of its memory during the update."""
    kept: StaticDecoder | None = None
    no_static: bool = False   # sliding-window layers: no static or prefix decode
    no_graph: bool = False    # a CUDA graph capture of its step failed once
    keep: bool | None = None
    """Keep the static decoder through training: True, False, or None (auto): on CUDA, once one
    update has run without it (so that the peak memory counted includes an update's), when that
    peak plus the decoder's memory fits in KEEP_WITHIN of what the device can give this process.
    Never on other devices (no graph to keep: the CPU default, the prefix decoder, keeps nothing)."""
    trained_without: bool = False  # an update ran after a sampling phase whose decoder was freed
    kept_bytes: int = 0            # what the decoder kept through the last update holds (0: freed)

    def end_sampling(self) -> None:
        """A training step's sampling phase ends: keep the static decoder through the update
        where memory allows (keep), else free it."""
        if self.kept is not None and self._keeps(self.kept):
            self.kept_bytes = self.kept.nbytes
            return
        self.release()
        self.trained_without = True

    def _keeps(self, dec: StaticDecoder) -> bool:
        if self.keep is not None:
            return self.keep
        dev = dec.tokens.device
        if dev.type != "cuda" or not self.trained_without:
            return False
        free, _ = torch.cuda.mem_get_info(dev)
        budget = KEEP_WITHIN * (free + torch.cuda.memory_reserved(dev))
        return torch.cuda.max_memory_allocated(dev) + dec.nbytes <= budget

    def release(self) -> None:
        """Free the kept static cache and CUDA graph."""
        self.kept_bytes = 0
        if self.kept is not None:
            self.no_graph |= self.kept.graph_failed
            self.kept.free()
            self.kept = None


def decoder(policy, prefix: Prefix, max_new_tokens: int, mode: str = "auto"):
    """The decoder for one sample() call.

    mode: "auto" = static + CUDA graph on CUDA, the prefix decoder elsewhere, where the family
    allows (full attention), else eager; "static" = static cache (graph on CUDA); "prefix";
    "eager"."""

    state: Decoders = policy.decoders
    cuda = policy.device.type == "cuda"
    if mode == "auto":
        mode = "static" if cuda else "prefix"
    if mode == "prefix" and not state.no_static:
        try:
            return PrefixDecoder(policy.model, policy.base.config, prefix, policy.lockstep)
        except NotImplementedError:
            state.no_static = True
            return EagerDecoder(policy.model, prefix)
    if mode == "static" and not state.no_static:
        length = math.ceil((prefix.length + max_new_tokens) / CACHE_BUCKET) * CACHE_BUCKET
        dec = state.kept
        # a recorded step holds the LoRA products or not (Policy.adapter_off): reuse it in the same state only
        shape = (prefix.n_rows, length, policy.adapter_on)
        if dec is None or (dec.rows, dec.length, dec.adapter_on) != shape:
            state.release()
            try:
                dec = StaticDecoder(policy.model, policy.base.config, prefix.n_rows, length, policy.compute_dtype,
                                    policy.device, graph=cuda and not state.no_graph)
            except NotImplementedError:
                state.no_static = True
                return EagerDecoder(policy.model, prefix)
            dec.adapter_on = policy.adapter_on
        state.kept = dec.load(prefix)
        return dec
    return EagerDecoder(policy.model, prefix)
