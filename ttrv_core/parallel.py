"""Data-parallel TTRV: one run on K processes, K = 1 included (torch.distributed).

Launched by `torchrun --nproc_per_node K -m ttrv_core ...` or `accelerate launch ... -m ttrv_core
...` (README, "Many GPUs"; configs/accelerate/); there is no launcher of ours. Every rank runs the
same loop (engine.adapt) and yields the same events; only rank 0 writes the run folder (cli.py).
GPUs: NCCL, one GPU per rank (cuda:LOCAL_RANK); CPUs: gloo.

With config.prompts_per_update = k, a step's prompts (prompts_per_step of them) are cut into
updates of k prompts (the last may hold fewer). For an update with prompts P:

    rank r samples and scores P[r::K], each prompt from its own generator, seeded from
        (seed, step, the prompt's place in the step)        -> the same answers for any K
    g_r = sum over its prompts p of grad L_p                  L_p: p's GRPO loss (grpo.py)
    g   = all_reduce_sum(g_r) / |P|                           the MEAN over the update's prompts
    clip ||g|| to grad_clip, one AdamW step                   the same on every rank

So K processes and one process with the same k compute the same updates; only the order of the
gradient sum may differ (fp32 rounding; tests/test_parallel.py measures it). pi_old of each prompt
is computed before the step's first update, as in the one-process path. The step's votes and
update statistics are gathered to every rank, so that every rank's collapse guard and events
agree. Evaluation: rank r evaluates items[r::K] (each item has its own random stream,
evaluate.py), gathered back in item order.

Failure: every collective waits at most the timeout given to `init` (--dist-timeout). Each rank
records the stage it enters in the launcher's key-value store, and its error there when it raises.
When a rank ends, the others see a collective fail or time out, or get the launcher's SIGTERM, and
raise RankFailure with a message that names the rank that ended and its stage. A step cut short
is undone; the last complete checkpoint stays (runs.py) for `--resume`.
"""
from __future__ import annotations

import hashlib
import os
import signal
import socket
import sys
import time
from datetime import timedelta
from typing import Callable, Sequence, TypeVar

import torch

from .config import TTRVConfig
from .data import Item
from .errors import TTRVError
from .events import StepEvent
from .groups import Group, score, step_metrics
from .grpo import STAT_NAMES, UpdateStats, gradient, old_logprobs
from .models import Policy
from .rollout import prepare_prompt, sample

T = TypeVar("T")
DEFAULT_TIMEOUT_S = 600.0
"""Collective timeout: NCCL's own default (10 minutes); an evaluation batch or a step on a large
model can keep a rank from the next collective for minutes."""
EXIT_AT = "TTRV_TEST_EXIT_AT"
"""Tests only: 'RANK@STAGE' makes that rank os._exit(9) as it enters STAGE (a killed process);
'RANK@STAGE@hang' makes it sleep there instead (a stuck one)."""


class RankFailure(TTRVError):
    """A rank of the run ended or failed; the message names it and its stage."""


_stage = "start"
_failing = False


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main() -> bool:
    return rank() == 0


def fsdp_requested() -> bool:
    """Launched under an accelerate FSDP config (configs/accelerate/fsdp_qlora.yaml): a 4-bit base
    then stores its weights as FSDP can shard them (models.py). The policy itself is not wrapped in
    FSDP yet (FSDP_NOTE)."""
    return os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true")


FSDP_NOTE = ("FSDP: the 4-bit weights are stored in the compute dtype, as FSDP needs, but the policy is not "
             "sharded: each process holds the whole model, as with configs/accelerate/ddp.yaml (README, Many GPUs)")


def _dist():
    """torch.distributed while this process is in a group of several, else None."""
    import torch.distributed as dist
    return dist if size() > 1 and dist.is_initialized() else None


def init(timeout_s: float = DEFAULT_TIMEOUT_S, device: str | None = None) -> str | None:
    """Join the run's process group (one process: nothing); returns the device this rank uses:
    cuda:LOCAL_RANK with NCCL where there are GPUs, else the CPU with gloo."""
    if size() == 1:
        return device
    import torch.distributed as dist
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() and (device is None or device.startswith("cuda"))
    if cuda:
        torch.cuda.set_device(local)
    dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(seconds=timeout_s))
    _put(f"ttrv/pid/{rank()}", f"{socket.gethostname()} {os.getpid()}")
    signal.signal(signal.SIGTERM, _on_sigterm)
    return f"cuda:{local}" if cuda else "cpu"


def finish(code: int) -> int:
    """Leave the group. After a failure, end the process at once: tearing down a group whose
    other processes are gone can block."""
    dist = _dist()
    if dist is None:
        return code
    if code == 0 and not _failing:
        dist.destroy_process_group()
        return code
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 1)


def stage(name: str) -> None:
    """This rank now works on `name` ("sample step 3"): kept for the failure message."""
    global _stage
    _stage = name
    if _dist():
        _put(f"ttrv/stage/{rank()}", name)
    hook = os.environ.get(EXIT_AT, "").split("@")
    if hook[:2] == [str(rank()), name]:
        print(f"{EXIT_AT}: rank {rank()} {'hangs' if hook[2:] == ['hang'] else 'exits'} in stage '{name}' "
              f"at {time.time():.3f}", file=sys.stderr, flush=True)
        if hook[2:] == ["hang"]:
            time.sleep(10 ** 6)
        os._exit(9)


def failed(e: BaseException) -> str:
    """This rank's error as the run's message, also recorded for the other ranks."""
    global _failing
    if size() == 1:
        return str(e)
    _failing = True
    first = str(e).splitlines()[0][:300] if str(e) else ""
    _put(f"ttrv/error/{rank()}", f"{type(e).__name__}: {first}")
    return str(e) if isinstance(e, RankFailure) else f"rank {rank()} failed in stage '{_stage}': {e}"


def report(reason: str) -> str:
    """The failure message: the ranks that ended (with their last stage) first, then this one."""
    global _failing
    _failing = True
    ended, others = [], []
    for r in range(size()):
        if r == rank():
            continue
        where = f"in stage '{_get(f'ttrv/stage/{r}') or 'start'}'"
        if err := _get(f"ttrv/error/{r}"):
            ended.append(f"rank {r} failed {where}: {err}")
        elif _alive(r) is False:
            ended.append(f"rank {r} died {where} (it ended without a message: killed, or out of host memory)")
        else:
            others.append(f"rank {r} was {where}")
    return "; ".join(ended + [f"rank {rank()} stopped in stage '{_stage}': {reason}"] + others)


def _on_sigterm(signum, frame) -> None:
    if not _failing:
        raise RankFailure(report("stopped by the launcher (SIGTERM): another process of the run ended"))


def _store():
    from torch.distributed.distributed_c10d import _get_default_store
    return _get_default_store()


def _put(key: str, value: str) -> None:
    try:
        _store().set(key, value)
    except Exception:  # noqa: BLE001 - the store is for the failure message only
        pass


def _get(key: str) -> str | None:
    try:
        s = _store()
        return s.get(key).decode() if s.check([key]) else None
    except Exception:  # noqa: BLE001
        return None


def _alive(r: int) -> bool | None:
    """Whether rank r's process still runs (None: unknown, e.g. on another machine)."""
    got = _get(f"ttrv/pid/{r}")
    if not got or not os.path.isdir("/proc/self"):
        return None
    host, pid = got.split()
    if host != socket.gethostname():
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")  # a zombie has ended
    except FileNotFoundError:
        return False
    except OSError:
        return None


def _collective(what: str, fn: Callable[[], T]) -> T:
    try:
        return fn()
    except RankFailure:
        raise
    except RuntimeError as e:  # gloo: a closed connection or a timeout; NCCL: its watchdog
        raise RankFailure(report(f"{what} failed ({str(e).splitlines()[0][:300]})")) from None


# --------------------------------------------------------------------------- shards and collectives

def shard(seq: Sequence[T]) -> list[T]:
    """This rank's share: every K-th element from its rank."""
    return list(seq)[rank()::size()]


def unshard(parts: Sequence[Sequence[T]]) -> list[T]:
    """The shards of all ranks back in the order of the sequence they were cut from."""
    k = len(parts)
    return [parts[i % k][i // k] for i in range(sum(map(len, parts)))]


def all_gather(obj, what: str) -> list:
    """Every rank's `obj`, in rank order (pickled: small things only)."""
    dist = _dist()
    if dist is None:
        return [obj]
    out = [None] * size()
    _collective(what, lambda: dist.all_gather_object(out, obj))
    return out


def gather_shards(mine: list[T], what: str) -> list[T]:
    """The ranks' shards (from `shard`) gathered back into one list, in order, on every rank."""
    return unshard(all_gather(mine, what)) if _dist() else mine


def all_reduce_(tensors: list[torch.Tensor], what: str) -> None:
    """Sum in place over the ranks (one flat buffer: one collective)."""
    dist = _dist()
    if dist is None or not tensors:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    _collective(what, lambda: dist.all_reduce(flat))
    i = 0
    for t in tensors:
        t.copy_(flat[i:i + t.numel()].view_as(t))
        i += t.numel()


def broadcast_(tensors: list[torch.Tensor], what: str) -> None:
    """Rank 0's values into every rank's tensors."""
    dist = _dist()
    if dist is None:
        return
    for t in tensors:
        _collective(what, lambda t=t: dist.broadcast(t.data, 0))


def prompt_generator(device: torch.device, seed: int, step: int, index: int) -> torch.Generator:
    """The random stream of the prompt at `index` in `step`: the same on whichever rank samples it."""
    digest = hashlib.sha256(f"{seed}\0train\0{step}\0{index}".encode()).digest()
    return torch.Generator(device=device).manual_seed(int.from_bytes(digest[:8], "little") >> 1)


# --------------------------------------------------------------------------- the step

def step(step: int, total: int, batch: list[Item], policy: Policy, opt, cfg: TTRVConfig,
         should_stop: Callable[[], bool] = lambda: False) -> StepEvent | None:
    """One step, k = cfg.prompts_per_update prompts per update, this rank's share of each (module
    docstring). None when a stop came first (one process: the step is undone, as engine._step)."""
    t0 = time.time()
    shared = cfg.shared_prefix and policy.family.shared_prefix
    k = cfg.prompts_per_update
    updates = [range(i, min(i + k, len(batch))) for i in range(0, len(batch), k)]   # prompt indices
    stage(f"sample step {step}")
    groups: dict[int, Group] = {}
    for i in (i for u in updates for i in shard(u)):
        if should_stop():
            return None
        prompt = prepare_prompt(policy, batch[i].image(cfg.video_frames), batch[i].prompt)
        ro = sample(policy, prompt, cfg.n_votes, cfg.temperature, cfg.top_p, cfg.max_new_tokens,
                    prompt_generator(policy.device, cfg.seed, step, i), shared=shared)
        groups[i] = score(batch[i], prompt, ro, cfg)
    policy.decoders.release()  # the end of the sampling phase: training needs the memory
    t1 = time.time()
    stage(f"update step {step}")
    olds = {i: old_logprobs(policy, g.prompt, g.train.tokens, g.train.mask, cfg.temperature, shared)
            if cfg.recompute_old_logprobs else g.train.logprobs for i, g in groups.items()}
    params = [p for group in opt.param_groups for p in group["params"]]
    kept = [p.detach().clone() for p in params]  # the weights before the step, to undo it
    sums, norms = {}, {}
    try:
        for n, u in enumerate(updates, 1):
            if should_stop():
                raise _Stop
            acc = [torch.zeros_like(p) for p in params]   # this rank's sum of its prompts' gradients
            for i in shard(u):
                g = groups[i]
                sums[i] = gradient(policy, opt, g.prompt, g.train.tokens, g.train.mask, olds[i], g.advantages,
                                   temperature=cfg.temperature, eps_clip=cfg.eps_clip, dual_clip=cfg.dual_clip,
                                   beta=cfg.beta, shared=shared)
                for a, p in zip(acc, params):
                    if p.grad is not None:
                        a += p.grad
            all_reduce_(acc, f"all-reduce of update {n} in step {step}")
            for a, p in zip(acc, params):
                p.grad = a.div_(len(u))                   # the mean over the update's prompts
            norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            norms.update((i, norm) for i in shard(u))
    except BaseException as e:  # a stop, or a failure (another rank ended): undo the step
        with torch.no_grad():
            for p, w in zip(params, kept):
                p.copy_(w)
        if isinstance(e, _Stop):
            return None
        raise
    stage(f"gather step {step}")
    mine = [(i, groups[i].votes, groups[i].rewards, groups[i].stats,
             UpdateStats(grad_norm=float(norms[i]), **dict(zip(STAT_NAMES, sums[i].tolist())))) for i in groups]
    got = sorted((x for part in all_gather(mine, f"gathering step {step}") for x in part), key=lambda x: x[0])
    everyone = [Group(batch[i], None, votes, rewards, None, None, st) for i, votes, rewards, st, _ in got]
    ups = [u for *_, u in got]
    stage(f"after step {step}")  # the guard, the checkpoint (rank 0)
    return StepEvent(step, total, [g.stats for g in everyone], step_metrics(everyone, ups, opt, (t0, t1, time.time())))


class _Stop(Exception):
    pass
