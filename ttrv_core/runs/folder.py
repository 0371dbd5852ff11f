"""A run folder: everything a run computed, written as it happens.

    config.json     the TTRVConfig and where the items came from (written by the front end,
                    RunDir.write_config; a bundled demo's model by its name: demos.public);
                    a CLI run's "command" (model_card.command), which the model card shows
    problems.txt    input problems (file: message), if any; then what the run left out (RunEnd.problems)
    events.jsonl    one JSON object per event, flushed as each arrives
    results.csv     before/after per item (also results.json)
    adapter/        the LoRA adapter in peft format (base model named as model_card.model_name
                    names it, not by a path of this machine), with a model card
                    (README.md, model_card.py); only when something was trained
    checkpoints/step-NNNNNN/   the state after the last completed step, while the
                    run is unfinished (killed, stopped, failed); removed when it ends:
        adapter/        the LoRA weights then, in peft format
        state.pt        step, optimizer, LR schedule, RNG states, collapse-guard
                        state, and the step's event line (plain tensors and lists:
                        torch.load(weights_only=True) reads it)
        guard/step-MMMMMM.safetensors   the guard's kept healthy weights

`record` wraps the engine's event stream: the caller iterates it exactly as
the bare stream, and the folder is complete even when the caller stops early
(the adapter and the results so far are written in a `finally`). A run stopped
or failed before its first step leaves no adapter (it would be the untrained
LoRA init), and one that evaluated nothing no results files.

A run survives a kill at any moment: checkpoint.py says how, and how
`python -m ttrv_core --resume RUN_DIR` continues from the checkpoint.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path
from typing import Iterator, Sequence

from ttrv_core import demos
from ttrv_core.dist import parallel
from ttrv_core.events import EvalResult, Event, ItemEval, RunEnd, RunStart, StepEvent, to_json
from ttrv_core.inputs.dataset import Item
from ttrv_core.method.content import changes
from ttrv_core.method.engine import TrainState
from ttrv_core.model.loading import save_adapter
from ttrv_core.model.policy import Policy
from ttrv_core.problems import Problem
from ttrv_core.runs import model_card
from ttrv_core.runs.checkpoint import CHECKPOINTS, cut_partial_line, save_checkpoint

RESULT_COLUMNS = ("item", "question", "reference", "adapted_on", "before_greedy", "after_greedy", "before_reply",
                  "after_reply", "before_valid", "after_valid", "before_named", "after_named", "before_majority",
                  "after_majority", "before_share", "after_share", "changed", "change", "before_correct",
                  "after_correct", "before_content_correct", "after_content_correct", "before_f1", "after_f1",
                  "before_rouge1", "after_rouge1")
"""results.csv: *_greedy is the extracted greedy answer, *_reply the raw greedy text it came from,
*_valid whether it is a valid answer (answers.is_valid), *_named the answer it names read for content
and *_content_correct whether that is the reference (content.py); change: unchanged, format_only or
answer_changed (content.change, label-free); adapted_on marks the items trained on;
*_f1, *_rouge1 the open answer's token F1 and ROUGE-1 to a reference that is not yes/no (evaluate.py)."""


class RunDir:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        cut_partial_line(self.root / "events.jsonl")
        self._events = open(self.root / "events.jsonl", "a", encoding="utf-8")
        self.model_name: str | None = None
        """The model as config.json names it; the run_start line names it so too."""
        self.command: str | None = None
        """The command that made the run, as config.json records it (a CLI run's); the model card shows it."""

    def write_config(self, meta: dict) -> None:
        """config.json: the front end's record of the run (its "config" a TTRVConfig as a dict,
        the model named as the folder may show it)."""
        self.model_name, self.command = meta["config"]["model"], meta.get("command")
        self.write_json("config.json", meta)

    def write_json(self, name: str, obj) -> None:
        tmp = self.root / (name + ".tmp")
        tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, self.root / name)

    def write_problems(self, problems: Sequence[Problem]) -> None:
        if problems:
            (self.root / "problems.txt").write_text("\n".join(map(str, problems)) + "\n", encoding="utf-8")

    def add_problems(self, lines: Sequence[str]) -> None:
        """Append problems found while the run read its items (RunEnd.problems) to problems.txt."""
        if lines:
            with open(self.root / "problems.txt", "a", encoding="utf-8") as f:
                f.write("".join(f"{line}\n" for line in lines))

    def append(self, event: Event) -> None:
        obj = to_json(event)
        if isinstance(event, RunStart):  # the config as loaded holds the model's path on this machine
            obj["config"] = {**obj["config"], "model": self.model_name or demos.public(obj["config"]["model"])}
        self.append_json(obj)

    def append_json(self, obj: dict) -> None:
        self._events.write(json.dumps(obj, ensure_ascii=False) + "\n")
        self._events.flush()
        os.fsync(self._events.fileno())

    def save_checkpoint(self, policy: Policy, state: TrainState, event: dict) -> Path:
        return save_checkpoint(self.root, policy, state, event)

    def drop_checkpoints(self) -> None:
        shutil.rmtree(self.root / CHECKPOINTS, ignore_errors=True)

    def save_adapter(self, policy: Policy) -> Path:
        """peft save_pretrained into a temp folder, then an atomic swap."""
        final, tmp = self.root / "adapter", self.root / "adapter.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        save_adapter(policy, str(tmp))
        model_card.name_base(tmp)
        old = self.root / "adapter.old"
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
        return final

    def write_results(self, items: Sequence[Item], before: EvalResult | None, after: EvalResult | None,
                      adapted_on: Sequence[str] = ()) -> list[dict]:
        rows = results_table(items, before, after, adapted_on)
        with open(self.root / "results.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=RESULT_COLUMNS)
            w.writeheader()
            w.writerows(rows)
        self.write_json("results.json", {
            "before": before.metrics if before else None, "after": after.metrics if after else None, "items": rows})
        return rows

    def close(self) -> None:
        self._events.close()


def results_table(items: Sequence[Item], before: EvalResult | None, after: EvalResult | None,
                  adapted_on: Sequence[str] = ()) -> list[dict]:
    """One row per item: greedy answers (extracted and raw) and majority shares before and after."""
    b = {e.item_id: e for e in before.items} if before else {}
    a = {e.item_id: e for e in after.items} if after else {}
    trained, kinds = set(adapted_on), changes(items, before, after)
    rows = []
    for it in items:
        eb, ea = b.get(it.id), a.get(it.id)
        rows.append({
            "item": it.id, "question": it.question, "reference": it.reference, "adapted_on": it.id in trained,
            "before_greedy": eb.greedy if eb else None, "after_greedy": ea.greedy if ea else None,
            "before_reply": eb.greedy_text if eb else None, "after_reply": ea.greedy_text if ea else None,
            "before_valid": eb.greedy_valid if eb else None, "after_valid": ea.greedy_valid if ea else None,
            "before_majority": eb.majority if eb else None, "after_majority": ea.majority if ea else None,
            "before_share": round(eb.majority_share, 4) if eb else None,
            "after_share": round(ea.majority_share, 4) if ea else None,
            "before_named": eb.named if eb else None, "after_named": ea.named if ea else None,
            "changed": (eb.greedy != ea.greedy) if eb and ea else None,
            "change": kinds.get(it.id),
            "before_correct": _correct(eb), "after_correct": _correct(ea),
            "before_content_correct": eb.content_correct if eb else None,
            "after_content_correct": ea.content_correct if ea else None,
            **{f"{p}_{k}": None if e is None or getattr(e, k) is None else round(getattr(e, k), 4)
               for p, e in (("before", eb), ("after", ea)) for k in ("f1", "rouge1")},
        })
    return rows


def _correct(e: ItemEval | None) -> bool | None:
    return None if e is None else e.greedy_correct


def record(events: Iterator[Event], run_dir: RunDir, policy: Policy, items: Sequence[Item],
           before: EvalResult | None = None) -> Iterator[Event]:
    """Pass events through, writing each to the run folder; finish the folder however the loop ends.

    After each step the checkpoint is written before the step's event. `before`: the
    before-evaluation of a resumed run (it is in the log already, not in this stream)."""
    evals: dict[str, EvalResult] = {"before": before} if before else {}
    adapted_on: list[str] = []
    start, steps, end = None, 0, None
    try:
        for ev in events:
            if isinstance(ev, RunStart):
                adapted_on, start, steps = ev.train_ids, ev, max(steps, ev.resumed_from)
            if isinstance(ev, StepEvent):
                steps = ev.step
            with parallel.sheltered():  # K processes: another's end waits for the checkpoint and its line
                if isinstance(ev, StepEvent) and ev.snapshot is not None:
                    run_dir.save_checkpoint(policy, ev.snapshot(), to_json(ev))
                run_dir.append(ev)
            if isinstance(ev, EvalResult):
                evals[ev.phase] = ev
            if isinstance(ev, RunEnd):
                end = ev
                # the numbers, and the items adapted on (the paper's protocol: a subset of the split evaluated)
                run_dir.write_json("summary.json", {**ev.summary, "adapted_on": sorted(adapted_on)})
                run_dir.add_problems(ev.problems)
                if not ev.stopped:  # finished: nothing left to resume
                    run_dir.drop_checkpoints()
            yield ev
    finally:
        if steps:  # the policy holds trained weights (this run's steps, or those of the run it resumes)
            run_dir.save_adapter(policy)
            model_card.write(run_dir.root / "adapter", start, steps, end, items, evals.get("before"),
                             evals.get("after"), run_dir.command)
        if evals:
            run_dir.write_results(items, evals.get("before"), evals.get("after"), adapted_on)
        run_dir.close()


