"""Headless TTRV runs: `ttrv --images DIR --questions FILE --out DIR` (or `python -m ttrv_core ...`).

With no --images, runs a bundled demo (ttrv_core/demos.py; --demo, default: the
multiple-choice digits model whose reply format is half learned): its model,
its example set and its task. With --images and no --model, the model is the
--demo's if one is named, else the bundled model of the task (multiple choice:
the default demo's). A bundled demo's model, however it is named (--demo, or
its folder as --model), runs with that demo's settings; a flag given on the
command line wins over them. Before a run, two lines say which model runs and
why, and every setting that is not the paper's default, with where it comes from.
The run folder's config.json names a bundled demo's model and files by name
(demos.public: 'demo:format') and any other path as it was given.
`python -m ttrv_core --resume DIR` continues a run that was killed or stopped,
from its checkpoint after the last completed step (runs/checkpoint.py), with the settings
and images in DIR/config.json; it appends to the same events.jsonl.
"""
from __future__ import annotations

import argparse
import json
import sys
import traceback
from dataclasses import fields
from pathlib import Path

from ttrv_core import inputs
from ttrv_core.cli.progress import show
from ttrv_core.config import RECOMPUTE, TTRVConfig
from ttrv_core.demos import DEFAULT, DEMOS, by_key, by_model, by_task, local, public
from ttrv_core.dist import fsdp, parallel
from ttrv_core.errors import TTRVError
from ttrv_core.inputs import tables
from ttrv_core.inputs.video import FRAMES
from ttrv_core.model.loading import ModelLoadError, load_policy
from ttrv_core.model.threads import set_threads_for
from ttrv_core.runs.tracking import TRACKERS, mirror, missing_library
from ttrv_core.tasks.prompts import TASKS

FLAGS = {s.flag: name for name, s in TTRVConfig.settings().items() if s.flag}
"""Flag (without its dashes) -> config field: every setting that declares a flag (config.py)."""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ttrv_core", description=__doc__.splitlines()[0])
    p.add_argument("--images", type=Path, help="folder (or .zip) of images (default: the --demo's example set)")
    p.add_argument("--demo", choices=[d.key for d in DEMOS],
                   help="the bundled demo: its example set with no --images, its model and settings with no "
                        "--model: " + "; ".join(f"{d.key} = {d.label}" for d in DEMOS) +
                        f" (default: {DEFAULT.key})")
    p.add_argument("--question", help="one question for every image")
    p.add_argument("--questions", type=Path, help="CSV or JSONL: image, question[, options][, answer] "
                   "(default: questions.csv or .jsonl among the images, if there is one)")
    p.add_argument("--dataset", metavar="NAME_OR_PATH", help="instead of --images: a Hugging Face dataset (a "
                   "save_to_disk folder; parquet, jsonl or csv files; an imagefolder; a Hub id), read lazily: "
                   "each row's image when the run reads it")
    p.add_argument("--split", default="test", help="--dataset's split adapted on (default: %(default)s)")
    p.add_argument("--eval-split", metavar="NAME", help="evaluate on this split of --dataset instead of --split "
                   "(default: --split itself, the paper's protocol: the authors adapt on a subset of the test "
                   "split, --train-items, and evaluate on the whole split)")
    p.add_argument("--dataset-config", help="--dataset's configuration (a Hub dataset's subset)")
    p.add_argument("--columns", default="", help="--dataset's columns, where the defaults miss them: e.g. "
                   "image=img,question=q,options=choices,answer=label")
    p.add_argument("--train-first", action="store_true", help="adapt on the first --train-items items, not a "
                   "seeded random subset")
    p.add_argument("--task", choices=TASKS, help="answer format (default: open; the demo's with no --images)")
    p.add_argument("--options", default="", help="options / class names for every image, separated by '|'")
    p.add_argument("--model", help="hub id or folder (default: the --demo's model; with --images and no --demo, "
                   "the bundled model of the --task: " + ", ".join(
                       f"{t} {by_task(t).folder}" for t in TASKS) + "). A bundled demo's folder brings that "
                   "demo's settings (a flag wins over them)")
    p.add_argument("--out", type=Path, default=Path("runs/latest"), help="run folder (default: runs/latest)")
    p.add_argument("--single", metavar="IMAGE", help="single-example mode: adapt on this image only")
    how = TTRVConfig.settings()
    p.add_argument("--naive", action="store_true", help=f"shared_prefix = False. {how['shared_prefix'].help}")
    p.add_argument("--no-guard", action="store_true", help=f"collapse_guard = False. {how['collapse_guard'].help}")
    p.add_argument("--checkpointing", nargs="?", const="layers", default="off", choices=RECOMPUTE,
                   help=f"{how['gradient_checkpointing'].help} (given alone: layers; default: off)")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="allow a checkpoint whose architecture ships as Python code (it runs that code)")
    p.add_argument("--device", help="cpu or cuda (default: cuda if available)")
    p.add_argument("--limit", type=int, default=0, metavar="N", help="use only the first N items (default: all)")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR",
                   help="continue the run in RUN_DIR from its last checkpoint (other settings come from there)")
    p.add_argument("--report-to", default="none", type=_tracker, choices=TRACKERS, help="also mirror the run's metrics "
                   "(events.jsonl stays the record) to tensorboard (event files in RUN_DIR/tensorboard) or wandb "
                   "(project ttrv; WANDB_MODE=offline keeps the run in RUN_DIR/wandb) (default: none)")
    p.add_argument("--push-to-hub", metavar="REPO_ID", help="after the run, upload its adapter and model card to "
                   "this Hub model repo (token: `hf auth login` or HF_TOKEN)")
    p.add_argument("--dist-timeout", type=float, default=parallel.DEFAULT_TIMEOUT_S, metavar="S",
                   help="launched on several processes (torchrun, accelerate launch): how long a process waits "
                        "for the others before the run ends with an error (default: %(default)s s)")
    # the fields' declared defaults: TTRVConfig() resolves some (lora_alpha 0 -> 2 x lora_r)
    defaults = {f.name: f.default for f in fields(TTRVConfig)}
    types = {f.name: f.type for f in fields(TTRVConfig)}
    for name, s in TTRVConfig.settings().items():
        if s.flag:
            zero = f" = {s.zero}" if s.zero and defaults[name] == 0 else ""
            # None: not given (the demo's setting, else the config's default, applies)
            p.add_argument(f"--{s.flag}", type={"int": int, "float": float}.get(types[name], str), default=None,
                           dest=name, choices=s.choices or None,
                           help=f"{s.help} (default: {defaults[name]}{zero})".replace("%", "%%"))
    return p


def _tracker(to: str) -> str:
    """--report-to's type: a tracker whose library is missing stops the run before anything loads."""
    if why := missing_library(to):
        raise argparse.ArgumentTypeError(why)
    return to


def quiet() -> None:
    """Keep the terminal for the progress bar: no loading bars or library chatter."""
    import warnings

    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)


def main(argv: list[str] | None = None) -> int:
    """The `ttrv` command: load the data and the policy, run engine.adapt recorded into the run
    folder (runs/folder.py `record`) with a progress bar; returns the exit status."""
    args = parser().parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)   # config.json's "command" (model_card.command)
    quiet()
    try:
        args.device = parallel.init(args.dist_timeout, args.device)  # K processes: join them (parallel.py)
        code = _main(args)
    except Exception as e:  # K processes: the others learn which rank failed, and where
        if parallel.size() == 1:
            raise
        traceback.print_exc()
        print(f"error: {parallel.failed(e)}", file=sys.stderr)
        code = 1
    return parallel.finish(code)


def _main(args) -> int:
    from ttrv_core.runs.checkpoint import ResumeError
    try:
        cfg, ds, meta, point, said = _resume_setup(args.resume) if args.resume else _new_setup(args)
    except (ValueError, ResumeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    lead = parallel.is_main()  # rank 0 alone writes the run folder and the terminal's output
    if lead:
        print("\n".join(said), flush=True)
    for pr in ds.problems if lead else ():
        print(f"warning: {pr}", file=sys.stderr)
    if not ds.items:
        print("error: no usable items; nothing to run", file=sys.stderr)
        return 2
    adapter = str(point.checkpoint / "adapter") if point else None
    parallel.stage("load")
    if lead and fsdp.fsdp_requested():
        print(f"note: {fsdp.FSDP_NOTE}", file=sys.stderr)
    try:
        policy = load_policy(cfg.model, cfg.precision, args.device, cfg.lora_r, cfg.lora_alpha, cfg.seed,
                             adapter=adapter, max_pixels=cfg.max_pixels or None,
                             trust_remote_code=args.trust_remote_code, fsdp=fsdp.fsdp_requested(),
                             only_model=True)
    except ModelLoadError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if fsdp.fsdp_requested() and parallel.size() > 1:
        fsdp.shard_policy(policy)  # the decoder layers sharded over the processes (parallel.py)
    set_threads_for(policy)  # process-wide (torch.set_num_threads): one for a small model on a CPU

    from ttrv_core.method.engine import adapt
    from ttrv_core.runs import hub, model_card
    from ttrv_core.runs.folder import RunDir, record

    meta.setdefault("command", model_card.command(args.argv))   # a resumed run keeps the one that started it
    out = RunDir(args.resume or args.out) if lead else None
    if out and point is None:
        out.write_config(meta)
        out.write_problems(ds.problems)
    elif out:  # config.json keeps how the run started; each resume adds where it went on, on how many processes
        meta["resumes"] = [*meta.get("resumes", []), {"after_step": point.resume.state.step,
                                                      "world_size": parallel.size()}]
        out.write_config(meta)
        if point.missing_event:  # killed between the checkpoint and its event line
            out.append_json(point.missing_event)
    try:
        events = adapt(cfg, policy, ds.items, single=meta["single"], resume=point.resume if point else None,
                       train_on=ds.adapt_on)
        if out:
            show(mirror(record(events, out, policy, ds.items, before=point.resume.before if point else None),
                         args.report_to, out.root, meta), ds.items)
        else:  # ranks > 0 take part in every step and evaluation, and write nothing
            for _ in events:
                pass
    except (ValueError, TTRVError) as e:  # the run folder keeps what was computed before
        msg = parallel.failed(e)
        print(f"error: {msg}", file=sys.stderr)
        if out:
            if parallel.size() > 1:
                (out.root / "error.txt").write_text(msg + "\n", encoding="utf-8")
            print(f"run folder (partial): {out.root}", file=sys.stderr)
        return 2
    if out:
        print(f"run folder: {out.root}")
    return hub.push_after_run(out.root, args.push_to_hub) if out and args.push_to_hub else 0


def _new_setup(args):
    """Config, items, the config.json record and the plan lines of a new run, from the flags."""
    demo = by_key(args.demo or DEFAULT.key) if args.images is None and not args.dataset else None
    if demo:
        args.images, args.questions = demo.example_dir, args.questions or demo.example_dir / "questions.csv"
    task = args.task or (demo.task if demo else "open")
    options = tuple(o.strip() for o in args.options.split("|") if o.strip())
    model, why = _model(args, task, own=demo is None)
    bundled = by_model(model)   # a bundled demo's model runs with that demo's settings
    settings = bundled.settings if bundled else {}
    given = {name: v for name in FLAGS.values() if (v := getattr(args, name)) is not None}
    flag = {name: f"--{f}" for f, name in FLAGS.items()}
    sources = {**{k: f"demo '{bundled.key}'" for k in settings}, **{k: flag[k] for k in given},
               "shared_prefix": "--naive", "collapse_guard": "--no-guard", "gradient_checkpointing": "--checkpointing"}
    if parallel.size() > 1 and "prompts_per_update" not in given:  # one prompt per process and update
        given["prompts_per_update"], sources["prompts_per_update"] = parallel.size(), "one per process"
    cfg = TTRVConfig(model=model, shared_prefix=not args.naive, collapse_guard=not args.no_guard,
                     gradient_checkpointing=args.checkpointing, train_first=args.train_first,
                     **{**settings, **given})
    if args.dataset:   # a table of rows (inputs/tables.py): its images written into the run folder as read
        table = {"name": public(args.dataset), "split": args.split, "config": args.dataset_config,
                 "columns": tables.parse_columns(args.columns), "eval_split": args.eval_split}
        meta = {"config": {**cfg.to_dict(), "model": public(cfg.model)}, "dataset": table, "images": None,
                "questions": None, "question": args.question, "task": task, "options": list(options),
                "single": args.single, "limit": args.limit, "demo": None, "world_size": parallel.size()}
        ds = _dataset(meta, args.out)
        return cfg, ds, meta, None, plan(cfg, why, sources) + [_protocol(cfg, ds, table)]
    # a folder in place; a .zip unpacked into the run folder (inputs.collect, as the app does)
    got = inputs.collect(args.images, args.out, label=f"example set '{demo.examples}'" if demo else None)
    qfile = args.questions or got.found   # the file given, else one among the images (inputs.load)
    meta = {"config": {**cfg.to_dict(), "model": public(cfg.model)}, "images": public(got.folder),
            "questions": public(qfile) if qfile else None, "question": args.question,
            "task": task, "options": list(options), "single": args.single, "limit": args.limit,
            "demo": demo.key if demo else None, "world_size": parallel.size()}
    ds = _dataset(meta, args.out)
    ds.problems = got.problems + ds.problems
    return cfg, ds, meta, None, plan(cfg, why, sources)


def _model(args, task: str, own: bool) -> tuple[str, str]:
    """The model a new run loads, and why that one, in words for the plan line. own: --images given."""
    if args.model:
        demo = by_model(args.model)
        return args.model, "--model" + (f", the bundled demo '{demo.key}': its settings apply" if demo else "")
    if args.demo:
        return by_key(args.demo).model, f"--demo {args.demo}"
    if not own:   # the default demo's example set runs
        return DEFAULT.model, "the default demo"
    demo = by_task(task)
    return demo.model, (f"no --model given: the bundled model for task '{task}' (the demo '{demo.key}'); "
                        "name another with --model")


def plan(cfg: TTRVConfig, why: str, sources: dict[str, str]) -> list[str]:
    """What a run will do, said before the model loads: the model (a bundled demo by its name) and
    why that one, then every setting that is not the paper's default, with where it comes from."""
    demo = by_model(cfg.model)
    model = f"demo '{demo.key}' (assets/{demo.folder})" if demo else public(cfg.model)
    paper = TTRVConfig(model=cfg.model)
    sources = {"lora_alpha": "2 x lora_r", **sources}
    changed = [f"{f.name} {getattr(cfg, f.name)}" + (f" ({sources[f.name]})" if f.name in sources else "")
               for f in fields(TTRVConfig) if f.name != "model" and getattr(cfg, f.name) != getattr(paper, f.name)]
    rest = "every other setting" if changed else "every setting"
    return [f"model: {model}: {why}", f"settings: {', '.join(changed) + '; ' if changed else ''}{rest} at its "
                                      "default (the paper's where it has one; --help lists them)"]


def _resume_setup(folder: Path):
    """Config, items and checkpoint of the run in `folder`, as it was started."""
    from ttrv_core.runs.checkpoint import ResumeError, prepare_resume
    point = prepare_resume(folder)
    meta = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    if "images" not in meta and "dataset" not in meta:
        raise ResumeError(f"{folder}/config.json names no image folder (a run started in the app?); "
                          "only runs started with `python -m ttrv_core` can be resumed here")
    names = {f.name for f in fields(TTRVConfig)}
    # a bundled demo's model is recorded by its name (demos.public): its folder on this machine
    cfg = TTRVConfig(**{**{k: v for k, v in meta["config"].items() if k in names},
                        "model": local(meta["config"]["model"])})
    ds = _dataset(meta, folder)
    start = point.run_start
    ids = {it.id for it in ds.items + (ds.adapt_on or [])}
    if start and (start["n_items"] != len(ds.items) or not set(start["train_ids"]) <= ids):
        raise ResumeError(f"the images or questions named in {folder}/config.json changed since the run started "
                          f"({start['n_items']} items then, {len(ds.items)} now); it cannot be resumed")
    ds.problems = []  # reported when the run started (problems.txt)
    return cfg, ds, meta, point, plan(cfg, f"as the run started ({folder / 'config.json'})", {})


def _dataset(meta: dict, workdir: Path | None = None):
    """The items a config.json record names, through the app's one data path (inputs.load), or the rows of
    its --dataset (inputs/tables.py: their images written under workdir/input when read; a --dataset needs one)."""
    if meta.get("dataset"):
        return _table(meta, workdir)
    images = Path(local(meta["images"]))
    got = inputs.collect(images, images)   # a folder: used where it is
    ds = inputs.load(got, meta["question"], Path(local(meta["questions"])) if meta["questions"] else None,
                     meta["task"], tuple(meta.get("options") or ()),
                     meta.get("config", {}).get("video_frames", FRAMES)).dataset
    if meta.get("limit"):
        ds.items = ds.items[:meta["limit"]]
    return ds


def _table(meta: dict, workdir: Path):
    """The items of config.json's --dataset: its --eval-split evaluated and its --split adapted on, or
    its --split both (the paper's protocol)."""
    d = meta["dataset"]
    read = dict(name=local(d["name"]), workdir=Path(workdir) / "input", config=d["config"], columns=d["columns"],
                question=meta["question"], task=meta["task"], options=tuple(meta.get("options") or ()))
    ds = tables.load_table(split=d["eval_split"] or d["split"], **read)
    if d["eval_split"]:
        train = tables.load_table(split=d["split"], **read)
        ds.adapt_on, ds.problems = train.items, train.problems + ds.problems
    if meta.get("limit"):
        ds.items = ds.items[:meta["limit"]]
    return ds


def _protocol(cfg: TTRVConfig, ds, table: dict) -> str:
    """The plan's line on which rows are adapted on and which evaluated."""
    pool = len(ds.items if ds.adapt_on is None else ds.adapt_on)
    n = cfg.train_items if 0 < cfg.train_items < pool else pool
    how = "all" if n == pool else "the first" if cfg.train_first else f"a random (seed {cfg.seed})"
    return (f"data: adapting on {how} {n} of the {pool} usable rows of split '{table['split']}', evaluating on "
            f"the {len(ds.items)} of split '{table['eval_split'] or table['split']}'")


if __name__ == "__main__":
    sys.exit(main())
