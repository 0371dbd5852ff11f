"""The model card (README.md) of a LoRA adapter that a TTRV run wrote, so the adapter can be reused.

It states what someone loading the adapter needs: the base model by its hub id (a
local folder by its name, never a path on the machine that ran it), the prompt the
adapter was trained on (the question and the instruction suffix the task format
adds, prompts.build_prompt), the settings, greedy accuracy, majority accuracy,
invalid greedy replies and majority share before and after, and, for a CLI run, the command
that made it (config.json "command", `command`). Written by
folder.record (runs/folder.py) next to the adapter (name_base names the base in the adapter's config as the card
does); the app's adapter.zip carries it.
"""
from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Sequence

from ttrv_core import demos
from ttrv_core.events import EvalResult, RunEnd, RunStart
from ttrv_core.inputs.dataset import Item

MEASURES = (("eval/greedy_acc", "accuracy, greedy answer"), ("eval/maj_acc", "accuracy, majority of the votes"),
            ("eval/greedy_invalid", "greedy replies with no valid answer"),
            ("eval/majority_share", "majority share (label-free)"), ("eval/entropy", "entropy H / ln N (label-free)"))
HERE = "path/to/this/folder"
"""Where the card's loading code finds the adapter; a push names the repo instead (hub.py)."""
SETTINGS = ("n_votes", "n_train", "temperature", "reward", "alpha", "beta", "lr", "lora_r", "lora_alpha",
            "prompts_per_step", "prompts_per_update", "train_items", "epochs", "max_steps", "precision",
            "max_pixels", "seed")


def model_name(model: str) -> str:
    """A model as others can find it: a hub id as it is, a bundled demo as its assets/ folder,
    another local folder by its name only (its path is the running machine's business).

    >>> model_name("Qwen/Qwen2.5-VL-3B-Instruct"), model_name(demos.by_key("open").model)
    ('Qwen/Qwen2.5-VL-3B-Instruct', 'assets/demo_model')
    """
    demo = demos.by_model(model)
    if demo is not None:
        return f"assets/{demo.folder}"
    path = Path(model)
    if path.is_absolute() or path.exists():
        return path.name or model
    return model


def command(argv: Sequence[str]) -> str:
    """The CLI command that made a run, as config.json records it and the card shows it: a shell line
    of the arguments as typed, but a bundled demo's files by name (demos.public) and an absolute path
    by its last part (the card goes public; where the run lay is the machine's business).

    >>> command(["--model", demos.by_key("open").model, "--out=/home/me/runs/a", "--steps", "2"])
    'python -m ttrv_core --model demo:open --out=a --steps 2'
    """
    def shown(arg: str) -> str:
        flag, eq, value = arg.partition("=") if arg.startswith("--") and "=" in arg else ("", "", arg)
        named = demos.public(value)
        return flag + eq + (Path(named).name if named == value and Path(value).is_absolute() else named)
    return shlex.join(["python", "-m", "ttrv_core", *(shown(a) for a in argv)])


def name_base(folder: Path) -> None:
    """peft writes the base model as it was loaded, a path of this machine for a local folder: a
    run's adapter names it as model_name does instead (loading it onto a base model,
    PeftModel.from_pretrained, never reads that name). A checkpoint's adapter keeps the path: peft
    saves what it loaded under the name it read, and looks a name it cannot find up on the hub;
    checkpoints are the machine's state for a resume, as state.pt is, never a download."""
    path = Path(folder) / "adapter_config.json"
    cfg = json.loads(path.read_text(encoding="utf-8"))
    was = str(cfg.get("base_model_name_or_path") or "")
    if not was or model_name(was) == was:
        return
    cfg["base_model_name_or_path"] = model_name(was)
    path.write_text(json.dumps(cfg, indent=2), encoding="utf-8")
    readme = Path(folder) / "README.md"   # peft's card, before write() replaces it
    if readme.is_file():
        readme.write_text(readme.read_text(encoding="utf-8").replace(was, model_name(was)), encoding="utf-8")


def render(start: RunStart | None, steps: int, end: RunEnd | None, items: Sequence[Item],
           before: EvalResult | None, after: EvalResult | None, made_by: str | None = None) -> str:
    """The card; made_by: the command that started the run (`command`), if a CLI run."""
    cfg = start.config if start else {}
    base = model_name(str(cfg.get("model", "")))
    demo = demos.by_model(str(cfg.get("model", "")))
    front = [f"base_model: {base}"] if "/" in base and not demo else []  # a hub id: the hub links it
    lines = ["---", *front, "library_name: peft", "tags: [ttrv, lora, test-time-reinforcement-learning]", "---", "",
             "# LoRA adapter from a TTRV run", "",
             f"Base model: `{base}`" + (f" (the model of ttrv's bundled demo '{demo.key}': in the ttrv repository, "
                                        f"`python -m ttrv_core --demo {demo.key}`)" if demo else "") + ".",
             f"Adapted with TTRV (test-time RL: each answer rewarded by how often the model gave it, no labels) on "
             f"{len(start.train_ids) if start else '?'} unlabeled image(s) "
             f"({'one image, repeated' if start and start.mode == 'single' else 'a random subset'} of "
             f"{len(items)}), {steps} step(s)" + _ending(start, steps, end) + "."]
    lines += ["", "## Prompt", ""]
    questions = sorted({it.question for it in items})
    first = items[0] if items else None
    if first is not None:
        lines.append(f"Task format: `{first.task}`" + (f"; options: {', '.join(first.options)}" if first.options else "")
                     + ". Question" + (f": \"{questions[0]}\"" if len(questions) == 1 else
                                       f"s: {len(questions)} different ones (the questions file), e.g. "
                                       f"\"{questions[0]}\"") + ".")
        lines += ["The prompt as the model saw it (one user turn, the image first; the text after the question "
                  "is the suffix the task format adds):", "", "```text", first.prompt, "```"]
    lines += ["", "## Settings", "", "| setting | value |", "|---|---|"]
    lines += [f"| {k} | {cfg[k]} |" for k in SETTINGS if k in cfg]
    if made_by:
        resumed = ", resumed with `python -m ttrv_core --resume RUN_DIR`" if start and start.resumed_from else ""
        lines += ["", "## Command", "", "The command that made the run (in the ttrv repository; an absolute path "
                  f"by its last part){resumed}:", "", "```sh", made_by, "```"]
    lines += ["", "## Before and after", "",
              "Greedy decoding; majority of the votes sampled at the run's temperature. "
              "Accuracy only where an answers column was given (never used for training).", "",
              "| measure | before | after |", "|---|---|---|"]
    for key, name in MEASURES:
        b, a = (r.metrics.get(key) if r else None for r in (before, after))
        if b is not None or a is not None:
            lines.append(f"| {name} | {_num(b)} | {_num(a)} |")
    n_b, n_a = (int(r.metrics.get("eval/items", 0)) if r else 0 for r in (before, after))
    lines.append(f"| images evaluated | {n_b} | {n_a} |")
    lines += ["", "## Load it", "", "```python", "from peft import PeftModel",
              "from transformers import AutoModelForImageTextToText, AutoProcessor", "",
              f"base = AutoModelForImageTextToText.from_pretrained(\"{base}\")",
              f"processor = AutoProcessor.from_pretrained(\"{base}\")",
              f"model = PeftModel.from_pretrained(base, \"{HERE}\")", "```", ""]
    return "\n".join(lines)


def write(folder: Path, start: RunStart | None, steps: int, end: RunEnd | None, items: Sequence[Item],
          before: EvalResult | None, after: EvalResult | None, made_by: str | None = None) -> Path:
    path = Path(folder) / "README.md"
    path.write_text(render(start, steps, end, items, before, after, made_by), encoding="utf-8")
    return path


def _ending(start: RunStart | None, steps: int, end: RunEnd | None) -> str:
    if end is not None and end.guard:
        return f" ({end.guard})"
    if start is not None and steps < start.total_steps:
        return f" of {start.total_steps} (stopped early)"
    return ""


def _num(v: float | None) -> str:
    return "" if v is None else f"{v:.3f}"
