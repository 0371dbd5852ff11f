"""Sampling N answers to an image prompt: prefill once, decode N rows.

shared (default): the image + question prompt is prefilled once (batch 1) and
its KV cache serves the N rows of the decoder (model/decode.py: on CUDA a static cache
replayed as a CUDA graph, on a CPU the prefix decoder, which never copies it),
so only the answer tokens are decoded per row. naive: the prompt is prefilled
as N full rows, as generate(num_return_sequences=N) does. Both use the same
decode loop and random stream, so for one seed they sample the same answers (up
to float rounding in the prefill). On CUDA, 4-bit and bf16 models sample under
bf16 autocast (policy.Policy.autocast), as they train.

A run prepares each item's Prompt once (prompt.py) and keeps it (prompt_cache.Prompts); here a
Prompt is only read, except for its image encoding, added on the first shared forward (Prompt.encoded).

`sample_many` decodes the rows of several prompts together (evaluation): prompts
of one shape are prefilled in one forward, prompts of other lengths are left-
padded in the decoder, and each prompt draws from its own generator, so that a
prompt's answers are those it gets alone (tests/test_batched_eval.py). Training
samples one prompt at a time (`sample`).

The log-probs a Rollout stores are the sampler's, of the unmasked policy at
temperature T. GRPO's pi_old is recomputed from the training forward by
default, as verl does (grpo.old_logprobs, config.recompute_old_logprobs): the
decode's numerics (a KV cache, bf16, a CUDA graph) differ from the packed
training row's by up to a few hundredths per token in bf16, which would start
every step at a ratio off 1.

Departure from the authors' code (verl + vLLM): special tokens other than EOS
are never sampled (DESIGN.md section 5).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ttrv_core.model.decode import decoder
from ttrv_core.model.policy import Policy
from ttrv_core.model.prefix import Prefix
from ttrv_core.sampling.prompt import Prompt


@dataclass
class Rollout:
    """N sampled answers to one prompt."""
    tokens: torch.Tensor    # (N, L) answer tokens, pad after EOS
    mask: torch.Tensor      # (N, L) 1.0 on answer tokens (EOS included), 0.0 after
    logprobs: torch.Tensor  # (N, L) log-probs at temperature T under the sampling policy, by the sampler's numerics
    texts: list[str]        # decoded answers, special tokens dropped

    def take(self, g: int) -> "Rollout":
        """The first g answers (the paper trains on the first G of the N votes)."""
        t, m, lp = self.tokens[:g], self.mask[:g], self.logprobs[:g]
        keep = max(int(m.sum(1).max().item()), 1) if g else 1  # trim all-padding columns
        return Rollout(t[:, :keep], m[:, :keep], lp[:, :keep], self.texts[:g])


def prefill(policy: Policy, prompt: Prompt, rows: int, shared: bool):
    """Forward the prompt; returns (last-position logits (rows, V), its cache: one
    row when shared (the decoder replicates it), else `rows` rows)."""
    if shared:
        out = policy.model(**prompt.encoded(policy), position_ids=prompt.positions, use_cache=True,
                           logits_to_keep=1)
        return out.logits[:, -1].expand(rows, -1), out.past_key_values
    inputs, pos = prompt.repeated(rows)
    out = policy.model(**inputs, position_ids=pos, use_cache=True, logits_to_keep=1)
    return out.logits[:, -1], out.past_key_values


def _shape(prompt: Prompt) -> tuple:
    """Prompts with the same key concatenate on dim 0 into one batch (every processor output has
    the batch, or the images, on dim 0: see Prompt.repeated): the same length and the same
    shape of every input beyond dim 0."""
    return prompt.length, tuple((k, tuple(v.shape[1:])) for k, v in sorted(prompt.inputs.items()))


def prefill_many(policy: Policy, prompts: list[Prompt], rows: int, shared: bool) -> tuple[torch.Tensor, Prefix]:
    """Prefill several prompts for `rows` answer rows each: (last-position logits (rows x prompts, V),
    the Prefix the decoder reads). Consecutive prompts of one shape (_shape) go through one forward;
    one prompt alone goes exactly as `prefill` does (its image encoding kept for training)."""
    runs: list[list[Prompt]] = []
    for p in prompts:
        if runs and _shape(runs[-1][0]) == _shape(p):
            runs[-1].append(p)
        else:
            runs.append([p])
    logits, groups = [], []
    for run in runs:
        if len(run) == 1:
            first, cache = prefill(policy, run[0], rows, shared)
        else:
            each = [(p.inputs, p.positions) if shared else p.repeated(rows) for p in run]  # naive: `rows` copies
            inputs = {k: torch.cat([x[k] for x, _ in each]) for k in each[0][0]}
            pos = torch.cat([q for _, q in each], -2)                       # (3, B, P) or (B, P)
            out = policy.model(**inputs, position_ids=pos, use_cache=True, logits_to_keep=1)
            first, cache = out.logits[:, -1], out.past_key_values
            if shared:
                first = first.repeat_interleave(rows, 0)
        logits.append(first)
        groups.append((cache, len(run), run[0].length))
    dev = policy.device
    nxt = torch.tensor([p.next_position for p in prompts], device=dev).repeat_interleave(rows)   # (R,)
    return torch.cat(logits), Prefix(groups, rows, shared, nxt, prompts[0].positions.dim() == 3)


@torch.no_grad()
def sample(policy: Policy, prompt: Prompt, n: int, temperature: float = 1.0, top_p: float = 1.0,
           max_new_tokens: int = 16, generator: torch.Generator | None = None,
           greedy_rows: int = 0, shared: bool = True, decode: str = "auto") -> Rollout:
    """Sample n answers; the first `greedy_rows` rows decode greedily instead.

    Rows stop at EOS; the loop stops when every row has. decode: the decode
    step (decode.py): "auto" (static cache + CUDA graph on CUDA, the prefix decoder on a
    CPU), "static", "prefix", "eager"."""
    return sample_many(policy, [prompt], n, temperature, top_p, max_new_tokens, [generator], greedy_rows, shared,
                       decode)[0]


@torch.no_grad()
def sample_many(policy: Policy, prompts: list[Prompt], n: int, temperature: float = 1.0, top_p: float = 1.0,
                max_new_tokens: int = 16, generators: list[torch.Generator | None] | None = None,
                greedy_rows: int = 0, shared: bool = True, decode: str = "auto",
                draw: str = "multinomial") -> list[Rollout]:
    """`sample` for several prompts in one batch: n rows each, decoded together (prompts of one
    shape prefilled together, prompts of other lengths left-padded: prefix.Prefix). Each prompt
    draws from its own generator, once per decode step, as `sample` does for it alone; so with
    one generator per prompt a prompt's answers do not depend on the other prompts of the batch
    (up to float rounding in the batched forwards; equal in fp32 on CPU: tests/test_batched_eval.py).

    draw: "multinomial" (torch.multinomial, as `sample`: it spends V exponential draws per row),
    or "cdf": the inverse of the cumulative distribution at one uniform draw per row, the same
    distribution for a 50th of the random numbers (evaluation, whose per-row cost it is on a CPU)."""
    was_training = policy.model.training
    policy.model.eval()
    try:
        with policy.autocast():
            return _sample(policy, prompts, n, temperature, top_p, max_new_tokens,
                           generators or [None] * len(prompts), greedy_rows, shared, decode, draw)
    finally:
        policy.model.train(was_training)


def _sample(policy, prompts, n, temperature, top_p, max_new_tokens, generators, greedy_rows, shared, decode, draw):
    b = len(prompts)
    logits, prefix = prefill_many(policy, prompts, n, shared)               # (b x n, V)
    dec = decoder(policy, prefix, max_new_tokens, decode)
    del prefix
    try:
        done = torch.zeros(b * n, dtype=torch.bool, device=policy.device)
        greedy = (torch.arange(b * n, device=policy.device) % n) < greedy_rows  # (b x n,) rows decoded greedily
        toks, lps, mask = [], [], []
        for t in range(max_new_tokens):
            # the cdf draw works on the rows still decoding; multinomial on every row, since its stream
            # spends V numbers a row, finished or not
            rows = (~done).nonzero().squeeze(1) if draw == "cdf" and t else None
            scaled = (logits if rows is None else logits[rows]).float() / temperature    # (rows, V)
            logp_all = torch.log_softmax(scaled, -1)
            masked = scaled.masked_fill(policy.suppress, float("-inf"))
            if draw == "cdf":
                pick = _draw_cdf(masked, top_p, generators, n, rows)
            else:  # one draw per prompt from its own stream (one prompt: the whole tensor)
                pick = torch.cat([_draw(masked[i * n:(i + 1) * n], top_p, g) for i, g in enumerate(generators)])
            if greedy_rows:
                pick = torch.where(greedy if rows is None else greedy[rows], masked.argmax(-1), pick)
            lp = logp_all.gather(-1, pick[:, None]).squeeze(-1)
            if rows is not None:  # back to every row: finished ones get padding (and log-prob 0)
                tok, lp = torch.full_like(done, policy.pad_id, dtype=pick.dtype).index_copy_(0, rows, pick), \
                    torch.zeros(b * n, device=lp.device, dtype=lp.dtype).index_copy_(0, rows, lp)
            else:
                tok = pick
            lps.append(lp)
            mask.append((~done).float())
            tok = tok.masked_fill(done, policy.pad_id)
            toks.append(tok)
            done = done | torch.isin(tok, policy.eos_ids)
            if t == max_new_tokens - 1 or bool(done.all()) and not policy.lockstep:  # lockstep: every step
                break
            logits = dec.step(tok, t, ~done)   # finished rows' logits may stay as they were: not read
    finally:
        dec.close()
    tokens, m, lp = torch.stack(toks, 1), torch.stack(mask, 1), torch.stack(lps, 1)    # (b x n, L)
    out = []
    for i in range(b):  # each prompt's columns up to its own last token: what it gives alone
        rows = slice(i * n, (i + 1) * n)
        keep = int(m[rows].sum(1).max())
        ti, mi = tokens[rows, :keep], m[rows, :keep]
        out.append(Rollout(tokens=ti, mask=mi, logprobs=lp[rows, :keep] * mi, texts=_decode(policy, ti, mi)))
    return out


def _draw(scaled: torch.Tensor, top_p: float, generator: torch.Generator | None) -> torch.Tensor:
    probs = _nucleus(torch.softmax(scaled, -1), top_p)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def _draw_cdf(scaled: torch.Tensor, top_p: float, generators: list, n: int,
              rows: torch.Tensor | None = None) -> torch.Tensor:
    """A token for each row of `scaled` at n uniform draws from each generator in turn (all n drawn,
    those of `rows` used when given): the first token whose cumulative probability passes the draw
    (never a token of probability 0)."""
    probs = _nucleus(torch.softmax(scaled, -1), top_p)
    cdf = probs.cumsum(-1)                                                     # (rows, V)
    u = torch.cat([torch.rand(n, generator=g, device=scaled.device) for g in generators])
    u = u if rows is None else u[rows]
    tok = torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(-1), right=True).squeeze(-1)
    last = probs.shape[-1] - 1 - (probs.flip(-1) > 0).int().argmax(-1)        # the last token that can come
    return torch.minimum(tok, last)


def _nucleus(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Probabilities outside the smallest set reaching top_p set to 0 (unnormalised)."""
    if top_p >= 1.0:
        return probs
    sp, idx = probs.sort(-1, descending=True)
    drop = (sp.cumsum(-1) - sp) > top_p  # keep the smallest set reaching top_p
    return torch.zeros_like(probs).scatter(-1, idx, sp.masked_fill(drop, 0.0))


def _decode(policy: Policy, tokens: torch.Tensor, mask: torch.Tensor) -> list[str]:
    eos = set(policy.eos_ids.tolist())
    rows = [[t for t, keep in zip(r, mk) if keep and t not in eos]
            for r, mk in zip(tokens.tolist(), mask.tolist())]
    return policy.tokenizer.batch_decode(rows, skip_special_tokens=True)
