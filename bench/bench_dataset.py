"""Lazy --dataset rows against reading them all up front: peak memory and time to the first step.

    python bench/bench_dataset.py [--rows 5000] [--train-items 20]

Builds a saved dataset (save_to_disk) of `rows` digits (the 240 of the format demo, each copy
shifted and brightened so no two rows hold the same bytes), then, each in a fresh process:
  lazy   inputs/tables.load_table, then engine.adapt with train_items until its first StepEvent
         (evaluate_before=False: the paper's before-evaluation reads every row, whatever the loader);
  eager  the same, after decoding every row's image into memory first (what a loader that checks
         and holds each image up front costs).
Prints one JSON object: seconds to load, to the first StepEvent, and peak RSS (ru_maxrss) of each.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def build(folder: Path, rows: int) -> None:
    import datasets
    from PIL import Image, ImageChops
    src = ROOT / "assets" / "examples" / "digits_choice"
    table = list(csv.DictReader(open(src / "questions.csv")))

    def gen():
        for i in range(rows):
            r = table[i % len(table)]
            im = Image.open(src / r["image"]).convert("RGB")
            im = ImageChops.offset(im, i // len(table) % 3, 0).point(lambda v, k=i // 720: min(255, v + k))
            buf = io.BytesIO()
            im.save(buf, "PNG")
            yield {"image": {"bytes": buf.getvalue(), "path": None}, "question": r["question"],
                   "options": r["options"].split("|"), "answer": r["answer"]}
    features = datasets.Features({"image": datasets.Image(), "question": datasets.Value("string"),
                                  "options": datasets.Sequence(datasets.Value("string")),
                                  "answer": datasets.Value("string")})
    datasets.Dataset.from_generator(gen, features=features).save_to_disk(str(folder))


def one(mode: str, folder: Path, work: Path, train_items: int) -> dict:
    from ttrv_core.config import TTRVConfig
    from ttrv_core.events import StepEvent
    from ttrv_core.inputs.tables import load_table
    from ttrv_core.method.engine import adapt
    from ttrv_core.model.loading import load_policy
    t0 = time.perf_counter()
    ds = load_table(str(folder), work, task="choice")
    held = [it.image() for it in ds.items] if mode == "eager" else []   # every image decoded and kept
    t_load = time.perf_counter() - t0
    cfg = TTRVConfig(model=str(ROOT / "assets" / "demo_choice"), n_votes=4, n_train=2, max_steps=1,
                     train_items=train_items, eval_votes=2)
    policy = load_policy(cfg.model, cfg.precision, "cpu", cfg.lora_r, cfg.lora_alpha, cfg.seed, only_model=True)
    t1 = time.perf_counter()
    for ev in adapt(cfg, policy, ds.items, evaluate_before=False):
        if isinstance(ev, StepEvent):
            break
    t_step = time.perf_counter() - t1
    written = sum(1 for _ in work.rglob("*.png"))
    return {"items": len(ds.items), "held_images": len(held), "load_s": round(t_load, 2),
            "first_step_s": round(t_step, 2), "load_plus_first_step_s": round(t_load + t_step, 2),
            "images_written": written, "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=5000)
    ap.add_argument("--train-items", type=int, default=20)
    ap.add_argument("--mode", choices=("lazy", "eager"), help=argparse.SUPPRESS)   # one measurement, in a child
    ap.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.mode:
        with tempfile.TemporaryDirectory() as work:
            print(json.dumps(one(args.mode, args.folder, Path(work), args.train_items)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "saved"
        t = time.perf_counter()
        build(folder, args.rows)
        out = {"rows": args.rows, "train_items": args.train_items, "build_s": round(time.perf_counter() - t, 1)}
        for mode in ("lazy", "eager"):
            run = subprocess.run([sys.executable, __file__, "--mode", mode, "--folder", str(folder),
                                  "--train-items", str(args.train_items)], capture_output=True, text=True, cwd=ROOT)
            if run.returncode:
                sys.exit(run.stderr)
            out[mode] = json.loads(run.stdout.strip().splitlines()[-1])
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
