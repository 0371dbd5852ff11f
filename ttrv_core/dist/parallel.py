"""Data-parallel TTRV: one run on K processes, K = 1 included (torch.distributed).

Launched by `torchrun --nproc_per_node K -m ttrv_core ...` or `accelerate launch ... -m ttrv_core
...` (README, "Many GPUs"; configs/accelerate/); there is no launcher of ours. Every rank runs the
same loop (engine.adapt) and yields the same events; only rank 0 writes the run folder (cli/).
GPUs: NCCL, one GPU per rank (cuda:LOCAL_RANK); CPUs: gloo.

Each rank takes a share of every optimizer update's prompts (config.prompts_per_update = k,
method/step.py, `train_step`): it samples and scores them, their LoRA gradients are summed over the
ranks (`all_reduce_`), and each rank takes the same AdamW step, so that K processes compute what
one does with the same k. Evaluation: rank r evaluates items[r::K] (each item has its own random
stream, method/evaluate.py), gathered back in item order (`gather_shards`).

Failure: every collective waits at most the timeout given to `init` (--dist-timeout). Each rank
records the stage it enters in the launcher's key-value store, and its error there when it raises.
When a rank ends, the others see a collective fail or time out, or get the launcher's SIGTERM, and
raise RankFailure with a message that names the rank that ended and its stage. A step cut short
is undone; the last complete checkpoint stays (runs/checkpoint.py) for `--resume`.

FSDP, the language model's layers sharded over the ranks: fsdp.py.

Not done: stops (should_stop) are not shared between ranks: the CLI, the one front end that
launches several processes, never stops a run.
"""
from __future__ import annotations

import os
import signal
import socket
import sys
import time
from contextlib import contextmanager
from datetime import timedelta
from typing import Callable, Iterator, Sequence, TypeVar

import torch

from ttrv_core.errors import TTRVError

T = TypeVar("T")
DEFAULT_TIMEOUT_S = 600.0   # NCCL's own: an evaluation batch of a large model can keep a rank for minutes
EXIT_AT = "TTRV_TEST_EXIT_AT"
"""Tests only: 'RANK@STAGE' makes that rank os._exit(9) as it enters STAGE (a killed process);
'RANK@STAGE@hang' makes it sleep there instead (a stuck one), 'RANK@STAGE@oom' raise torch's
out-of-memory error (as CUDA would)."""


class RankFailure(TTRVError):
    """A rank of the run ended or failed; the message names it and its stage."""


_stage = "start"
_failing = False
_held, _pending = 0, False   # inside `sheltered` blocks; a SIGTERM came during one


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


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


def is_main() -> bool:
    return rank() == 0


def stage(name: str) -> None:
    """This rank now works on `name` ("sample step 3"): kept for the failure message."""
    global _stage
    _stage = name
    if _dist():
        _put(f"ttrv/stage/{rank()}", name)
    hook = os.environ.get(EXIT_AT, "").split("@")
    if hook[:2] == [str(rank()), name]:
        act = hook[2] if hook[2:] else "exit"
        verb = {"exit": "exits", "hang": "hangs", "oom": "runs out of memory"}[act]
        print(f"{EXIT_AT}: rank {rank()} {verb} in stage '{name}' at {time.time():.3f}", file=sys.stderr, flush=True)
        if act == "oom":
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        if act == "hang":
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


SIGTERM_REASON = "stopped by the launcher (SIGTERM): another process of the run ended"


def _on_sigterm(signum, frame) -> None:
    global _pending
    if _failing:
        return
    if _held:
        _pending = True
        return
    raise RankFailure(report(SIGTERM_REASON))


@contextmanager
def sheltered() -> Iterator[None]:
    """A block that the launcher's SIGTERM does not cut (a checkpoint and its event line being
    written: the launcher waits 30 s before it kills); the failure is raised after it."""
    global _held, _pending
    _held += 1
    try:
        yield
    finally:
        _held -= 1
    if not _held and _pending and not _failing:
        _pending = False
        raise RankFailure(report(SIGTERM_REASON))


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


def collective(what: str, fn: Callable[[], T]) -> T:
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
    collective(what, lambda: dist.all_gather_object(out, obj))
    return out


def gather_shards(mine: list[T], what: str) -> list[T]:
    """The ranks' shards (from `shard`) gathered back into one list, in order, on every rank."""
    return unshard(all_gather(mine, what)) if _dist() else mine


def all_reduce_(tensors: list[torch.Tensor], what: str) -> None:
    """Sum in place over the ranks (one flat buffer: one collective). FSDP shards (DTensors) are left
    out: FSDP has summed their gradients (shard_policy)."""
    dist = _dist()
    tensors = [t for t in tensors if not is_dtensor(t)]
    if dist is None or not tensors:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    collective(what, lambda: dist.all_reduce(flat))
    i = 0
    for t in tensors:
        t.copy_(flat[i:i + t.numel()].view_as(t))
        i += t.numel()


def broadcast_(tensors: list[torch.Tensor], what: str) -> None:
    """Rank 0's values into every rank's tensors (FSDP shards left out: shard_policy shared them)."""
    dist = _dist()
    if dist is None:
        return
    for t in (t for t in tensors if not is_dtensor(t)):
        collective(what, lambda t=t: dist.broadcast(t.data, 0))


def is_dtensor(t) -> bool:
    from torch.distributed.tensor import DTensor
    return isinstance(t, DTensor)
