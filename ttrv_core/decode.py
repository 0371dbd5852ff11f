"""The decode step: one new token for each of R rows over prefilled prompts.

Decoding 16 answer tokens is launch-bound on a GPU: every step runs thousands
of small kernels (36 layers x projections, 4-bit dequantization, LoRA, norms,
rope, attention) whose Python and launch cost dwarfs the math (H100, 3B shape,
4-bit, 32 rows: 104-128 ms per token eager, 12.6 ms as a CUDA graph under bf16
autocast, against a 0.64 ms bandwidth floor; bench/RESULTS.md). On a CPU, with
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
        token. `release()` frees it before training. The CUDA default.
prefix  each prompt's keys and values held once, a small cache of the answer
        tokens, attention over both in one softmax (`_prefix_attention`), and
        only the rows still decoding go through the model. The CPU default.
Static and prefix take only families whose layers all use full attention (no
sliding window: those decode eagerly); a failed graph capture falls back to
the eager step for that model type, with a warning.

All read a `Prefix`: one or more prompts prefilled in groups of equal length
(a cache of one row per prompt when the rows share it, else one per row),
`rows` answer rows per prompt, each row at its own positions. Prompts of
different lengths decode together: the shorter ones are left-padded to the
longest and the padding columns masked. All return the last-position logits
(R, V) of each step, R = rows x prompts. With one prompt (or prompts of one
length) the eager and static steps are the ones a single prompt always had.
"""
from __future__ import annotations

import contextvars
import math
import warnings
import weakref
from dataclasses import dataclass

import torch

CACHE_BUCKET = 64
"""Static cache lengths are rounded up to a multiple of this."""

_no_static: set[str] = set()  # model types with sliding-window layers: no static or prefix decode
_no_graph: set[str] = set()   # model types whose CUDA graph capture failed once


@dataclass
class Prefix:
    """Prefilled prompts under one decode batch of R = rows x prompts answer rows: the rows of
    a prompt are consecutive, prompts in their order. A group is prompts prefilled together
    (one length); its cache holds one row per prompt when shared, else `rows` per prompt."""
    groups: list[tuple[object, int, int]]  # (transformers Cache, prompts in it, their length), in order
    rows: int                              # answer rows per prompt
    shared: bool
    next_pos: torch.Tensor                 # (R,) position of each row's first answer token
    mrope: bool                            # 3D positions (Qwen): equal coordinates on answer tokens

    @property
    def length(self) -> int:
        """Columns of the decode cache before the answers: the longest prompt."""
        return max(p for _, _, p in self.groups)

    @property
    def n_rows(self) -> int:
        return self.next_pos.shape[0]

    def positions(self, t: int) -> torch.Tensor:
        """Positions of answer token t of every row: (3, R, 1) mrope or (R, 1)."""
        pos = (self.next_pos + t).view(-1, 1)
        return pos.view(1, -1, 1).expand(3, -1, -1) if self.mrope else pos

    def padding(self) -> torch.Tensor | None:
        """(R, length) True on a row's left padding; None when every prompt has the full length."""
        if len({p for _, _, p in self.groups}) == 1:
            return None
        dev = self.next_pos.device
        cols = torch.arange(self.length, device=dev)
        lens = torch.cat([torch.full((k * self.rows,), p, device=dev) for _, k, p in self.groups])
        return cols.view(1, -1) < (self.length - lens).view(-1, 1)

    def cache(self):
        """A dynamic cache of R rows: each group's rows replicated (shared) and left-padded to
        `length`, groups concatenated. One group: its own cache object, replicated in place."""
        for c, _, _ in self.groups:
            if self.shared:
                c.batch_repeat_interleave(self.rows)
        if len(self.groups) == 1:
            return self.groups[0][0]
        longest = max(self.groups, key=lambda g: g[2])[0]  # its layers' bookkeeping (sliding windows) fits all
        for i, merged in enumerate(longest.layers):
            parts = [c.layers[i] for c, _, _ in self.groups]  # a sliding layer keeps at most its window
            width = max(part.keys.shape[-2] for part in parts)
            merged.keys = torch.cat([_left_pad(part.keys, width) for part in parts])
            merged.values = torch.cat([_left_pad(part.values, width) for part in parts])
        return longest


def _left_pad(x: torch.Tensor, width: int) -> torch.Tensor:
    """(B, H, P, D) -> (B, H, width, D), zeros on the left (masked out by Prefix.padding)."""
    return x if x.shape[-2] == width else torch.nn.functional.pad(x, (0, 0, width - x.shape[-2], 0))


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


class PrefixDecoder:
    """Rows attend to their prompt's cache where it lies, never to copies of it, and only rows
    still decoding go through the model (CPU default).

    The eager decoder replicates a prompt's KV cache into each of its N rows and concatenates
    the whole (rows x prompt) cache again at every step, and every row runs to the step where
    the last row of the batch ends: on a CPU, with several prompts decoding together, that
    copying, N passes of attention over each prompt and the finished rows are most of a step.
    Here each layer keeps the prompts' keys and values once ((B, H_kv, P, D), left-padded to
    the longest) and a cache of the answer tokens of the rows still decoding; attention
    (`_prefix_attention`, registered as a transformers attention function and switched on for
    the step's forward only) takes one softmax over both parts, the prompt part as one matrix
    product per prompt for all of its rows. A finished row (EOS) leaves the batch; its logits
    stay those of its last step (the sampler masks its tokens). Full-attention layers only (no
    sliding window); one token per row and step."""

    def __init__(self, model, config, prefix: Prefix):
        from transformers import AttentionInterface, DynamicCache

        if any(getattr(layer, "is_sliding", False) for c, _, _ in prefix.groups for layer in c.layers):
            raise NotImplementedError("sliding-window layers")
        AttentionInterface.register(PREFIX_ATTENTION, _prefix_attention)  # idempotent
        self.model, self.prefix, self.rows = model, prefix, prefix.rows
        self.configs = _configs(config)
        self.cache = DynamicCache(config=config)          # answer tokens of the live rows
        pad = prefix.padding()
        self.pad = None                                   # (B, 1, 1, P) additive, or None
        if pad is not None:
            pad = pad[::prefix.rows]
            self.pad = torch.zeros(pad.shape, device=pad.device).masked_fill(pad, float("-inf"))[:, None, None]
        self.layers = []                                  # per layer: (keys, values), (B, H_kv, P, D) each
        for i in range(len(prefix.groups[0][0].layers)):
            parts = [(c.layers[i].keys, c.layers[i].values) for c, _, _ in prefix.groups]
            if not prefix.shared:  # one row per prompt suffices: every row of a prompt holds the same prefix
                parts = [(k[::prefix.rows], v[::prefix.rows]) for k, v in parts]
            self.layers.append((torch.cat([_left_pad(k, prefix.length) for k, _ in parts]),
                                torch.cat([_left_pad(v, prefix.length) for _, v in parts])))
        self.prompts = self.layers[0][0].shape[0]
        self.live = torch.arange(prefix.n_rows, device=prefix.next_pos.device)   # (R_live,) rows decoding
        self._index()
        self.logits: torch.Tensor | None = None

    def _index(self) -> None:
        """Each live row's prompt and its slot among that prompt's live rows (the prompt part of
        attention runs over (B prompts, most live rows of a prompt))."""
        prompt = torch.div(self.live, self.rows, rounding_mode="floor")
        counts = torch.bincount(prompt, minlength=self.prompts)
        first = torch.cumsum(counts, 0) - counts
        self.row_prompt, self.row_slot = prompt, torch.arange(len(self.live), device=prompt.device) - first[prompt]
        self.slots = int(counts.max())

    def step(self, tokens: torch.Tensor, t: int, live: torch.Tensor | None = None) -> torch.Tensor:
        """tokens (R,) fed at answer position t; live (R,) bool: the rows still decoding (None: all)."""
        if live is not None and int(live.sum()) < len(self.live):
            keep = live[self.live]                                   # over the rows live until now
            self.cache.batch_select_indices(keep.nonzero().squeeze(1))
            self.live = self.live[keep]
            self._index()
        pos = self.prefix.positions(t)
        pos = pos[:, self.live] if pos.dim() == 3 else pos[self.live]
        token = _PREFIX.set(self)
        saved = [c._attn_implementation_internal for c in self.configs]
        for c in self.configs:
            c._attn_implementation_internal = PREFIX_ATTENTION
        try:
            out = self.model(input_ids=tokens[self.live, None], past_key_values=self.cache, use_cache=True,
                             position_ids=pos)
        finally:
            for c, was in zip(self.configs, saved):
                c._attn_implementation_internal = was
            _PREFIX.reset(token)
        self.cache = out.past_key_values
        step = out.logits[:, -1]                                     # (R_live, V)
        if self.logits is None:
            self.logits = step.new_zeros(self.prefix.n_rows, step.shape[-1])
        self.logits[self.live] = step
        return self.logits

    def close(self) -> None:
        self.cache = self.layers = self.logits = None


PREFIX_ATTENTION = "ttrv_prefix"
"""The name `_prefix_attention` is registered under in transformers' attention functions."""
_PREFIX: contextvars.ContextVar = contextvars.ContextVar("ttrv_prefix")  # the PrefixDecoder step under way


def _configs(config) -> list:
    """A model config and its sub-configs (text, vision, ...): each attention module reads its own."""
    out, todo = [], [config]
    while todo:
        c = todo.pop()
        if c is not None and all(c is not o for o in out):
            out.append(c)
            todo += [getattr(c, k, None) for k in getattr(c, "sub_configs", {})]
    return out


def _prefix_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """One softmax over a row's prompt keys (held once per prompt) and its own answer keys.

    query (R, H, 1, D) and key / value (R, H_kv, T, D) of the live rows (T answer tokens so
    far, this one included); query head h reads key head h // (H / H_kv), as transformers'
    repeat_kv has it. Returns (R, 1, H, D), as the sdpa function does."""
    dec = _PREFIX.get()
    pk, pv = dec.layers[module.layer_idx]                                # (B, H_kv, P, D)
    r, h, q, d = query.shape
    assert q == 1, "one answer token per step"
    b, hk, p = pk.shape[:3]
    g, n = h // hk, dec.slots
    scaling = d ** -0.5 if scaling is None else scaling
    qf = query.float().reshape(r, hk, g, d)
    # the prompt part: each prompt's live rows as one (slots x g) block of queries
    grid = qf.new_zeros(b, n, hk, g, d)
    grid[dec.row_prompt, dec.row_slot] = qf
    s1 = grid.transpose(1, 2).reshape(b, hk, n * g, d) @ pk.float().transpose(-1, -2) * scaling  # (B, H_kv, n g, P)
    if dec.pad is not None:
        s1 = s1 + dec.pad
    s1 = s1.view(b, hk, n, g, p).transpose(1, 2)[dec.row_prompt, dec.row_slot]  # (R, H_kv, g, P)
    s2 = qf @ key.float().transpose(-1, -2) * scaling                           # (R, H_kv, g, T)
    top = torch.maximum(s1.amax(-1, keepdim=True), s2.amax(-1, keepdim=True))
    e1, e2 = (s1 - top).exp(), (s2 - top).exp()
    den = e1.sum(-1, keepdim=True) + e2.sum(-1, keepdim=True)
    grid = e1.new_zeros(b, n, hk, g, p)
    grid[dec.row_prompt, dec.row_slot] = e1
    o1 = (grid.transpose(1, 2).reshape(b, hk, n * g, p) @ pv.float()).view(b, hk, n, g, d)
    o1 = o1.transpose(1, 2)[dec.row_prompt, dec.row_slot]                       # (R, H_kv, g, D)
    out = (o1 + e2 @ value.float()) / den
    return out.to(query.dtype).reshape(r, 1, h, d), None


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
        out = self.model()(input_ids=self.tokens, position_ids=self.positions, attention_mask=self.mask,
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


def decoder(policy, prefix: Prefix, max_new_tokens: int, mode: str = "auto"):
    """The decoder for one sample() call.

    mode: "auto" = static + CUDA graph on CUDA, the prefix decoder elsewhere, where the family
    allows (full attention), else eager; "static" = static cache (graph on CUDA); "prefix";
    "eager"."""
    kind = _model_type(policy.model)
    cuda = policy.device.type == "cuda"
    rows = prefix.n_rows
    if mode == "auto":
        mode = "static" if cuda else "prefix"
    if mode == "prefix" and kind not in _no_static:
        try:
            return PrefixDecoder(policy.model, policy.base.config, prefix)
        except NotImplementedError:
            _no_static.add(kind)
            return EagerDecoder(policy.model, prefix)
    if mode == "static" and kind not in _no_static:
        length = math.ceil((prefix.length + max_new_tokens) / CACHE_BUCKET) * CACHE_BUCKET
        dec = _live.get(id(policy.model))
        # a recorded step holds the LoRA products or not (Policy.adapter_off): reuse it in the same state only
        shape = (rows, length, policy.adapter_on)
        if dec is None or dec.model() is not policy.model or (dec.rows, dec.length, dec.adapter_on) != shape:
            release()
            try:
                dec = StaticDecoder(policy.model, policy.base.config, rows, length, policy.compute_dtype,
                                    policy.device, graph=cuda and kind not in _no_graph)
            except NotImplementedError:
                _no_static.add(kind)
                return EagerDecoder(policy.model, prefix)
            dec.adapter_on = policy.adapter_on
            if policy.model not in _watched:  # the model's end frees the buffers and the graph
                _watched.add(policy.model)
                weakref.finalize(policy.model, release)
        _live[id(policy.model)] = dec.load(prefix)
        return dec
    return EagerDecoder(policy.model, prefix)
