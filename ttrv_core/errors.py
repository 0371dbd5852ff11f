"""Errors a user can act on: each message says what went wrong and what to do.

    ModelLoadError   the model could not be loaded (unknown id, no network, gated,
                     unsupported architecture, custom code refused, ...)
    OutOfMemory      the GPU ran out of memory; the message names what to lower

`explain_oom` turns torch's out-of-memory error into an OutOfMemory raised from
it, so the CLI and the app show one sentence instead of a stack trace.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch


class TTRVError(RuntimeError):
    """An error whose message is meant for the user, not a stack trace."""


class ModelLoadError(TTRVError):
    """A model could not be loaded; the message says why and what to do."""


class OutOfMemory(TTRVError):
    """The accelerator ran out of memory; the message says what to lower."""


def is_oom(e: BaseException) -> bool:
    """torch.OutOfMemoryError, or an older-style RuntimeError that says so (not one of ours: a
    TTRVError's message is for the user already, and may mention memory)."""
    if isinstance(e, torch.OutOfMemoryError):
        return True
    return isinstance(e, RuntimeError) and not isinstance(e, TTRVError) and "out of memory" in str(e).lower()


def oom_message(stage: str, n_votes: int | None = None, n_train: int | None = None,
                max_pixels: int | None = None, precision: str | None = None,
                checkpointing: str | None = None) -> str:
    """What to lower, with the values in force where known.

    >>> oom_message("sampling", n_votes=32, n_train=16).splitlines()[0]
    'Out of GPU memory while sampling. Lower one of these and run again:'
    """
    def now(v) -> str:
        return f" (now {v})" if v is not None else ""
    lines = [
        f"Out of GPU memory while {stage}. Lower one of these and run again:",
        f"- votes per image N (n_votes){now(n_votes)}: the N answers are decoded together",
        f"- trained answers G (n_train){now(n_train)}: the training forward holds G answers",
        f"- image size (max_pixels){now(max_pixels)}: image tokens make most of the prompt",
    ]
    if checkpointing in ("off", "mlp"):  # known for training stages only
        lines.append(f"- or recompute activations in training (gradient checkpointing 'mlp' or 'layers')"
                     f"{now(checkpointing)}")
    if precision != "4bit":
        lines.append(f"- or load the model in 4-bit (precision '4bit'){now(precision)}, or pick a smaller model")
    else:
        lines.append("- or pick a smaller model")
    return "\n".join(lines)


@contextmanager
def explain_oom(stage: str, **now) -> Iterator[None]:
    """Re-raise an out-of-memory error inside the block as OutOfMemory(oom_message(stage, **now)).

    The cached blocks are released first, so the process can go on (smaller)."""
    try:
        yield
    except Exception as e:  # noqa: BLE001 - only OOMs are translated, the rest re-raised as is
        if not is_oom(e):
            raise
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        raise OutOfMemory(oom_message(stage, **now)) from e
