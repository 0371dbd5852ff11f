"""A whole CLI run, old code against new, side by side: wall time, evaluation phases, accuracies.

    python bench/bench_run.py --old /tmp/main_wt --new /tmp/new_wt --demos format open --repeats 2 \
        --out bench/raw/cpu_run_2026-11-27.jsonl

Each run is a fresh process (`python bench/bench_run.py --child ROOT DEMO OUT`) that imports
ttrv_core from ROOT (the old tree, e.g. a `git worktree add /tmp/main_wt <commit>`, or this
one) and runs the CLI's main(["--out", OUT, "--demo", DEMO]) as `python -m ttrv_core` does, with
engine._evaluate_phase wrapped to time each evaluation (from its call to its result, the
consumer's time between events included) and cli.load_policy to time the model's load. The
parent times the process from spawn to exit: the whole run as a user waits for it (interpreter
start, imports, model load, run, files), split into start_s (interpreter and script start),
import_s (ttrv_core and what it imports), load_s, run_s (RunStart to RunEnd: evaluations and
training) and exit_s. --new defaults to this tree; point it at a second worktree when others
edit this one (a half-done change would be measured).
Runs of the two trees alternate, so that a change in the machine's load hits both. Each line of
--out is one run: tree, demo, repeat, wall_s, phase seconds, run seconds (RunEnd), the summary's
accuracies; per run pair, how many items' greedy replies differ (results.csv) and whether every
training step's metrics are the same (events.jsonl).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def child(root: str, demo: str, out: str) -> None:
    marks = {"enter": time.time()}                  # wall-clock marks: the parent subtracts its spawn time
    sys.path.insert(0, root)
    import ttrv_core.cli as cli
    import ttrv_core.method.engine as engine
    from ttrv_core.cli import main
    marks["imported"] = time.time()

    assert Path(engine.__file__).resolve().is_relative_to(Path(root).resolve()), engine.__file__
    real, phases = engine._evaluate_phase, {}

    def timed(phase, *a, **kw):
        t0 = time.time()
        result = yield from real(phase, *a, **kw)
        phases[phase] = time.time() - t0
        return result

    engine._evaluate_phase = timed
    load = cli.load_policy

    def timed_load(*a, **kw):
        marks["load"] = time.time()
        try:
            return load(*a, **kw)
        finally:
            marks["loaded"] = time.time()

    cli.load_policy = timed_load
    rc = main(["--out", out, "--demo", demo])
    marks["main_done"] = time.time()
    print("BENCH " + json.dumps({"rc": rc, "phases": phases, "marks": marks}), flush=True)
    # then end as that tree's `python -m ttrv_core` ends (since issue 16: __main__.exit_now, no teardown)
    main_py = Path(root) / "ttrv_core" / "__main__.py"
    if "def exit_now" in main_py.read_text():  # an older __main__ runs the CLI when imported
        from ttrv_core.__main__ import exit_now
        exit_now(rc)


def one(root: Path, demo: str, out: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(root))
    t0 = time.time()
    r = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", str(root), demo, str(out)],
                       cwd=root, env=env, capture_output=True, text=True)
    wall = time.time() - t0
    line = next((x for x in r.stdout.splitlines() if x.startswith("BENCH ")), None)
    if r.returncode or line is None:
        raise RuntimeError(f"run failed in {root}: {r.stderr[-3000:]}")
    got = json.loads(line[6:])
    m = got["marks"]
    marks = {"start_s": m["enter"] - t0,                      # interpreter start, the script's imports
             "import_s": m["imported"] - m["enter"],          # ttrv_core (torch, transformers, ...)
             "load_s": m["loaded"] - m["load"],               # load_policy: the model, its processor, LoRA
             "exit_s": wall - (m["main_done"] - t0)}          # interpreter teardown
    end = [json.loads(x) for x in (out / "events.jsonl").read_text().splitlines()][-1]
    summary = json.loads((out / "summary.json").read_text())
    keys = ("greedy_acc", "maj_acc", "single_acc", "valid_acc", "greedy_invalid", "invalid")
    return {"wall_s": round(wall, 2), "run_s": round(end["seconds"], 2),
            "eval_s": round(sum(got["phases"].values()), 2),
            **{f"{p}_s": round(v, 2) for p, v in got["phases"].items()},
            "train_s": round(end["seconds"] - sum(got["phases"].values()), 2),
            **{k: round(v, 2) for k, v in marks.items()},
            "rest_s": round(wall - sum(marks.values()) - end["seconds"], 2),  # data, run folder, results files
            "load_1min": round(os.getloadavg()[0], 2),
            **{f"{ph}/{k}": summary.get(f"{ph}/{k}") for ph in ("before", "after") for k in keys}}


def steps(folder: Path) -> list[dict]:
    """The step events' metrics without their wall-clock times."""
    out = []
    for line in (folder / "events.jsonl").read_text().splitlines():
        e = json.loads(line)
        if e["type"] == "step":
            out.append({k: v for k, v in e["metrics"].items() if not k.startswith(("time/", "memory/"))})
    return out


def compare(a: Path, b: Path) -> dict:
    """Items whose greedy reply differs between two runs, and whether training was the same."""
    ra = list(csv.DictReader(open(a / "results.csv", encoding="utf-8")))
    rb = list(csv.DictReader(open(b / "results.csv", encoding="utf-8")))
    return {**{f"{col}_diffs": sum(x[col] != y[col] for x, y in zip(ra, rb)) for col in ("before_reply", "after_reply")},
            "items": len(ra), "train_steps_equal": steps(a) == steps(b)}


def emit(row: dict, out: str | None) -> None:
    """Print one result line, and append it to `out` (JSON lines) when given."""
    print(json.dumps(row), flush=True)
    if out:
        with open(out, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")


def git_head(root: Path) -> str:
    r = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "ttrv_core", "app.py"], cwd=root,
                           capture_output=True, text=True).stdout.strip()
    return r.stdout.strip() + ("+changes" if dirty else "")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(*sys.argv[2:5])
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--old", type=Path, required=True, help="the tree to compare with (a git worktree)")
    p.add_argument("--new", type=Path, default=HERE)
    p.add_argument("--demos", nargs="+", default=["format"])
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--out", type=Path, help="append one JSON line per run")
    a = p.parse_args()
    trees = {"old": a.old.resolve(), "new": a.new.resolve()}
    tag = {"old_commit": git_head(trees["old"]), "new_commit": git_head(trees["new"]), "cpus": os.cpu_count(),
           "python": platform.python_version()}
    work = Path(tempfile.mkdtemp(prefix="bench_run_"))
    for rep in range(a.repeats):
        for demo in a.demos:
            order = ["old", "new"] if rep % 2 == 0 else ["new", "old"]
            dirs = {}
            for tree in order:
                dirs[tree] = work / f"{tree}_{demo}_{rep}"
                row = {"what": "cli_run", "tree": tree, "demo": demo, "repeat": rep, **tag,
                       **one(trees[tree], demo, dirs[tree])}
                emit(row, a.out)
            row = {"what": "old_vs_new", "demo": demo, "repeat": rep, **compare(dirs["old"], dirs["new"])}
            emit(row, a.out)


if __name__ == "__main__":
    main()
