"""How a TTRV step's cost grows: step time and peak memory against N votes and against the
image's token count, shared-prefix path vs naive rows, the demo model (or a real shape).

    python bench/bench_scale.py --tree /tmp/new_wt --out bench/raw/cpu_scale_2026-11-27.jsonl
    python bench/bench_scale.py --plot bench/raw/cpu_scale_2026-11-27.jsonl --figure bench/scale_cpu_2026-11-27

--tree: the checkout whose ttrv_core (and bench/bench_step.py, for the model's path) is
measured, e.g. a `git worktree add /tmp/new_wt <commit>`: a tree others edit may be half-way
through a change. One grid point = one fresh process (`--child`), so that its peak memory is its own:
load the model, prepare one prompt (a noise image of side 28 * sqrt(tokens), the processor
set to that size: `tokens` image tokens after the 2x2 merge), then run the engine's step on
that one prompt (step.train_step, prompts_per_step 1: sample N, pi_old, one update on G =
min(16, N)) --repeats + 1 times. The first step (cold) gives the peak memory:
  CPU   the process's resident set, polled every millisecond during the step, minus the
        resident set just before it (what the step adds; glibc keeps freed memory, so a
        later step would show ~0);
  CUDA  torch.cuda.max_memory_allocated over the step (absolute).
The others give the time: the median of --repeats, split into sampling and training
(the step's time/sample_s, time/train_s). Points run in the order of the grid, the two
paths taking turns point by point, so a change in the machine's load hits both. --plot takes,
for a point measured in several passes (appended to one file), the faster pass's times and
the median of their memory.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench_run import emit  # bench/ is on the path: these run as scripts

ROOT = Path(__file__).resolve().parents[1]
SIZE_DEFAULT = "demo"


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """The largest resident set seen while the block runs (polled every `every` seconds)."""

    def __init__(self, every: float = 0.001):
        self.every, self.peak, self._stop = every, 0, threading.Event()

    def _poll(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(self.every)

    def __enter__(self):
        self.before = self.peak = rss_bytes()
        self._t = threading.Thread(target=self._poll, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, rss_bytes())


def child(tree: Path, size: str, n: int, tokens: int, shared: bool, new_tokens: int, repeats: int) -> dict:
    sys.path[:0] = [str(tree), str(tree / "tests"), str(tree / "bench")]
    import torch
    from bench_step import DEMO, model_path
    from PIL import Image

    from ttrv_core.config import TTRVConfig
    from ttrv_core.inputs.dataset import Item
    from ttrv_core.method.step import train_step
    from ttrv_core.model import loading, threads
    from ttrv_core.model.loading import load_policy

    assert Path(loading.__file__).resolve().is_relative_to(tree), loading.__file__

    torch.manual_seed(0)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    side = 28 * round(math.sqrt(tokens))              # 14-pixel patches, merged 2x2: (side / 28)^2 tokens
    path, _ = model_path(size, side, dev)
    policy = load_policy(path, "auto", str(dev), lora_r=16, lora_alpha=32, max_pixels=0)
    if hasattr(threads, "set_threads_for"):          # as the front ends do (older trees: inside load_policy)
        threads.set_threads_for(policy)
    ip = policy.processor.image_processor           # the image at exactly side x side
    ip.size = {"shortest_edge": side * side, "longest_edge": side * side}
    for k in ("min_pixels", "max_pixels"):
        if hasattr(ip, k):
            setattr(ip, k, side * side)
    img = Path(f"/tmp/ttrv_scale_{side}.png")
    Image.effect_noise((side, side), 60).convert("RGB").save(img)
    item = Item("scale.png", img, "Which digit is shown in the image?")
    g = min(16, n)
    cfg = TTRVConfig(model=path, n_votes=n, n_train=g, max_new_tokens=new_tokens, prompts_per_step=1,
                     shared_prefix=shared)
    opt = torch.optim.AdamW([p for p in policy.model.parameters() if p.requires_grad], lr=1e-5)
    gen = torch.Generator(device=dev).manual_seed(0)
    from ttrv_core.sampling.prompt import prepare_prompt
    prompt_tokens = prepare_prompt(policy, Image.open(img), item.prompt).length
    cuda = dev.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    with PeakRSS() as mem:
        train_step(1, 1, [item], policy, opt, cfg, gen=gen)
    peak = {"peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 3)} if cuda else \
        {"step_rss_mib": round((mem.peak - mem.before) / 2**20, 1), "peak_rss_mib": round(mem.peak / 2**20, 1)}
    runs = []
    for _ in range(repeats):
        t = time.perf_counter()
        ev = train_step(1, 1, [item], policy, opt, cfg, gen=gen)
        if cuda:
            torch.cuda.synchronize()
        runs.append((time.perf_counter() - t, ev.metrics["time/sample_s"], ev.metrics["time/train_s"],
                     ev.metrics["answers/distinct"]))
    med = lambda i: round(statistics.median(r[i] for r in runs), 4)  # noqa: E731
    return {"step_s": med(0), "sample_s": med(1), "train_s": med(2), "runs": [round(r[0], 4) for r in runs],
            "prompt_tokens": prompt_tokens, "side": side, "G": g,
            "device": torch.cuda.get_device_name() if cuda else "cpu", "torch_threads": torch.get_num_threads(),
            **peak}


def grid(ns: list[int], toks: list[int], n0: int, t0: int) -> list[tuple[str, int, int]]:
    """(axis, N, tokens): N at t0 image tokens, then tokens at N = n0."""
    return [("N", n, t0) for n in ns] + [("tokens", n0, t) for t in toks]


def merge(rows: list[dict]) -> list[dict]:
    """One row per grid point (axis, path, N, tokens): a point measured in several passes gets the
    faster pass's times (other jobs only ever add time), the median of their memory, and every
    pass's step times in `runs`."""
    points: dict[tuple, list[dict]] = {}
    for r in rows:
        points.setdefault((r["axis"], r["path"], r["N"], r["image_tokens"]), []).append(r)
    out = []
    for same in points.values():
        fast = min(same, key=lambda r: r["step_s"])
        row = dict(fast, passes=len(same), runs=[x for r in same for x in r["runs"]])
        for k in ("step_rss_mib", "peak_gib"):
            if k in row:
                row[k] = statistics.median(r[k] for r in same)
        out.append(row)
    return out


def plot(lines: list[dict], figure: str) -> None:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    rows = merge([r for r in lines if r.get("what") == "scale_point" and "step_s" in r])
    loads = [r["load_1min"] for r in lines if r.get("what") == "scale_point"]
    mem_key = "peak_gib" if any("peak_gib" in r for r in rows) else "step_rss_mib"
    mem_label = "peak memory (GiB, CUDA)" if mem_key == "peak_gib" else "memory the step adds (MiB, RSS)"
    fig = make_subplots(rows=2, cols=2, horizontal_spacing=0.1, vertical_spacing=0.14,
                        subplot_titles=("step time vs N votes", "step time vs image tokens",
                                        f"{mem_label} vs N", f"{mem_label} vs image tokens"))
    colors = {"shared": "#1f77b4", "naive": "#d62728"}
    t0 = next((r["image_tokens"] for r in rows if r["axis"] == "N"), "?")
    n0 = next((r["N"] for r in rows if r["axis"] == "tokens"), "?")
    for col, axis, x in ((1, "N", "N"), (2, "tokens", "image_tokens")):
        for path in ("shared", "naive"):
            pts = sorted((r for r in rows if r["axis"] == axis and r["path"] == path), key=lambda r: r[x])
            if not pts:
                continue
            xs = [r[x] for r in pts]
            kw = dict(legendgroup=path, line=dict(color=colors[path]), mode="lines+markers")
            fig.add_trace(go.Scatter(x=xs, y=[r["step_s"] for r in pts], name=path, showlegend=col == 1,
                                     customdata=[[r["sample_s"], r["train_s"], r["prompt_tokens"]] for r in pts],
                                     hovertemplate="%{y:.3f} s (sample %{customdata[0]:.3f}, train "
                                                   "%{customdata[1]:.3f}); prompt %{customdata[2]} tokens",
                                     **kw), row=1, col=col)
            fig.add_trace(go.Scatter(x=xs, y=[r[mem_key] for r in pts], name=path, showlegend=False, **kw),
                          row=2, col=col)
        for row in (1, 2):
            fig.update_xaxes(type="log", tickvals=sorted({r[x] for r in rows if r["axis"] == axis}),
                             title_text=f"N votes (G = min(16, N); {t0} image tokens)" if axis == "N"
                             else f"image tokens (N = {n0})",
                             row=row, col=col)
    fig.update_yaxes(type="log", title_text="s per step (one prompt)", row=1)
    fig.update_yaxes(type="log", title_text=mem_label.split(" (")[1].rstrip(")"), row=2)
    r0 = rows[0]
    where = r0["device"] if r0["device"] != "cpu" else \
        f"{r0['cpus']}-core CPU, load {min(loads):.1f}-{max(loads):.1f}"
    fig.update_layout(title=f"TTRV step on one prompt, {r0['size']} model, {where}: shared prefix vs naive rows<br>"
                            f"<sup>time: the faster of {max(r['passes'] for r in rows)} passes, each the median of its steps; "
                            f"memory: the cold step (median of the passes)</sup>",
                      width=1100, height=780, template="plotly_white")
    fig.write_html(figure + ".html", include_plotlyjs="cdn")
    fig.write_image(figure + ".png", scale=1)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        tree, size, n, tokens, shared, new_tokens, repeats = sys.argv[2:9]
        got = child(Path(tree).resolve(), size, int(n), int(tokens), shared == "1", int(new_tokens), int(repeats))
        print("SCALE " + json.dumps(got), flush=True)
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tree", type=Path, default=ROOT, help="the checkout to measure (default: this one)")
    p.add_argument("--size", default=SIZE_DEFAULT, help="demo (the bundled open-answer model) or 3b/7b shapes")
    p.add_argument("--ns", type=int, nargs="+", default=[8, 16, 32, 64, 128])
    p.add_argument("--tokens", type=int, nargs="+", default=[64, 128, 256, 512, 1024])
    p.add_argument("--n0", type=int, default=32, help="N on the tokens axis")
    p.add_argument("--t0", type=int, default=256, help="image tokens on the N axis (448 x 448)")
    p.add_argument("--new-tokens", type=int, default=16, help="max answer tokens")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", type=Path)
    p.add_argument("--plot", type=Path, help="draw the figure from this jsonl instead of measuring")
    p.add_argument("--figure", default="bench/scale", help="figure path without extension (.html, .png)")
    a = p.parse_args()
    if a.plot:
        plot([json.loads(x) for x in a.plot.read_text().splitlines() if x.strip()], a.figure)
        return
    from bench_run import git_head
    tag = {"size": a.size, "commit": git_head(a.tree.resolve()), "cpus": os.cpu_count()}
    for i, (axis, n, tokens) in enumerate(grid(a.ns, a.tokens, a.n0, a.t0)):
        for path in (("shared", "naive") if i % 2 == 0 else ("naive", "shared")):
            t = time.time()
            r = subprocess.run([sys.executable, __file__, "--child", str(a.tree.resolve()), a.size, str(n), str(tokens),
                                "1" if path == "shared" else "0", str(a.new_tokens), str(a.repeats)],
                               capture_output=True, text=True, cwd=a.tree)
            line = next((x for x in r.stdout.splitlines() if x.startswith("SCALE ")), None)
            row = {"what": "scale_point", "axis": axis, "path": path, "N": n, "image_tokens": tokens,
                   "L": a.new_tokens, **tag, "load_1min": round(os.getloadavg()[0], 2),
                   "process_s": round(time.time() - t, 1)}
            row.update(json.loads(line[6:]) if line else {"error": r.stderr[-1500:]})
            emit(row, a.out)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
