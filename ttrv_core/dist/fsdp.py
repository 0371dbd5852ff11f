"""FSDP under data-parallel TTRV (parallel.py): the policy's language model sharded over the ranks.

FSDP (fsdp_requested, several processes: `shard_policy`): torch's fully_shard (FSDP2) over each
decoder layer of the language model; the embeddings, vision tower and LM head stay whole on every
rank. Each forward all-gathers a layer's weights, so every rank runs the same number of forwards:
decoding runs max_new_tokens steps (Policy.lockstep), and a rank with fewer prompts in an update
or fewer items in an evaluation runs a stand-in whose result is dropped (step.train_step: its loss
weighted 0; engine._evaluate_phase). FSDP sums the LoRA gradients itself (a reduce-scatter at each
backward): `all_reduce_` leaves its sharded (DTensor) ones out. The full LoRA weights and optimizer
state are gathered on every rank after each step (`gathered`; rank 0 writes them), so the adapter
and checkpoints are the files of an unsharded run; `resharded` cuts a checkpoint's back.
"""
from __future__ import annotations

import os

import torch

from ttrv_core.dist.parallel import collective, broadcast_, is_dtensor, size
from ttrv_core.errors import TTRVError


def fsdp_requested() -> bool:
    """Launched under an accelerate FSDP config (configs/accelerate/fsdp_qlora.yaml): see FSDP_NOTE."""
    return os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true")


FSDP_NOTE = ("FSDP: with several processes the language model's decoder layers are sharded over them (torch "
             "fully_shard; embeddings, vision tower and LM head whole on each), 4-bit weights stored in the compute "
             "dtype, and every answer decodes max_new_tokens steps, in step on all processes (README, Many GPUs)")


def shard_policy(policy) -> None:
    """FSDP2 over the policy: each decoder layer of its language model sharded over the ranks
    (module docstring). Its LoRA weights become DTensors; gradients are summed, not averaged."""
    from torch.distributed.fsdp import fully_shard
    name = policy.family.lm_module
    lms = [m for n, m in policy.model.named_modules() if n.endswith(name) and isinstance(
        getattr(m, "layers", None), torch.nn.ModuleList)]
    if len(lms) != 1:
        raise TTRVError(f"FSDP: found {len(lms)} '{name}' modules with decoder layers in the model, expected one")
    lm = lms[0]
    trained = [p for p in policy.model.parameters() if p.requires_grad]
    broadcast_(trained, "sharing the adapter")   # while whole: rank 0's weights everywhere
    policy.gathered = {n: p.detach().clone() for n, p in policy.model.named_parameters() if p.requires_grad}
    for layer in lm.layers:
        fully_shard(layer)
    # the language model as FSDP's root, holding none of its own weights: a root keeps its weights
    # gathered after a forward (FSDP2), and the embeddings are used outside it (image tokens merged in)
    inside = {p for layer in lm.layers for p in layer.parameters()}
    fully_shard(lm, ignored_params={p for p in lm.parameters() if p not in inside})
    for m in [*lm.layers, lm]:
        m.set_gradient_divide_factor(1.0)           # the sum over ranks; step.train_step divides by |P|
        m.set_force_sum_reduction_for_comms(True)   # a plain SUM: gloo has neither AVG nor PREMUL_SUM
    policy.lockstep = True
    policy.decoders.no_graph = True   # a recorded CUDA graph would replay a step without its all-gathers


def gathered(obj):
    """`obj` (tensors in dicts, lists, tuples) with each FSDP shard replaced by its full tensor:
    a collective under FSDP, so every rank calls it on the same structure."""
    if is_dtensor(obj):
        return collective("gathering sharded weights", obj.full_tensor)
    if isinstance(obj, dict):
        return {k: gathered(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(gathered(v) for v in obj)
    return obj


def resharded(full: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A full tensor (from a checkpoint) held as `like` is: its shard when `like` is one, else itself.
    Every rank cuts its own shard from its own copy (no collective)."""
    if not is_dtensor(like) or is_dtensor(full):
        return full
    from torch.distributed.tensor import distribute_tensor
    return distribute_tensor(full.to(like.device), like.device_mesh, like.placements, src_data_rank=None)


def stand_ins(n: int, mine: int) -> int:
    """Under FSDP, the items a rank with `mine` of n items adds so that all ranks run as many (0 or 1)."""
    return -(-n // size()) - mine
