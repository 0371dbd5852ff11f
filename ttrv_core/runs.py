"""A run folder: everything a run computed, written as it happens.

    config.json     the TTRVConfig and where the items came from
    problems.txt    input problems (file: message), if any
    events.jsonl    one JSON object per event, flushed as each arrives
    results.csv     before/after per item (also results.json)
    adapter/        the LoRA adapter in peft format (base model id in its config)

`record` wraps the engine's event stream: the caller iterates it exactly as
the bare stream, and the folder is complete even when the caller stops early
(the adapter and the results so far are written in a `finally`).
"""
from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path
from typing import Iterator, Sequence

from .data import Item, Problem
from .events import EvalResult, Event, ItemEval, RunEnd, to_json
from .models import Policy, save_adapter

RESULT_COLUMNS = ("item", "question", "reference", "before_greedy", "after_greedy", "before_majority",
                  "after_majority", "before_share", "after_share", "changed", "before_correct", "after_correct")


class RunDir:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._events = open(self.root / "events.jsonl", "a", encoding="utf-8")

    def write_json(self, name: str, obj) -> None:
        tmp = self.root / (name + ".tmp")
        tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, self.root / name)

    def write_problems(self, problems: Sequence[Problem]) -> None:
        if problems:
            (self.root / "problems.txt").write_text("\n".join(map(str, problems)) + "\n", encoding="utf-8")

    def append(self, event: Event) -> None:
        self._events.write(json.dumps(to_json(event), ensure_ascii=False) + "\n")
        self._events.flush()
        os.fsync(self._events.fileno())

    def save_adapter(self, policy: Policy) -> Path:
        """peft save_pretrained into a temp folder, then an atomic swap."""
        final, tmp = self.root / "adapter", self.root / "adapter.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        save_adapter(policy, str(tmp))
        old = self.root / "adapter.old"
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
        return final

    def write_results(self, items: Sequence[Item], before: EvalResult | None, after: EvalResult | None) -> list[dict]:
        rows = results_table(items, before, after)
        with open(self.root / "results.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=RESULT_COLUMNS)
            w.writeheader()
            w.writerows(rows)
        self.write_json("results.json", {
            "before": before.metrics if before else None, "after": after.metrics if after else None, "items": rows})
        return rows

    def close(self) -> None:
        self._events.close()


def results_table(items: Sequence[Item], before: EvalResult | None, after: EvalResult | None) -> list[dict]:
    """One row per item: answers and majority shares before and after."""
    b = {e.item_id: e for e in before.items} if before else {}
    a = {e.item_id: e for e in after.items} if after else {}
    rows = []
    for it in items:
        eb, ea = b.get(it.id), a.get(it.id)
        rows.append({
            "item": it.id, "question": it.question, "reference": it.reference,
            "before_greedy": eb.greedy if eb else None, "after_greedy": ea.greedy if ea else None,
            "before_majority": eb.majority if eb else None, "after_majority": ea.majority if ea else None,
            "before_share": round(eb.majority_share, 4) if eb else None,
            "after_share": round(ea.majority_share, 4) if ea else None,
            "changed": (eb.greedy != ea.greedy) if eb and ea else None,
            "before_correct": _correct(eb), "after_correct": _correct(ea),
        })
    return rows


def _correct(e: ItemEval | None) -> bool | None:
    return None if e is None else e.greedy_correct


def record(events: Iterator[Event], run_dir: RunDir, policy: Policy, items: Sequence[Item]) -> Iterator[Event]:
    """Pass events through, writing each to the run folder; finish the folder however the loop ends."""
    evals: dict[str, EvalResult] = {}
    try:
        for ev in events:
            run_dir.append(ev)
            if isinstance(ev, EvalResult):
                evals[ev.phase] = ev
            if isinstance(ev, RunEnd):
                run_dir.write_json("summary.json", ev.summary)
            yield ev
    finally:
        run_dir.save_adapter(policy)
        run_dir.write_results(items, evals.get("before"), evals.get("after"))
        run_dir.close()
