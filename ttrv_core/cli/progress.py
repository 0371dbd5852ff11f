"""The CLI's terminal view of a run: a progress bar over the work RunStart states (evaluated items and
steps), a line per evaluation, and at the end what changed and what the run left out."""
from __future__ import annotations

from tqdm import tqdm

from ttrv_core.events import EvalResult, Progress, RunEnd, RunStart, StepEvent
from ttrv_core.method.content import amplified_answers, gain_sentence


def show(events, items) -> None:
    """A progress bar over the run's work as RunStart states it: evaluated items and steps; at the
    end, what changed (_what_changed) and the items the run left out."""
    bar, start, before, after = None, None, None, None
    for ev in events:
        if isinstance(ev, RunStart):
            start = ev
            bar = tqdm(total=ev.work, unit="it", dynamic_ncols=True)
            if ev.resumed_from:
                bar.write(f"resuming after step {ev.resumed_from} of {ev.total_steps}")
        elif isinstance(ev, Progress):
            bar.set_description(f"eval {ev.phase}")
            bar.n = _done(start, ev.phase) + ev.done
            bar.refresh()
        elif isinstance(ev, EvalResult):
            bar.write(_line(ev.phase, ev.metrics))
            before, after = (ev, after) if ev.phase == "before" else (before, ev)
        elif isinstance(ev, StepEvent):
            m = ev.metrics
            bar.n = _done(start, "train") + ev.step - start.resumed_from
            bar.set_description(f"step {ev.step}/{ev.total_steps}")
            bar.set_postfix(H=f"{m['answers/entropy']:.2f}", maj=f"{m['answers/majority_share']:.2f}",
                            s=f"{m['time/step_s']:.2f}")
        elif isinstance(ev, RunEnd):
            if ev.stopped:  # the after-eval follows the last completed step
                bar.total = bar.n + start.n_items
            bar.close()
            print(f"done in {ev.seconds:.1f} s" + (" (stopped)" if ev.stopped else ""))
            for line in _what_changed(ev.summary, before, after, items):
                print(line)
            for line in ev.problems:
                print(f"left out: {line}")
            if ev.guard:
                print(ev.guard)


def _what_changed(summary: dict, before: EvalResult | None, after: EvalResult | None, items) -> list[str]:
    """The strict gain split into reply format and answers (with answers), the label-free split of the
    greedy replies and the top answer's share, and a warning for each amplified answer (content.py)."""
    lines = []
    if sentence := gain_sentence(summary):
        lines.append(f"what changed: {sentence} (content accuracy {summary['before/content_acc']:.3f} -> "
                     f"{summary['after/content_acc']:.3f})")
    if "changed/unchanged" in summary:
        lines.append(f"label-free: greedy replies unchanged {summary['changed/unchanged']:.0%}, format only "
                     f"{summary['changed/format_only']:.0%}, answer changed {summary['changed/answer_changed']:.0%}; "
                     f"top answer share {summary['before/top_answer_share']:.3f} -> "
                     f"{summary['after/top_answer_share']:.3f} (base model's valid votes: "
                     f"{summary.get('votes/top_answer_share', 0.0):.3f})")
    if before is not None and after is not None:
        lines += [f"warning: {a}" for a in amplified_answers(items, before, after)]
    return lines


def _done(start: RunStart, phase: str) -> int:
    """Progress units before `phase` begins: the phases ahead of it in full."""
    ahead = start.phases[:start.phases.index(phase)]
    return sum(start.steps_to_run if p == "train" else start.n_items for p in ahead)


def _line(phase: str, m: dict) -> str:
    parts = [f"{phase:>6}:"]
    for key, name in (("eval/greedy_acc", "greedy"), ("eval/content_acc", "content"), ("eval/single_acc", "single@T"),
                      ("eval/maj_acc", "maj@N"), ("eval/top_answer_share", "top answer"),
                      ("eval/greedy_invalid", "invalid greedy"), ("eval/entropy", "entropy"),
                      ("eval/majority_share", "maj share")):
        if key in m:
            parts.append(f"{name} {m[key]:.3f}")
    return "  ".join(parts)
