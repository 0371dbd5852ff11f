"""Accuracy before/after TTRV on the bundled digits, mean over seeds (CPU).

    python bench/digits_accuracy.py                       # default config, seeds 0 1 2
    python bench/digits_accuracy.py --single 5            # single-example mode on 5 chosen images
    python bench/digits_accuracy.py --set lr=1e-3 --set reward=majority

Prints one JSON line per run and a summary table (mean +- std over runs)
with greedy, single@T and maj@N before and after, and wall seconds per run.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ttrv_core.cli import EXAMPLES, quiet  # noqa: E402
from ttrv_core.config import TTRVConfig  # noqa: E402
from ttrv_core.data import load_dataset  # noqa: E402
from ttrv_core.engine import run  # noqa: E402
from ttrv_core.events import RunEnd  # noqa: E402
from ttrv_core.models import load_policy  # noqa: E402

KEYS = ("greedy_acc", "single_acc", "maj_acc")


def parse_set(pairs: list[str]) -> dict:
    out = {}
    for p in pairs:
        k, v = p.split("=", 1)
        default = getattr(TTRVConfig(), k)
        out[k] = type(default)(v) if not isinstance(default, bool) else v.lower() in ("1", "true", "yes")
    return out


def one_run(cfg: TTRVConfig, items, single: str | None) -> dict:
    t = time.time()
    policy = load_policy(cfg.model, cfg.precision, "cpu", cfg.lora_r, cfg.lora_alpha, cfg.seed)
    end = [e for e in run(cfg, policy, items, single=single) if isinstance(e, RunEnd)][0]
    return {"seed": cfg.seed, "single": single, "seconds": round(time.time() - t, 1),
            **{k: round(v, 4) for k, v in end.summary.items()}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--single", type=int, default=0, help="single-example mode on this many chosen images")
    ap.add_argument("--set", action="append", default=[], help="config override, e.g. lr=1e-3")
    ap.add_argument("--out", help="append JSON lines here")
    a = ap.parse_args()
    quiet()
    ds = load_dataset(EXAMPLES, questions_file=EXAMPLES / "questions.csv")
    base = TTRVConfig(**parse_set(a.set))
    chosen = [ds.items[i * len(ds.items) // a.single].id for i in range(a.single)] if a.single else [None]
    rows = []
    for single in chosen:
        for seed in a.seeds:
            r = one_run(base.with_(seed=seed), ds.items, single)
            r["config"] = a.set
            rows.append(r)
            print(json.dumps(r), flush=True)
            if a.out:
                with open(a.out, "a") as f:
                    f.write(json.dumps(r) + "\n")
    print(f"\n{len(rows)} runs, {len(ds.items)} items, overrides {a.set or 'none'}"
          + (f", single-example on {len(chosen)} images" if a.single else ""))
    print("| metric | before | after | change |\n|---|---|---|---|")
    for k in KEYS:
        b = [r[f"before/{k}"] for r in rows]
        f = [r[f"after/{k}"] for r in rows]
        d = [y - x for x, y in zip(b, f)]
        sd = statistics.stdev(d) if len(d) > 1 else 0.0
        print(f"| {k} | {statistics.mean(b):.3f} | {statistics.mean(f):.3f} | {statistics.mean(d):+.3f} ± {sd:.3f} |")
    print(f"| seconds per run | | {statistics.mean(r['seconds'] for r in rows):.1f} | |")
    fired = [r["guard/fired_step"] for r in rows if "guard/fired_step" in r]
    print(f"collapse guard fired in {len(fired)} of {len(rows)} runs" + (f" (at steps {fired})" if fired else ""))


if __name__ == "__main__":
    main()
