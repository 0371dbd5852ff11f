"""Time per TTRV step with K = 1 and K = 2 processes (torchrun, gloo on CPU), the same run otherwise.

    python bench/bench_parallel.py --repeats 2 --out bench/raw/cpu_parallel_2026-11-27.jsonl

Each run is `torchrun --nproc_per_node K -m ttrv_core` on the format demo (the bundled tiny
Qwen2.5-VL) with the demo's N = 32 votes and G = 16, 8 prompts per step and per update (so K = 2
gives each rank 4 prompts of every update), 16 items, 5 steps; K = 1 goes through torchrun too,
so that both pay the same launcher. OMP_NUM_THREADS=1 and one torch thread per process
(threads.set_threads_for), so K processes use K cores. From rank 0's events.jsonl: the median over
steps 2-5 of time/step_s (sample + update + the step's collectives), time/sample_s and
time/train_s (rank 0's share: up to its last all-reduce), RunEnd's seconds (both evaluations, each
rank taking every K-th item, and the steps) and the launcher's wall time (imports and model load
included). Runs of K = 1 and K = 2 alternate, so that a change in the machine's load hits both.
Each line of --out is one run.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(HERE / "bench"))
from bench_run import emit, git_head  # noqa: E402

ARGS = ["--demo", "format", "--limit", "16", "--train-items", "16", "--steps", "5", "--eval-votes", "8",
        "--prompts-per-step", "8", "--prompts-per-update", "8"]


def one(k: int, repeat: int) -> dict:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(k), "--master_addr",
               "127.0.0.1", "--master_port", str(port), "-m", "ttrv_core", *ARGS, "--out", str(out)]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE), "HF_HUB_OFFLINE": "1",
               "TOKENIZERS_PARALLELISM": "false"}
        t0 = time.time()
        got = subprocess.run(cmd, cwd=HERE, env=env, capture_output=True, text=True)
        wall = time.time() - t0
        if got.returncode:
            raise SystemExit(got.stderr[-3000:])
        events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
        steps = [e["metrics"] for e in events if e["type"] == "step"][1:]      # step 1 warms up
        end = next(e for e in events if e["type"] == "run_end")
    med = {key: round(statistics.median(m[f"time/{key}"] for m in steps), 3) for key in ("step_s", "sample_s", "train_s")}
    return {"bench": "parallel", "processes": k, "repeat": repeat, **med, "run_s": round(end["seconds"], 2),
            "wall_s": round(wall, 2), "loss_last": steps[-1]["loss/total"], "cpus": os.cpu_count(),
            "load_1min": round(os.getloadavg()[0], 2), "host": platform.node(), "code": git_head(HERE)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", type=Path, help="append one JSON line per run")
    args = p.parse_args()
    for r in range(args.repeats):
        for k in (1, 2):
            emit(one(k, r), args.out)


if __name__ == "__main__":
    main()
