"""The runs of a long-lived process (the app) on one kept base model.

    run(cfg, items, ..., keep) -> events:
        the policy: the kept base model when the model, precision, device and trust are the same
                    (kept_base.KeptBase; loaded otherwise), a fresh LoRA adapter from the run's seed
        the run folder: config.json, problems.txt, then engine.adapt recorded into it (folder.record);
                    a download on a Space, so the model is named as `shown` names it, never by a
                    path of the server
        the before-evaluation: the last complete one kept with the model is used again when nothing
                    it depends on changed (depends); a complete new one replaces it

One run at a time holds the kept model (keep.lock). The app calls this inside its GPU-held function
(app.py's gpu_job, spaces.GPU on a Space); benchmarks call it without the app.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable, Iterator, Sequence

from ttrv_core import demos
from ttrv_core.config import TTRVConfig
from ttrv_core.events import EvalResult, Event
from ttrv_core.inputs.dataset import Item
from ttrv_core.method.engine import adapt
from ttrv_core.model import loading, threads
from ttrv_core.model.kept_base import KeptBase
from ttrv_core.model.policy import Policy
from ttrv_core.problems import Problem
from ttrv_core.runs import model_card
from ttrv_core.runs.folder import RunDir, record


def run(cfg: TTRVConfig, items: Sequence[Item], single: str | None, out: Path, meta: dict,
        problems: Sequence[Problem], should_stop: Callable[[], int], keep: KeptBase,
        trust_remote_code: bool = False) -> Iterator[Event]:
    """A run on the kept base model, recorded into the run folder `out` (made once the model has loaded)."""
    with keep.lock:
        policy = loading.load_policy(cfg.model, cfg.precision, None, cfg.lora_r, cfg.lora_alpha, cfg.seed,
                                    max_pixels=cfg.max_pixels or None, trust_remote_code=trust_remote_code,
                                    keep=keep)
        threads.set_threads_for(policy)  # process-wide (torch.set_num_threads): one for a small model on a CPU
        run_dir = RunDir(out)
        run_dir.write_config({**meta, "config": {**meta["config"], "model": shown(cfg.model)}})
        run_dir.write_problems(problems)
        key = ("before", depends(policy, items, cfg))
        events = adapt(cfg, policy, items, single=single, should_stop=should_stop, before=keep.memo.get(key))
        for ev in record(events, run_dir, policy, items):
            if isinstance(ev, EvalResult) and ev.phase == "before" and len(ev.items) == len(items):
                keep.memo = {key: ev}   # the last complete one only
            yield ev


def shown(model: str) -> str:
    """The model as a run folder of the app names it: a bundled demo by its name ('demo:format'),
    a hub id as it is, another local folder by its own name only (model_card.model_name)."""
    name = demos.public(model)
    return name if name != model else model_card.model_name(model)


def depends(policy: Policy, items: Sequence[Item], cfg: TTRVConfig) -> str:
    """A digest of what a run's before-evaluation depends on besides the base model's weights: the
    evaluation settings (votes, temperature, top_p, max_new_tokens, video_frames, shared_prefix,
    eval_batch), the seed (of the votes), the model's precision, device and image size cap, and every
    item: id (it seeds the item's votes), task, question, options, answer and the bytes of its file.
    Not the adapter's rank or scale: a run's fresh adapter is zero and evaluate() switches it off, so
    it cannot change the before-evaluation; nor the training settings. Two runs on one kept base
    model (kept_base.KeptBase) with the same digest evaluate alike before training: the app reuses the
    first's (engine.adapt's before=)."""
    h = hashlib.sha256(repr((cfg.votes_for_eval, cfg.temperature, cfg.top_p, cfg.max_new_tokens, cfg.video_frames,
                             cfg.seed, cfg.shared_prefix, cfg.eval_batch,
                             policy.precision, str(policy.device), policy.max_pixels)).encode())
    for it in items:
        if it.source is not None and not it.path.is_file():   # a dataset row not read yet: its bytes now
            it.source(it.path)
        h.update(repr((it.id, it.task, it.question, it.options, it.answer)).encode())
        h.update(hashlib.sha256(it.path.read_bytes()).digest() if it.path is not None else b"-")
    return h.hexdigest()
