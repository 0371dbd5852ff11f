"""What a run's model load costs in the app's process: the first load, a kept base (a later
run, kept_base.KeptBase) and a fresh load in a warm process (what every later run paid before).

    python bench/bench_load.py --tree /tmp/new_wt --demo format --repeats 5 --out bench/raw/cpu_load_2026-11-27.jsonl

One process importing ttrv_core from --tree (a tree with kept_base.KeptBase): load_policy as the
app calls it (keep=KEPT) once, cold (the process's first load: transformers' model modules are
imported then too); then --repeats times each, taking turns, the kept call (the same model:
the base is reused, the last adapter removed and a fresh one made) and a fresh load
(keep=None). Medians; one JSON line.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tree", type=Path, default=Path(__file__).resolve().parents[1])
    p.add_argument("--demo", default="format")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", type=Path)
    a = p.parse_args()
    tree = a.tree.resolve()
    sys.path.insert(0, str(tree))
    t = time.perf_counter()
    from ttrv_core.demos import by_key
    from ttrv_core.model import kept_base, loading
    import_s = time.perf_counter() - t
    assert Path(loading.__file__).resolve().is_relative_to(tree), loading.__file__
    model = by_key(a.demo).model
    kept = kept_base.KeptBase()

    def load(keep):
        t = time.perf_counter()
        policy = loading.load_policy(model, "auto", None, 16, 32, 0, keep=keep)
        return time.perf_counter() - t, policy

    cold, policy = load(kept)
    times = {"kept": [], "fresh": []}
    for i in range(a.repeats):
        for how in (("kept", "fresh") if i % 2 == 0 else ("fresh", "kept")):
            del policy
            gc.collect()
            s, policy = load(kept if how == "kept" else None)
            times[how].append(s)
    row = {"what": "load", "demo": a.demo, "model": Path(model).name, "import_s": round(import_s, 3),
           "first_s": round(cold, 3), **{f"{k}_s": round(statistics.median(v), 4) for k, v in times.items()},
           **{f"{k}_runs": [round(x, 4) for x in v] for k, v in times.items()},
           "params": sum(p.numel() for p in policy.base.parameters()), "cpus": os.cpu_count(),
           "load_1min": round(os.getloadavg()[0], 2)}
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_run import emit, git_head
    row["commit"] = git_head(tree)
    emit(row, a.out)


if __name__ == "__main__":
    main()
