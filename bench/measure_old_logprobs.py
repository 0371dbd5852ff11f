"""Not a test: the pi_old recompute (grpo.old_logprobs) measured side by side on the demo model, CPU.

    python bench/measure_old_logprobs.py [steps] [repeats]      (defaults 6 and 3)

Paper defaults (N 32, G 16, 8 prompts a step), in fp32, bf16 and bf16 autocast (the CUDA path's
numerics, models.Policy.autocast, on the CPU); recompute_old_logprobs True and False alternated,
one engine run each. Prints the first update's ratio - 1 and clip_frac at every step, the
recompute pass's share of the step time (timed around grpo.old_logprobs), and the median step time
with and without it."""
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(steps: int = 6, repeats: int = 3) -> None:
    import torch

    from ttrv_core.config import TTRVConfig
    from ttrv_core.demos import by_key
    from ttrv_core.events import StepEvent
    from ttrv_core.inputs.dataset import load_dataset
    from ttrv_core.method import engine
    from ttrv_core.model.loading import load_policy
    from ttrv_core.model.threads import set_threads_for

    demo = by_key("open")  # the open-answer digits model, on which this was first measured
    EXAMPLES, DEMO_MODEL = demo.example_dir, demo.model
    items = load_dataset(EXAMPLES, None, EXAMPLES / "questions.csv", "open").items[:40]
    calls, spent = [], []
    real_update, real_old = engine.update, engine.old_logprobs

    def update(*a, **k):
        calls.append(real_update(*a, **k))
        return calls[-1]

    def old_logprobs(*a, **k):
        t = time.perf_counter()
        out = real_old(*a, **k)
        spent.append(time.perf_counter() - t)
        return out

    engine.update, engine.old_logprobs = update, old_logprobs

    def one(mode: str, recompute: bool):
        pol = load_policy(DEMO_MODEL, "fp32" if mode == "fp32" else "bf16", "cpu", seed=0)
        set_threads_for(pol)  # process-wide, as the CLI does: one thread for the demo model
        if mode == "bf16-autocast":
            pol.autocast_dtype = torch.bfloat16
        cfg = TTRVConfig(max_steps=steps, seed=0, recompute_old_logprobs=recompute)
        calls.clear()
        spent.clear()
        firsts, step_s = [], []
        for ev in engine.adapt(cfg, pol, items, evaluate_before=False):
            if isinstance(ev, StepEvent):
                firsts.append((calls[0].ratio_mean, calls[0].clip_frac))
                calls.clear()
                step_s.append(ev.metrics["time/step_s"])
        return firsts, step_s, sum(spent)

    print(f"{steps} steps x {repeats} repeats per setting", flush=True)
    for mode in ("fp32", "bf16", "bf16-autocast"):
        times = {True: [], False: []}
        for r in range(repeats):
            for rec in (True, False):  # alternated, so a busy spell of the machine hits both
                firsts, step_s, old_s = one(mode, rec)
                times[rec] += step_s
                if r == 0:
                    print(f"{mode:13s} recompute={rec!s:5s} first update per step: ratio-1 "
                          + " ".join(f"{x - 1:+.1e}" for x, _ in firsts)
                          + "  clip_frac " + " ".join(f"{c:g}" for _, c in firsts)
                          + (f"  | recompute pass {old_s / sum(step_s):.1%} of step time" if rec else ""),
                          flush=True)
        on, off = statistics.median(times[True]), statistics.median(times[False])
        print(f"{mode:13s} median step {on:.3f} s with recompute, {off:.3f} s without: x{on / off:.2f}", flush=True)


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
