"""The prefix decoder (decode.py's CPU default): each prompt's keys and values held once, the
answer tokens of the rows still decoding in a small cache of their own, and attention over both
in one softmax (`_prefix_attention`, a registered transformers attention function)."""
from __future__ import annotations

import contextvars

import torch

from ttrv_core.model.prefix import Prefix, left_pad


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
    sliding window); one token per row and step. lockstep: when every row has ended, the rows
    last live keep going through the model (their logits unread): a forward at every step."""

    def __init__(self, model, config, prefix: Prefix, lockstep: bool = False):
        from transformers import AttentionInterface, DynamicCache

        if any(getattr(layer, "is_sliding", False) for c, _, _ in prefix.groups for layer in c.layers):
            raise NotImplementedError("sliding-window layers")
        AttentionInterface.register(PREFIX_ATTENTION, _prefix_attention)  # idempotent
        self.model, self.prefix, self.rows = model, prefix, prefix.rows
        self.lockstep = lockstep  # Policy.lockstep: the last live rows stay in the batch once all have ended
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
            self.layers.append((torch.cat([left_pad(k, prefix.length) for k, _ in parts]),
                                torch.cat([left_pad(v, prefix.length) for _, v in parts])))
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
        if live is not None and (self.lockstep and not live.any()):
            live = None       # every row ended: a forward all the same (FSDP), over the rows last live
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
