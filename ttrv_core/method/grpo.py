"""GRPO on one prompt's G answers: advantages, shared-prefix log-probs, loss, update.

As verl (which the authors' code runs on) computes it, for the G trained
answers o_i of a prompt with rewards r_i and answer tokens t:

    A_i      = (r_i - mean(r)) / (std(r) + 1e-6)        std unbiased, within the group
    rho_it   = exp(log pi(o_it) - log pi_old(o_it))      both at temperature T
    pg_it    = max(-A_i rho_it, -A_i clip(rho_it, 1-eps, 1+eps))
    pg_it    = min(pg_it, -A_i c)   where A_i < 0          (dual clip, c = 3)
    kl_it    = exp(ref - logp) - (ref - logp) - 1          (k3, "low_var_kl", clamped to [-10, 10])
    loss     = token-mean(pg) + beta * token-mean(kl)       over all answer tokens of the group

Both log-ratios are taken at answer tokens only and clamped to [-20, 20] before
any exp, as verl clamps them: a padded position's log-prob can be -1e4, and
exp of it, times the zero gradient of a mask or a clamp, is NaN in backward,
which clip_grad_norm_ then spreads to every LoRA weight. With beta = 0 the
KL term and the reference pass are skipped.

pi_old (`old_logprobs`): the step's policy, recomputed as verl does, with the
training forward's numerics (the packed row, the same autocast, the adapter
on) in one no-grad pass per prompt before the step's first update; so the
first update of a step starts at ratio 1 exactly, clip_frac 0, in bf16 too.
The sampler's own log-probs (bf16 decode with a KV cache, a CUDA graph on
CUDA) differ from the training forward's by up to a few hundredths per token
in bf16; config.recompute_old_logprobs = False uses them instead (cheaper).

The reference policy is the same model with the LoRA adapter disabled: no
second copy of the weights.

Shared prefix (default): one row holds the prompt once and the G answers after
it, under a mask that lets each answer see the prompt and its own earlier
tokens only (`_packed_logits`); one forward WITH gradients, so the gradient of
the prompt's activations is the sum over the G answers, exactly as in the naive
path that forwards G full rows (tests/test_shared_prefix.py). Families whose
model builds its own non-causal image mask (Gemma 3) share through the KV
cache instead: the prompt is prefilled once and its cache replicated G times.

The image is encoded once per prompt (sampling/prompt.py, Prompt.encoded): the reference
pass and the training forward reuse the sampling prefill's vision-tower output.
The reference pass switches the adapter off through peft's per-layer switch
(policy.Policy.adapter_off).

Memory: when the G answers do not fit in one training forward (CUDA out of
memory), `update` redoes the step over micro-batches of answers, each with the
prompt, gradients accumulated (tests/test_microbatch.py); on CUDA the forwards
run under bf16 autocast (policy.Policy.autocast); gradient checkpointing of the
MLPs or whole layers is a config option (model/gradient_checkpointing.py).

Departure from the paper: one optimiser update per prompt, as the paper's
code (mini-batch = 1 prompt of G answers), with LoRA instead of a full
fine-tune, hence a larger learning rate (config.py). config.prompts_per_update
= k puts k prompts in one update, the mean of their gradients (`gradient`,
step.train_step; also across processes: dist/parallel.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ttrv_core.model.policy import Policy
from ttrv_core.sampling.prompt import Prompt
from ttrv_core.sampling.rollout import prefill


def group_advantages(rewards: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """(G,) z-scored rewards. A group with one answer gets advantage 0 (verl).

    Computed in float64: when all G rewards are equal (every answer the same), a
    float32 mean can be one rounding step off the rewards, and dividing that by
    std + eps (std 0) gives every answer the same spurious advantage, up to ~0.06 for
    the ttrv reward (its entropy term), where the frequency reward gets exact zeros."""
    if rewards.numel() < 2:
        return torch.zeros_like(rewards)
    r = rewards.double()
    return ((r - r.mean()) / (r.std() + eps)).to(rewards.dtype)


def answer_logprobs(policy: Policy, prompt: Prompt, tokens: torch.Tensor, temperature: float = 1.0,
                    shared: bool = True) -> torch.Tensor:
    """(G, L) log-probs of answer tokens given the prompt, at temperature T.

    Gradients flow where grad mode is on (also into the shared prefix)."""
    g, length = tokens.shape
    if shared and policy.pack_answers and "token_type_ids" not in prompt.inputs:
        logits = _packed_logits(policy, prompt, tokens)
    elif shared:  # Gemma 3: the model builds a non-causal image mask; share through the KV cache
        first, cache = prefill(policy, prompt, g, shared=True)             # (G, V), cache of one row
        cache.batch_repeat_interleave(g)                                   # G rows; gradients sum back
        out = policy.model(input_ids=tokens, past_key_values=cache, use_cache=True,
                           position_ids=prompt.answer_positions(g, length))
        logits = torch.cat([first.unsqueeze(1), out.logits[:, :-1]], 1)   # (G, L, V)
    else:
        inputs, pos = prompt.repeated(g)
        full = torch.cat([inputs.pop("input_ids"), tokens], 1)             # (G, P + L)
        inputs["attention_mask"] = torch.ones_like(full)
        for k in ("mm_token_type_ids", "token_type_ids"):  # per-token (Qwen mrope, Gemma 3 image attention)
            if k in inputs:                                    # answer tokens are text: 0
                inputs[k] = torch.cat([inputs[k], torch.zeros_like(tokens, dtype=inputs[k].dtype)], 1)
        pos = torch.cat([pos, prompt.answer_positions(g, length)], -1)
        out = policy.model(input_ids=full, position_ids=pos, use_cache=False, logits_to_keep=length + 1, **inputs)
        logits = out.logits[:, :-1]                                         # (G, L, V)
    logp = torch.log_softmax(logits.float() / temperature, -1)
    return logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def _packed_logits(policy: Policy, prompt: Prompt, tokens: torch.Tensor) -> torch.Tensor:
    """(G, L, V) logits from ONE forward of one row: the prompt, then the G answers
    one after another, under a mask that lets each answer see the prompt and its
    own earlier tokens only, each answer at the positions it has after the prompt.

    The prompt's activations are computed once and never replicated (no G-fold
    KV copies); the lm head runs only where a log-prob is needed."""
    g, length = tokens.shape
    p, dev = prompt.length, tokens.device
    s = p + g * length
    ids = torch.cat([prompt.inputs["input_ids"], tokens.reshape(1, -1)], 1)          # (1, S)
    pos = prompt.answer_positions(g, length)                                           # (3, G, L) or (G, L)
    pos = torch.cat([prompt.positions, pos.reshape(*pos.shape[:-2], 1, -1)], -1)      # (3, 1, S) or (1, S)
    inputs = {k: v for k, v in prompt.encoded(policy).items() if k not in ("input_ids", "attention_mask")}
    if "mm_token_type_ids" in inputs:                                                  # answer tokens are text
        t = inputs["mm_token_type_ids"]
        inputs["mm_token_type_ids"] = torch.cat([t, t.new_zeros(1, g * length)], 1)
    a = torch.arange(g * length, device=dev)
    allowed = torch.ones(s, s, dtype=torch.bool, device=dev).tril()                   # prompt: causal
    allowed[p:, p:] = (a[:, None] // length == a[None, :] // length) & (a[None, :] <= a[:, None])
    dtype = policy.compute_dtype
    mask = torch.zeros(1, 1, s, s, dtype=dtype, device=dev).masked_fill_(~allowed, torch.finfo(dtype).min)
    # logits at the prompt's last token (answer token 0 of every answer) and at each answer's tokens 0..L-2
    keep = torch.cat([torch.tensor([p - 1], device=dev),
                      (p + a.view(g, length)[:, :-1]).reshape(-1)])
    out = policy.model(input_ids=ids, position_ids=pos, attention_mask=mask, use_cache=False,
                       logits_to_keep=keep, **inputs)
    first, rest = out.logits[0, :1], out.logits[0, 1:]
    # the vocabulary size spelled out: one-token answers leave `rest` empty, (0, V)
    return torch.cat([first.expand(g, -1).unsqueeze(1), rest.view(g, length - 1, first.shape[-1])], 1)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1.0)


LOG_RATIO_CLAMP = 20.0
"""Log-ratios are clamped to [-20, 20] before exp, as verl does: exp stays finite in bf16."""


def masked_log_ratio(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(G, L) a - b at answer tokens, 0 at padding, clamped to +-20: safe to exp.

    Masking goes first: a padded position's -1e4 never reaches an exp, whose
    backward would multiply the mask's zero gradient by inf (NaN)."""
    d = torch.where(mask.bool(), a - b, torch.zeros_like(a))
    return d.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)


def low_var_kl(logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """k3 estimator of KL(pi || ref) per token, 0 at padding, clamped as verl does.

    >>> low_var_kl(torch.tensor([[-1.0, -1e4]]), torch.tensor([[-2.0, -3.0]]), torch.tensor([[1.0, 0.0]]))
    tensor([[0.3679, 0.0000]])
    """
    d = masked_log_ratio(ref_logp, logp, mask)
    return (torch.exp(d) - d - 1).clamp(-10, 10)


@dataclass
class LossParts:
    """The loss, and its parts as 0-d tensors (read back once per update: no GPU sync per forward)."""
    loss: torch.Tensor
    pg: torch.Tensor
    kl: torch.Tensor
    clip_frac: torch.Tensor
    ratio_mean: torch.Tensor


def grpo_loss(logp: torch.Tensor, old_logp: torch.Tensor, ref_logp: torch.Tensor | None, adv: torch.Tensor,
              mask: torch.Tensor, eps_clip: float = 0.2, dual_clip: float = 3.0, beta: float = 0.001) -> LossParts:
    """Token-mean clipped-ratio loss with dual clip and k3 KL. Shapes (G, L); adv (G,).

    ref_logp may be None when beta = 0: no KL term at all (its metric is 0).
    Tests with hand-computed values: tests/test_grpo_loss.py."""
    a = adv.unsqueeze(1)                                                   # (G, 1)
    ratio = torch.exp(masked_log_ratio(logp, old_logp, mask))              # 1 at padding
    pg1 = -a * ratio
    pg2 = -a * ratio.clamp(1 - eps_clip, 1 + eps_clip)
    clipped = torch.maximum(pg1, pg2)
    pg = torch.where(a < 0, torch.minimum(clipped, -a * dual_clip), clipped)
    pg_loss = masked_mean(pg, mask)
    if beta > 0:
        kl = masked_mean(low_var_kl(logp, ref_logp, mask), mask)
        loss = pg_loss + beta * kl
    else:
        kl, loss = torch.zeros((), dtype=pg_loss.dtype, device=pg_loss.device), pg_loss
    with torch.no_grad():
        clip_frac = masked_mean((pg2 > pg1).float(), mask)
        ratio_mean = masked_mean(ratio, mask)
    return LossParts(loss=loss, pg=pg_loss.detach(), kl=kl.detach(), clip_frac=clip_frac, ratio_mean=ratio_mean)


def reference_logprobs(policy: Policy, prompt: Prompt, tokens: torch.Tensor, temperature: float,
                       shared: bool) -> torch.Tensor:
    """Log-probs under the base policy: the adapter switched off, no grad."""
    with torch.no_grad(), policy.adapter_off():
        return answer_logprobs(policy, prompt, tokens, temperature, shared)


def old_logprobs(policy: Policy, prompt: Prompt, tokens: torch.Tensor, mask: torch.Tensor, temperature: float,
                 shared: bool) -> torch.Tensor:
    """(G, L) log-probs of the step's policy (the adapter on, no grad) with the numerics of the
    training forward in `update`: the same path, mode, autocast and micro-batches. As verl
    recomputes them before its updates; at the first update of a step, ratio = 1 exactly.
    0 at padding, as the sampler's."""
    if not policy.model.training:  # as _backward: train mode (no dropout in the adapter)
        policy.model.train()
    g = tokens.shape[0]
    chunk = min(policy.answers_per_forward or g, g)
    with torch.no_grad(), policy.autocast():
        parts = [answer_logprobs(policy, prompt, tokens[i:i + chunk], temperature, shared)
                 for i in range(0, g, chunk)]
    lp = torch.cat(parts)
    return torch.where(mask.bool(), lp, torch.zeros_like(lp))


@dataclass
class UpdateStats:
    loss: float
    pg: float
    kl: float
    clip_frac: float
    ratio_mean: float
    grad_norm: float


def update(policy: Policy, optimizer: torch.optim.Optimizer, prompt: Prompt, tokens: torch.Tensor,
           mask: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, *, temperature: float,
           eps_clip: float, dual_clip: float, beta: float, grad_clip: float, shared: bool) -> UpdateStats:
    """One optimiser step on one prompt's G answers.

    When the G answers do not fit in one training forward (CUDA out of memory), the
    step is redone in micro-batches of half as many answers (each with the prompt,
    gradients accumulated: the same step), and the policy remembers the size that fit."""
    return _fitting(policy, optimizer, tokens.shape[0], lambda chunk: _update(
        policy, optimizer, prompt, tokens, mask, old_logp, adv, chunk, temperature=temperature,
        eps_clip=eps_clip, dual_clip=dual_clip, beta=beta, grad_clip=grad_clip, shared=shared))


def _fitting(policy: Policy, optimizer: torch.optim.Optimizer, g: int, run):
    """run(chunk), chunk = the answers per training forward (all g, or the size that fit before); on
    CUDA out of memory, the gradients cleared and run again with half as many, remembered by the policy."""
    while True:
        chunk = min(policy.answers_per_forward or g, g)
        try:
            return run(chunk)
        except torch.OutOfMemoryError:
            if chunk <= 1:
                raise
            optimizer.zero_grad(set_to_none=True)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            policy.answers_per_forward = (chunk + 1) // 2


def _update(policy: Policy, optimizer: torch.optim.Optimizer, prompt: Prompt, tokens: torch.Tensor,
            mask: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, chunk: int, *, temperature: float,
            eps_clip: float, dual_clip: float, beta: float, grad_clip: float, shared: bool) -> UpdateStats:
    """The update over micro-batches of `chunk` answers (`_backward`), clipped, one optimizer step."""
    sums = _backward(policy, optimizer, prompt, tokens, mask, old_logp, adv, chunk, temperature=temperature,
                     eps_clip=eps_clip, dual_clip=dual_clip, beta=beta, shared=shared)
    norm = apply(optimizer, grad_clip)
    *values, grad_norm = torch.cat([sums, norm.double().view(1).to(sums.device)]).tolist()  # the one sync
    return UpdateStats(grad_norm=grad_norm, **dict(zip(STAT_NAMES, values)))


STAT_NAMES = ("loss", "pg", "kl", "clip_frac", "ratio_mean")


def apply(optimizer: torch.optim.Optimizer, grad_clip: float) -> torch.Tensor:
    """The gradient in the trained parameters' .grad clipped to norm `grad_clip`, one optimizer step;
    returns the norm before clipping."""
    params = [p for group in optimizer.param_groups for p in group["params"]]  # the trained ones, no walk
    norm = torch.nn.utils.clip_grad_norm_(params, grad_clip)
    optimizer.step()
    return norm


def gradient(policy: Policy, optimizer: torch.optim.Optimizer, prompt: Prompt, tokens: torch.Tensor,
             mask: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, *, temperature: float,
             eps_clip: float, dual_clip: float, beta: float, shared: bool, scale: float = 1.0) -> torch.Tensor:
    """The gradient of one prompt's loss times `scale` left in the trained parameters' .grad (set anew),
    no step: the part `update` does before clipping (prompts_per_update: step.train_step, on K processes
    too; scale 0: an FSDP stand-in). Returns the (5,) float64 STAT_NAMES of the loss. Micro-batches on CUDA out
    of memory, as `update`."""
    return _fitting(policy, optimizer, tokens.shape[0], lambda chunk: _backward(
        policy, optimizer, prompt, tokens, mask, old_logp, adv, chunk, temperature=temperature,
        eps_clip=eps_clip, dual_clip=dual_clip, beta=beta, shared=shared, scale=scale))


def _backward(policy: Policy, optimizer: torch.optim.Optimizer, prompt: Prompt, tokens: torch.Tensor,
              mask: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, chunk: int, *, temperature: float,
              eps_clip: float, dual_clip: float, beta: float, shared: bool, scale: float = 1.0) -> torch.Tensor:
    """Gradients from zero over micro-batches of `chunk` answers: each part's token-mean loss weighted
    by its share of the answer tokens, so the sum is the group's token-mean loss. (5,) float64 stats."""
    optimizer.zero_grad(set_to_none=True)
    total = mask.sum().clamp(min=1.0)
    sums = torch.zeros(len(STAT_NAMES), dtype=torch.float64, device=tokens.device)
    for s in (slice(i, i + chunk) for i in range(0, tokens.shape[0], chunk)):
        with policy.autocast():  # the forwards only; backward runs in the dtypes they chose
            ref = reference_logprobs(policy, prompt, tokens[s], temperature, shared) if beta > 0 else None
            if not policy.model.training:  # train() walks every module: only when it changes something
                policy.model.train()
            logp = answer_logprobs(policy, prompt, tokens[s], temperature, shared)
            parts = grpo_loss(logp, old_logp[s], ref, adv[s], mask[s], eps_clip, dual_clip, beta)
        w = mask[s].sum() / total
        (parts.loss * w if scale == 1.0 else parts.loss * (w * scale)).backward()
        with torch.no_grad():
            sums += w * torch.stack([getattr(parts, k).detach().double() for k in STAT_NAMES])
    return sums
