"""A run folder's checkpoints and resuming from them (the folder's layout: folder.py).

After each step `save_checkpoint` writes checkpoints/step-NNNNNN/ (the adapter, state.pt, the guard's
kept weights) into `step-NNNNNN.tmp/`, fsynced and renamed into place (atomic); the older checkpoint
is deleted, and only then is the step's event appended (fsynced). So the newest complete checkpoint is
never behind the log, and at most one step ahead of it (a kill between the rename and the append):
`prepare_resume` then appends the step's event from state.pt. A half-written last line of
events.jsonl (a kill mid-write) is cut off when the folder is opened again (`cut_partial_line`).
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from ttrv_core.errors import TTRVError
from ttrv_core.events import eval_from_json
from ttrv_core.method.engine import Resume, TrainState
from ttrv_core.model.loading import save_adapter
from ttrv_core.model.policy import Policy

CHECKPOINTS = "checkpoints"
STATE_FORMAT = 1


class ResumeError(TTRVError):
    """A run folder cannot be resumed; the message says why."""


def save_checkpoint(root: Path, policy: Policy, state: TrainState, event: dict) -> Path:
    """checkpoints/step-NNNNNN/ with the adapter, state.pt and the guard's kept weights;
    written aside, fsynced and renamed into place; the older checkpoint is then removed."""
    import torch
    from safetensors.torch import save_file

    ckdir = Path(root) / CHECKPOINTS
    ckdir.mkdir(exist_ok=True)
    final = ckdir / f"step-{state.step:06d}"
    tmp = ckdir / (final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    older = [p for p in ckdir.iterdir() if p.name.startswith("step-") and not p.name.endswith(".tmp")
             and p != final]
    written = write_adapter(policy, tmp / "adapter")
    (tmp / "guard").mkdir()
    for step, weights in state.guard_kept or []:
        # a kept state never changes: link the file of an older checkpoint where there is one
        name = f"step-{step:06d}.safetensors"
        have = [p / "guard" / name for p in older if (p / "guard" / name).is_file()]
        if not (have and _link(have[0], tmp / "guard" / name)):
            save_file({n: w.detach().cpu().contiguous() for n, w in weights.items()}, str(tmp / "guard" / name))
            written.append(tmp / "guard" / name)
    torch.save({"format": STATE_FORMAT, "step": state.step, "optimizer": state.optimizer,
                "scheduler": state.scheduler, "sampler_rng": state.sampler_rng.cpu(),
                "torch_rng": state.torch_rng, "guard": state.guard,
                "guard_kept": [s for s, _ in state.guard_kept or []],
                "event": json.dumps(event, ensure_ascii=False)}, tmp / "state.pt")
    for path in written + [tmp / "state.pt"]:  # linked files are on disk already
        _fsync(path)
    for folder in (tmp / "adapter", tmp / "guard", tmp):
        _fsync(folder)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    _fsync(ckdir)
    for p in older:
        shutil.rmtree(p, ignore_errors=True)
    return final


def read_events(root: Path) -> list[dict]:
    """events.jsonl as dicts; a half-written last line (a kill mid-write) is left out."""
    path = Path(root) / "events.jsonl"
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8").split("\n")
    out = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if i < len(lines) - 1 and any(rest.strip() for rest in lines[i + 1:]):
                raise ResumeError(f"{path}: line {i + 1} is not JSON; the log is damaged") from None
    return out


def latest_checkpoint(root: Path) -> Path | None:
    ckdir = Path(root) / CHECKPOINTS
    done = sorted(p for p in ckdir.glob("step-*") if p.is_dir() and not p.name.endswith(".tmp")) \
        if ckdir.is_dir() else []
    return done[-1] if done else None


def load_checkpoint(path: Path) -> tuple[TrainState, dict]:
    """A checkpoint folder back as (TrainState, the step's event line); ResumeError if unreadable."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file

    part = path / "state.pt"
    try:
        st = torch.load(part, map_location="cpu", weights_only=True)
        if not isinstance(st, dict) or st.get("format") != STATE_FORMAT:
            raise ValueError(f"not a state file of format {STATE_FORMAT}")
        event = json.loads(st["event"])
        kept = []
        for s in st["guard_kept"] if st["guard"] is not None else []:
            part = path / "guard" / f"step-{s:06d}.safetensors"
            kept.append((s, load_file(str(part))))
        part = path / "adapter" / "adapter_config.json"
        json.loads(part.read_text(encoding="utf-8"))
        part = path / "adapter" / "adapter_model.safetensors"
        with safe_open(str(part), "pt") as f:  # the header is enough: load_policy reads the rest
            f.keys()
    except Exception as e:  # noqa: BLE001 - any damage is the same message
        raise ResumeError(f"the checkpoint file {part} cannot be read ({type(e).__name__}: {e}); "
                          "the run cannot be resumed from it") from e
    state = TrainState(st["step"], st["optimizer"], st["scheduler"], st["sampler_rng"], st["torch_rng"],
                       st["guard"], kept if st["guard"] is not None else None)
    return state, event


@dataclass
class ResumePoint:
    """What `--resume` needs from a run folder."""
    resume: Resume
    checkpoint: Path             # its adapter/ holds the LoRA weights to load
    run_start: dict              # the run's first run_start line (config, items, steps)
    missing_event: dict | None   # the checkpoint's step event, when the kill came before its append


def prepare_resume(root: Path) -> ResumePoint:
    """Check that a run folder can be resumed and read where it stopped; ResumeError if not."""
    root = Path(root)
    if not (root / "config.json").is_file():
        raise ResumeError(f"{root} is not a run folder (no config.json)")
    events = read_events(root)
    starts = [i for i, e in enumerate(events) if e.get("type") == "run_start"]
    ends = [e for e in events[starts[-1] if starts else 0:] if e.get("type") == "run_end"]
    if ends and not ends[-1]["stopped"]:  # a stopped run can go on; a finished one cannot
        raise ResumeError(f"the run in {root} is already finished (results.csv, summary.json); nothing to resume")
    before = next((eval_from_json(e) for e in events if e.get("type") == "eval" and e["phase"] == "before"), None)
    ck = latest_checkpoint(root)
    steps = [e["step"] for e in events if e.get("type") == "step"]
    if ck is None:
        if not steps:
            raise ResumeError(f"the run in {root} ended before its first step completed: nothing to resume; "
                              "start it again")
        raise ResumeError(f"no checkpoint in {root / CHECKPOINTS}: the run cannot be resumed "
                          f"(its log reaches step {steps[-1]})")
    state, event = load_checkpoint(ck)
    last = steps[-1] if steps else 0
    if last not in (state.step, state.step - 1):
        raise ResumeError(f"the checkpoint ({ck.name}) does not match events.jsonl (last step {last}); "
                          "the run folder was changed by hand")
    return ResumePoint(Resume(state, before), ck, events[starts[0]] if starts else {},
                       event if last == state.step - 1 else None)


def cut_partial_line(path: Path) -> None:
    """Drop a last line without its newline: an event half-written when the process died."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    data = path.read_bytes()
    if not data.endswith(b"\n"):
        with open(path, "r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)


def _link(src: Path, dst: Path) -> bool:
    try:
        os.link(src, dst)
        return True
    except OSError:
        return False


def _fsync(path: Path) -> None:
    """Flush a file or a folder's entries to disk: the checkpoint must be there before its event."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_adapter(policy: Policy, folder: Path) -> list[Path]:
    """The LoRA adapter in peft's format (save_pretrained, with peft's model card); returns
    the files written."""
    save_adapter(policy, str(folder))
    return sorted(p for p in folder.iterdir() if p.is_file())

