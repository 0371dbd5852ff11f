"""What a process that runs one model after another (the app) keeps between its runs: `KeptBase`,
the loaded base model, reused by the next run on the same model, keyed by the model id, the content
of a local model folder (folder_identity), the precision, the device and the trust.
loading.load_policy(..., keep=kept) takes it."""
from __future__ import annotations

import gc
import os
import threading

import torch


def folder_identity(model_id: str) -> tuple:
    """What a local model folder holds, cheaply: (relative path, size, modification and change
    times, inode) of each file in it, so that a folder rebuilt in place (new weights, same path)
    gives another identity without reading gigabytes of weights. () for a hub id (not a folder)."""
    if not os.path.isdir(model_id):
        return ()
    out = []
    for parent, dirs, files in os.walk(model_id):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(parent, name)
            try:
                st = os.stat(path)
            except OSError:   # gone meanwhile: the folder is being rebuilt, its identity is new anyway
                continue
            out.append((os.path.relpath(path, model_id), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino))
    return tuple(out)


class KeptBase:
    """One loaded base model kept between the runs of a process (the app), so that a second
    run does not load its model again. `load_policy(..., keep=kept)` reuses it when the model,
    the content of its folder (folder_identity), precision, device and trust are the same, and loads
    (dropping the kept one first, to free its memory) when any of them changes. Each run gets a fresh
    LoRA adapter: the last run's is removed from the base (peft's unload: the base layers as they were,
    untouched by training, which moves LoRA weights only) and a new one is initialised from the run's
    seed, as a fresh load does, so a run gives what it gives after a fresh load
    (tests/test_kept_model.py). The previous run's Policy is void from then on.

    One run at a time uses the kept model: hold `lock` from loading to the run's end (the
    app's queue runs one job at a time; the lock makes it so for any caller).

    `memo`: what a run computed with the base model alone that a later run on it may reuse (the
    app keeps its last before-evaluation there); emptied whenever the kept model goes."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._key: tuple | None = None
        self._loaded: tuple | None = None   # (base, processor, family)
        self._model = None                  # the PeftModel the base is wrapped in now
        self.memo: dict = {}

    @staticmethod
    def key(model_id: str, *rest) -> tuple:
        """The key of a load: the model id, what its folder holds now, then `rest` (precision,
        device, trust...). Taken before loading: a folder rebuilt during the load is loaded again."""
        return (model_id, folder_identity(model_id), *rest)

    def take(self, key: tuple):
        """(base, processor, family) freed of its last adapter, or None when `key` is not the kept one
        (which is then dropped)."""
        if self._key != key:
            self.clear()
            return None
        if self._model is not None:
            self._model.unload()            # the base's own layers back in place of the LoRA layers
            self._model = None
        return self._loaded

    def put(self, key: tuple, loaded: tuple) -> None:
        self._key, self._loaded, self._model, self.memo = key, loaded, None, {}

    def wrapped(self, model) -> None:
        self._model = model

    def clear(self) -> None:
        """Drop the kept model (its memory goes once the last run's Policy is gone too)."""
        had = self._loaded is not None
        self._key = self._loaded = self._model = None
        self.memo = {}
        if had:
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
