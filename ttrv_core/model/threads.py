"""torch's thread count for the run at hand: one for a small model on a CPU, else the process's own.
The front ends call `set_threads_for` after loading; the library never changes the count itself."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from ttrv_core.model.policy import Policy


SMALL_MODEL_PARAMS = 50_000_000
"""Below this size a CPU run is fastest on one thread (set_threads_for)."""

_threads = {"own": 0, "set": 0}
"""own: the process's thread count apart from set_threads_for (what torch started with, or what the
process set itself since); set: the count set_threads_for set last."""


def set_threads_for(policy: Policy) -> None:
    """Process-wide: torch.set_num_threads(1) when `policy` is a small model on a CPU, else the
    process's own count, so that each run gets its own count and not what the last run left. The
    own count is torch's before the first call, or any the process set itself since (a count that is
    not the one set here last). The front ends call it after load_policy; the library never changes
    it itself.

    Tiny matmuls (the demo model): a second thread only adds synchronisation, and on a
    busy machine it waits for a descheduled core (bench/RESULTS.md, "Timings behind the code's choices")."""
    now = torch.get_num_threads()
    if not _threads["set"] or now != _threads["set"]:
        _threads["own"] = now
    small = policy.device.type == "cpu" and sum(p.numel() for p in policy.base.parameters()) < SMALL_MODEL_PARAMS
    _threads["set"] = 1 if small else _threads["own"]
    torch.set_num_threads(_threads["set"])
