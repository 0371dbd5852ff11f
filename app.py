"""TTRV in the browser: upload images, adapt a vision-language model on them live, compare.

    python app.py          # http://127.0.0.1:7860

Widgets <-> ttrv_core, nothing else: data.load_dataset reads the inputs,
models.load_policy loads the model, engine.run yields events (recorded by
runs.record into a run folder), plots.* draws them. Each browser session keeps
its own run folders (gr.State) in its own folder under this process's temp dir,
removed when the tab closes (unload), when the state expires (SESSION_TTL_S) and
at exit; folders left by dead processes are swept at start-up. One job runs at a
time (queue concurrency 1). On a Hugging Face Space with the `spaces` package,
the GPU work (model load + run) runs under `spaces.GPU`.

Environment: TTRV_PUBLIC=1 (a shared public Space: preset models only, run
sizes capped by PublicCaps); TTRV_TRUST_REMOTE_CODE=1 (allow checkpoints with
custom code; ignored when public). Uploads are read as images, zips and
CSV/JSONL text only (data.py, uploads.py); nothing uploaded is executed or unpickled.
"""
from __future__ import annotations

import atexit
import base64
import hashlib
import html
import io
import os
import shutil
import socket
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr
import torch

from ttrv_core import data, engine, families, models, plots, runs
from ttrv_core.config import CHECKPOINTING, DEMO_MODEL, PRECISIONS, TTRVConfig
from ttrv_core.errors import TTRVError, is_oom, oom_message
from ttrv_core.events import EvalResult, Progress, RunEnd, RunStart, StepEvent
from ttrv_core.problems import Problem
from ttrv_core.rewards import REWARDS
from ttrv_core.uploads import MAX_TOTAL_MB, collect_uploads

try:  # Hugging Face Spaces (ZeroGPU): the GPU is attached only inside decorated calls
    import spaces
    gpu = spaces.GPU(duration=600)  # seconds a run may hold the GPU; ZeroGPU quotas may cap it lower
except ImportError:
    def gpu(fn):
        return fn

ROOT = Path(__file__).resolve().parent
EXAMPLES = ROOT / "assets" / "examples"
DEMO_LABEL = "Demo: tiny digits model (bundled, runs on CPU)"
# menu label -> (hub id or folder, note): the demo model, then the engine's presets
PRESETS = {DEMO_LABEL: (DEMO_MODEL, "a 1M-parameter Qwen2.5-VL trained here on 8x8 digits; for the demo only")}
PRESETS |= {label: (p.model_id, p.note) for label, p in families.PRESETS.items()}
USER_ERRORS = (TTRVError, ValueError)  # their messages are meant for the user
PUBLIC = os.environ.get("TTRV_PUBLIC", "").strip() == "1"
"""A shared public Space: only PRESETS load, and runs are capped (PublicCaps)."""
MAX_FILE_SIZE = MAX_TOTAL_MB * data.MB
"""Largest single upload, in bytes (gradio launch max_file_size): uploads.py refuses more than
MAX_TOTAL_MB of uploads unpacked anyway, so gradio stops bigger files at the door."""
SESSION_TTL_S = 6 * 3600
"""A session's files (and gradio's cached uploads) are deleted this long after last use."""
DEFAULTS = TTRVConfig()
FOLLOW = "(each step's first image)"
ONE_QUESTION, QUESTIONS_FILE = "One question for all images", "A questions file"
EXAMPLE_SET, MY_IMAGES = "Bundled example set", "My images"
REWARD_HELP = ("ttrv = r1 - alpha*H_norm as in the paper's code. Under group-normalised advantages the "
               "entropy term of the paper's reward cancels exactly (it is one number per image), so ttrv "
               "trains like 'frequency'; 'ttrv_marginal' is our variant in which it acts. "
               "majority = TTRL's 0/1 reward.")
GUARD_HELP = ("Label-free: when most images get the same majority answer for 2 steps in a row, training stops "
              "and the adapter goes back to the last healthy step (the method's known failure is collapse).")
FIGURE_EVERY_S = 1.0  # redraw the plots at most this often (they are cheap, the browser is not)


@dataclass(frozen=True)
class PublicCaps:
    """Upper bounds on a public Space, so one run cannot hog the shared GPU. At the caps, a 3B
    model in 4-bit on an H100 takes about 12 x 8 x 1.4 + 2 x 48 x 0.5 = ~230 s plus loading
    (bench/RESULTS.md run 5: 1.4 s per image in a step; evaluating an image is one sampling of
    33 rows, ~0.5 s: an estimate, not measured end to end), inside the 600 s GPU slot, with
    room for slower cards. The paper's main setting (20 images, 6 steps) is well inside."""
    n_votes: int = 32           # votes N (the paper's value); memory and time grow with it
    n_train: int = 16           # trained answers G (the paper's); the training forward holds G answers
    eval_votes: int = 32        # votes per image when evaluating (0 = N)
    prompts_per_step: int = 8   # images per step (the paper's)
    lora_r: int = 64            # LoRA rank
    steps: int = 12             # steps in all (epochs x batches, or max_steps)
    items: int = 48             # images evaluated; beyond it only the first 48 are used


CAPS = PublicCaps()


def public_refusal(model: str, cfg: TTRVConfig, n_items: int, single: str | None) -> str | None:
    """Why a public Space refuses this run (a model outside PRESETS, a setting over CAPS), or None."""
    if model not in {mid for mid, _ in PRESETS.values()}:
        return (f"this public Space only runs its preset models; '{model}' is not one of them "
                "(run the app on your own machine for any model)")
    for name in ("n_votes", "n_train", "eval_votes", "prompts_per_step", "lora_r"):
        if getattr(cfg, name) > getattr(CAPS, name):
            return f"this public Space allows {name} up to {getattr(CAPS, name)}, got {getattr(cfg, name)}"
    pool = cfg.single_copies if single else cfg.train_items if 0 < cfg.train_items < n_items else n_items
    if cfg.total_steps(pool) > CAPS.steps:  # pool: the images engine.run adapts on
        return (f"this public Space allows {CAPS.steps} steps per run, these settings make "
                f"{cfg.total_steps(pool)}: set Steps or fewer epochs")
    return None


# --------------------------------------------------------------------------- per-session state

APP_DIR = Path(tempfile.gettempdir())
APP_PREFIX = "ttrv-app-"  # + pid: this process's session folders


def sweep_stale(parent: Path = APP_DIR) -> list[Path]:
    """Remove the session folders of app processes that are gone (killed, crashed)."""
    gone = []
    for d in parent.glob(APP_PREFIX + "*"):
        pid = d.name[len(APP_PREFIX):].split("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(d, ignore_errors=True)
            gone.append(d)
    return gone


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but is not ours
        pass
    return True


sweep_stale()
SESSIONS = Path(tempfile.mkdtemp(prefix=f"{APP_PREFIX}{os.getpid()}-"))
atexit.register(shutil.rmtree, SESSIONS, ignore_errors=True)


def session_root(request: gr.Request | None) -> Path:
    """The session's folder, named by a hash of gradio's session id (which the client picks)."""
    key = getattr(request, "session_hash", None) or os.urandom(8).hex()
    return SESSIONS / hashlib.sha256(key.encode()).hexdigest()[:16]


@dataclass
class Session:
    """One browser session: its folder, its latest run and a stop flag."""
    root: Path
    stop: bool = False
    running: bool = False
    runs: int = 0
    items: list = field(default_factory=list)
    steps: list = field(default_factory=list)
    evals: dict = field(default_factory=dict)
    start: RunStart | None = None
    run_dir: Path | None = None
    choice: str = FOLLOW         # whose histogram is shown

    @classmethod
    def ensure(cls, sess: "Session | None", request: gr.Request | None = None) -> "Session":
        return sess if sess is not None else cls(session_root(request))

    def new_run(self) -> Path:
        self.runs += 1
        self.stop, self.items, self.steps, self.evals, self.start, self.run_dir = False, [], [], {}, None, None
        self.root.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f"run-{self.runs}-", dir=self.root))  # fresh even if reused


def forget(sess: Session | None) -> None:
    """gr.State's delete_callback: the state expired (SESSION_TTL_S, or an hour after the tab closed)."""
    if sess is not None:
        shutil.rmtree(sess.root, ignore_errors=True)


def end_session(request: gr.Request) -> None:
    """The tab closed: its files go now (the state itself lingers an hour in gradio)."""
    shutil.rmtree(session_root(request), ignore_errors=True)


# --------------------------------------------------------------------------- inputs -> dataset

def example_sets() -> list[str]:
    return sorted(p.name for p in EXAMPLES.iterdir() if p.is_dir()) if EXAMPLES.is_dir() else []


def load_data(workdir: Path, source, example, uploads, folder, qmode, question, qfile, task, options):
    """The dataset the widgets describe (problems included), and a line saying where it came from."""
    opts = tuple(o.strip() for o in (options or "").split("|") if o.strip())
    problems = []
    if source == EXAMPLE_SET:
        if example not in example_sets():
            return data.Dataset(problems=[Problem("example set", f"no example set named '{example}'")]), ""
        images = EXAMPLES / example
        found = data.find_questions_file(images)
        where = f"example set '{example}'"
    else:
        files = list(uploads or []) + list(folder or [])
        if not files:
            return data.Dataset(problems=[Problem("upload", "no images uploaded yet")]), ""
        images, found, problems = collect_uploads(files, workdir / "input")
        where = f"{len(files)} uploaded file(s)"
    if qmode == QUESTIONS_FILE:
        qpath = Path(qfile) if qfile else found
        if qpath is None:
            several = [p.name for p in data.questions_files(images)]
            why = (f"several questions files among the images ({', '.join(several)}) and none is named "
                   "questions.csv: upload the one to use as the questions file" if several else
                   "no questions file uploaded or found among the images; "
                   "upload one, or choose 'One question for all images'")
            return data.Dataset(problems=problems + [Problem("questions", why)]), where
        ds = data.load_dataset(images, question or None, qpath, task, opts)
    else:
        ds = data.load_dataset(images, question, None, task, opts)
    ds.problems = problems + ds.problems
    if PUBLIC and len(ds.items) > CAPS.items:
        ds.problems.append(Problem(f"images {CAPS.items + 1}-{len(ds.items)}",
                                   f"this public Space uses the first {CAPS.items} images only"))
        ds.items = ds.items[:CAPS.items]
    return ds, where


def describe(ds: data.Dataset, where: str) -> str:
    n_ans = sum(it.answer is not None for it in ds.items)
    lines = [f"**{len(ds.items)} image(s) ready** from {where}." if ds.items else "**No usable images yet.**"]
    if n_ans:
        lines.append(f"Answers column found for {n_ans} image(s): *used for evaluation only* "
                     "(accuracy before/after), never for the rewards.")
    if ds.problems:
        shown = ds.problems[:20]
        lines.append("⚠️ **Problems** (these are skipped; the good images still run):")
        lines += [f"- `{p.file.replace('`', chr(39))}`: {html.escape(p.message)}" for p in shown]
        if len(ds.problems) > len(shown):
            lines.append(f"- … and {len(ds.problems) - len(shown)} more (problems.txt in the run folder)")
    return "\n".join(lines)


# --------------------------------------------------------------------------- the GPU work

@gpu
def adapt(cfg: TTRVConfig, items: list, single: str | None, run_dir: runs.RunDir, should_stop):
    """Load a fresh policy (a new LoRA adapter per run) and run TTRV, recording into run_dir."""
    policy = models.load_policy(cfg.model, cfg.precision, None, cfg.lora_r, cfg.lora_alpha, cfg.seed,
                                max_pixels=cfg.max_pixels or None,
                                trust_remote_code=models.remote_code_allowed() and not PUBLIC)
    yield from runs.record(engine.run(cfg, policy, items, single=single, should_stop=should_stop),
                           run_dir, policy, items)


# --------------------------------------------------------------------------- events -> widgets

def status_html(text: str, frac: float | None = None, kind: str = "info") -> str:
    colors = {"info": "#3b6fd8", "done": "#2a9d54", "error": "#c0392b", "stopped": "#e07b24"}
    bar = "" if frac is None else (f'<progress value="{frac:.4f}" max="1" '
                                   'style="width:100%;height:14px;margin-bottom:4px"></progress>')
    return (f'<div id="ttrv-status" data-kind="{kind}" style="border-left:4px solid {colors[kind]};'
            f'padding:6px 10px">{bar}<div style="white-space:pre-line">{html.escape(text)}</div></div>')


def progress_of(sess: Session, ev) -> tuple[str, float]:
    """Status line and overall fraction, counted in image prompts: eval before, steps, eval after."""
    n, c = len(sess.items), sess.start.config
    pool = len(sess.start.train_ids) if sess.start.mode == "all" else c["single_copies"]
    per_step = min(c["prompts_per_step"], pool)
    total = 2 * n + sess.start.total_steps * per_step
    if isinstance(ev, Progress):
        done = ev.done if ev.phase == "before" else n + len(sess.steps) * per_step + ev.done
        return f"Evaluating {ev.phase} training: {ev.done}/{ev.total} images", done / total
    m = ev.metrics
    return (f"Step {ev.step}/{ev.total_steps} · entropy {m['answers/entropy']:.2f} · "
            f"majority share {m['answers/majority_share']:.2f} · {m['time/step_s']:.1f} s/step",
            (n + ev.step * per_step) / total)


def histogram_figure(sess: Session, choice: str | None):
    item = None if choice in (None, "", FOLLOW) else choice
    snaps = plots.snapshots(sess.steps, item, sess.evals.get("before"), sess.evals.get("after"))
    return plots.histogram(snaps)


def figures(sess: Session, choice: str | None):
    b, a = sess.evals.get("before"), sess.evals.get("after")
    return histogram_figure(sess, choice), plots.entropy(sess.steps, b, a), plots.reward(sess.steps, b, a)


def thumbnail(item: data.Item, side: int = 56) -> str:
    im = item.image()
    im.thumbnail((side, side))
    buf = io.BytesIO()
    im.save(buf, format="PNG" if max(im.size) <= 64 else "JPEG")
    mime = "png" if max(im.size) <= 64 else "jpeg"
    return f'<img src="data:image/{mime};base64,{base64.b64encode(buf.getvalue()).decode()}" height="{side}">'


COLUMNS = {  # header -> width
    "image": "76px", "file": "150px", "adapted on": "80px", "question": "130px", "answer (evaluation only)": "100px",
    "before": "100px", "after": "100px", "changed": "95px", "majority share before": "100px",
    "majority share after": "100px", "correct before": "80px", "correct after": "80px"}
EVAL_ONLY = ("answer (evaluation only)", "correct before", "correct after")


def compare_table(sess: Session) -> dict:
    """Before/after per image (runs.results_table), with thumbnails and marks."""
    if not sess.evals:
        return gr.Dataframe(value=None, headers=list(COLUMNS), column_widths=list(COLUMNS.values()))
    rows = runs.results_table(sess.items, sess.evals.get("before"), sess.evals.get("after"))
    trained = set(sess.start.train_ids) if sess.start else set()
    labeled = any(r["reference"] is not None for r in rows)
    mark = {True: "✓", False: "✗", None: ""}
    table = []
    for it, r in zip(sess.items, rows):
        table.append([thumbnail(it), r["item"], "●" if r["item"] in trained else "", r["question"],
                      r["reference"] or "", answer(r["before_greedy"]), answer(r["after_greedy"]),
                      "● changed" if r["changed"] else "", r["before_share"], r["after_share"],
                      mark[r["before_correct"]], mark[r["after_correct"]]])
    heads = [h for h in COLUMNS if labeled or h not in EVAL_ONLY]
    keep = [i for i, h in enumerate(COLUMNS) if h in heads]
    return gr.Dataframe(value=[[row[i] for i in keep] for row in table], headers=heads,
                        column_widths=[COLUMNS[h] for h in heads],
                        datatype=["html"] + ["number" if h.startswith("majority") else "str" for h in heads[1:]])


def answer(a: str | None) -> str:
    """None: not evaluated (yet); an empty answer is an answer too."""
    return "" if a is None else a if a.strip() else "(empty)"


def accuracy_md(sess: Session) -> str:
    b, a = sess.evals.get("before"), sess.evals.get("after")
    if b is None:
        return ""
    bm, am = b.metrics, (a.metrics if a else {})

    def pair(key: str, name: str) -> str:
        if key not in bm:
            return ""
        if key not in am:
            return f"{name} {bm[key]:.3f} → …"
        return f"{name} **{bm[key]:.3f} → {am[key]:.3f}** ({am[key] - bm[key]:+.3f})"

    n = sess.evals.get("before").metrics.get("eval/items", 0)
    lines = []
    if "eval/greedy_acc" in bm:
        lines.append("**Accuracy** (answers column, evaluation only): " + " · ".join(filter(None, [
            pair("eval/greedy_acc", "greedy answer"), pair("eval/maj_acc", "majority of the votes"),
            pair("eval/single_acc", "single vote")])))
    else:
        lines.append("No answers given: accuracy is not available; the label-free measures are below.")
    lines.append("**Label-free**: " + " · ".join([pair("eval/majority_share", "majority share"),
                                                  pair("eval/entropy", "entropy")]) + f" · {int(n)} images")
    if a is not None:
        changed = sum(e.greedy != f.greedy for e, f in zip(b.items, a.items))
        lines.append(f"Greedy answer changed on **{changed}** of {len(a.items)} images.")
    return "\n\n".join(lines)


def downloads(run_dir: Path | None) -> list[str]:
    """results.csv/.json, the adapter as a zip, the run log (events.jsonl) and the config."""
    if run_dir is None or not run_dir.is_dir():
        return []
    if (run_dir / "adapter").is_dir():
        shutil.make_archive(str(run_dir / "adapter"), "zip", run_dir / "adapter")
    names = ("results.csv", "results.json", "adapter.zip", "events.jsonl", "config.json", "problems.txt",
             "error.log")
    return [str(run_dir / n) for n in names if (run_dir / n).is_file()]


# --------------------------------------------------------------------------- handlers

def preview(sess, source, example, uploads, folder, qmode, question, qfile, task, options,
            request: gr.Request = None):
    sess = Session.ensure(sess, request)
    ds, where = load_data(sess.root / "preview", source, example, uploads, folder, qmode, question, qfile,
                          task, options)
    ids = [it.id for it in ds.items]
    return (sess, describe(ds, where), gr.Dropdown(choices=ids, value=ids[0] if ids else None),
            gr.Dropdown(choices=[FOLLOW] + ids))


def run(sess, source, example, uploads, folder, qmode, question, qfile, task, options, model, precision,
        single, single_item, n_votes, n_train, temperature, max_steps, epochs, lr, lora_r, alpha, beta,
        reward, eval_votes, prompts_per_step, train_items, guard, checkpointing, hist_choice, max_pixels=0,
        request: gr.Request = None):
    """Stream a run: status, histogram, entropy, reward, compare, downloads after each event."""
    sess = Session.ensure(sess, request)
    out_dir = sess.new_run()
    sess.choice = hist_choice or FOLLOW
    skip = gr.skip()

    def view(status, figs=True, table=False, files=False, info=skip):
        """One update of every output; `skip` leaves a widget as it is."""
        h, e, r = figures(sess, sess.choice) if figs else (skip, skip, skip)
        return (sess, status, h, e, r, accuracy_md(sess) if table else skip,
                compare_table(sess) if table else skip, downloads(sess.run_dir) if files else skip, info)

    yield view(status_html("Reading the images …", 0.0), table=True, files=True)  # clear the last run

    try:
        cfg = TTRVConfig(model=(model or "").strip() or DEMO_MODEL, precision=precision, n_votes=int(n_votes),
                         n_train=int(n_train), temperature=float(temperature), max_steps=int(max_steps),
                         epochs=int(epochs), lr=float(lr), lora_r=int(lora_r), max_pixels=int(max_pixels or 0),
                         alpha=float(alpha), beta=float(beta), reward=reward, eval_votes=int(eval_votes),
                         prompts_per_step=int(prompts_per_step), train_items=int(train_items),
                         collapse_guard=bool(guard), gradient_checkpointing=checkpointing or "off")
    except (ValueError, TypeError) as e:
        yield view(status_html(f"Settings: {e}", kind="error"), figs=False)
        return
    ds, where = load_data(out_dir, source, example, uploads, folder, qmode, question, qfile, task, options)
    info = describe(ds, where)
    if not ds.items:
        yield view(status_html("No usable images: see the problems listed under the data.", kind="error"),
                   figs=False, info=info)
        return
    target = single_item if single else None
    if target is not None and target not in {it.id for it in ds.items}:
        yield view(status_html(f"Single-example mode: '{target}' is not among the images.", kind="error"),
                   figs=False, info=info)
        return
    refusal = public_refusal(cfg.model, cfg, len(ds.items), target) if PUBLIC else None
    if refusal:
        yield view(status_html(f"Refused: {refusal}.", kind="error"), figs=False, info=info)
        return
    sess.items = ds.items
    run_dir = runs.RunDir(out_dir / "out")
    sess.run_dir = run_dir.root
    run_dir.write_json("config.json", {"config": cfg.to_dict(), "source": where, "question": question,
                                       "task": task, "single": target})
    run_dir.write_problems(ds.problems)
    yield view(status_html(f"Loading model {cfg.model} …", 0.0), info=info)

    events = adapt(cfg, ds.items, target, run_dir, lambda: sess.stop)
    last_draw, end, sess.running = 0.0, None, True
    try:
        for ev in events:
            if isinstance(ev, RunStart):
                sess.start = ev
                what = "one image (single-example mode)" if ev.mode == "single" else f"{len(ev.train_ids)} images"
                yield view(status_html(f"Model loaded: {ev.total_steps} steps on {what}. "
                                       "Evaluating before training …", 0.0), figs=False)
            elif isinstance(ev, Progress):
                text, frac = progress_of(sess, ev)
                yield view(status_html(text, frac), figs=False)
            elif isinstance(ev, StepEvent):
                sess.steps.append(ev)
                text, frac = progress_of(sess, ev)
                draw = time.time() - last_draw >= FIGURE_EVERY_S or ev.step == ev.total_steps
                last_draw = time.time() if draw else last_draw
                yield view(status_html(text + (" · stopping after this step" if sess.stop else ""), frac),
                           figs=draw)
            elif isinstance(ev, EvalResult):
                sess.evals[ev.phase] = ev
                last_draw = time.time()
                yield view(status_html(f"Evaluated {ev.phase} training.", 0.5 if ev.phase == "before" else 1.0),
                           table=True)
            elif isinstance(ev, RunEnd):
                end = ev
        events.close()  # record() writes the adapter and results in its finally
        stopped = end is None or end.stopped
        msg = (f"Stopped after step {len(sess.steps)} of {sess.start.total_steps}; the results so far are below "
               "and in the downloads."
               if stopped else f"Done: {len(sess.steps)} steps in {end.seconds:.0f} s.")
        if end is not None and end.guard:  # the collapse guard ended training and rolled back
            msg += "\n" + end.guard[0].upper() + end.guard[1:] + "."
        yield view(status_html(msg, 1.0, "stopped" if stopped else "done"), table=True, files=True, info=info)
    except Exception as e:  # a clear message in the app, the traceback in the run folder
        events.close()
        (run_dir.root / "error.log").write_text(traceback.format_exc(), encoding="utf-8")
        msg = str(e) if isinstance(e, USER_ERRORS) else f"{type(e).__name__}: {e}"
        if is_oom(e) and not isinstance(e, TTRVError):  # outside the engine's explain_oom blocks
            msg = oom_message("running", cfg.n_votes, cfg.n_train, precision=cfg.precision,
                              checkpointing=cfg.gradient_checkpointing)
        done = f"\nThe results so far ({len(sess.steps)} step(s)) are below and in the downloads." \
            if sess.evals else ""
        gr.Warning(f"Run failed: {msg.splitlines()[0]}")
        yield view(status_html(f"Run failed: {msg}{done}\n(details: error.log in the downloads)", kind="error"),
                   table=bool(sess.evals), files=True, info=info)
    finally:
        sess.running = False
        events.close()
        run_dir.close()  # record() closes it too; not when the model failed to load


def stop(sess):
    if sess is None or not sess.running:
        return status_html("Nothing is running.", kind="info")
    sess.stop = True
    return status_html("Stopping after the current step; the after-evaluation still runs …", kind="stopped")


def redraw_histogram(sess, choice):
    sess = Session.ensure(sess)
    sess.choice = choice or FOLLOW
    return sess, histogram_figure(sess, sess.choice)


def model_note(model_id: str) -> str:
    notes = [note for mid, note in PRESETS.values() if mid == model_id and note]
    return f"<small>{html.escape(notes[0])}</small>" if notes else ""


def default_model() -> str:
    """The demo model unless a GPU and the hub (or a cached Qwen2.5-VL-3B) are available."""
    if not torch.cuda.is_available():
        return DEMO_MODEL
    real = "Qwen/Qwen2.5-VL-3B-Instruct"
    try:
        from huggingface_hub import try_to_load_from_cache
        if isinstance(try_to_load_from_cache(real, "config.json"), str):
            return real
    except Exception:
        pass
    if os.environ.get("HF_HUB_OFFLINE") in ("1", "true"):
        return DEMO_MODEL
    try:
        socket.create_connection(("huggingface.co", 443), timeout=1.5).close()
        return real
    except OSError:
        return DEMO_MODEL


# --------------------------------------------------------------------------- layout

def build() -> gr.Blocks:
    """The whole page. PUBLIC (read at call time) makes the model box a preset-only menu and caps
    the settings in the browser; run() enforces the same on the server."""
    cap = (lambda name: getattr(CAPS, name)) if PUBLIC else (lambda name: None)
    # delete_cache: gradio's copies of uploads and downloads go after SESSION_TTL_S, and all at exit
    with gr.Blocks(title="TTRV: test-time RL for vision-language models",
                   delete_cache=(3600, SESSION_TTL_S)) as demo:
        state = gr.State(None, time_to_live=SESSION_TTL_S, delete_callback=forget)
        gr.Markdown("# TTRV: adapt a vision-language model to your own unlabeled images\n"
                    "For each image the model answers N times; each answer is rewarded by how often the model "
                    "itself gave it, and GRPO steps on LoRA weights make the model more consistent. "
                    "No labels are used for training; an answers column, if you give one, is used for evaluation only.")
        with gr.Row():
            with gr.Column(scale=3):
                gr.Markdown("### 1. Images and questions")
                source = gr.Radio([EXAMPLE_SET, MY_IMAGES], value=EXAMPLE_SET, label="Images from")
                sets = example_sets()
                example = gr.Dropdown(sets, value=sets[0] if sets else None, label="Example set",
                                      allow_custom_value=True)
                with gr.Row():
                    uploads = gr.File(file_count="multiple", label="Images, or a .zip of a folder",
                                      file_types=["image", ".zip", ".csv", ".jsonl"], visible=False,
                                      elem_id="uploads")
                    folder = gr.File(file_count="directory", label="… or a whole folder", visible=False)
                qmode = gr.Radio([QUESTIONS_FILE, ONE_QUESTION], value=QUESTIONS_FILE, label="Questions")
                question = gr.Textbox(label="Question (for all images, or where the file has none)",
                                      placeholder="e.g. What is shown in the image?")
                qfile = gr.File(label="Questions file: CSV or JSONL with columns image, question, optional options "
                                      "(a|b|c) and answer; if empty, a questions.csv among the images is used",
                                file_types=[".csv", ".jsonl", ".json"])
                with gr.Row():
                    task = gr.Radio([("Open answer", "open"), ("Multiple choice", "choice"),
                                     ("Classification", "classify")], value="open", label="Task format")
                    options = gr.Textbox(label="Options / class names for all images, separated by |",
                                         placeholder="cat | dog | bird")
                data_info = gr.Markdown()
            with gr.Column(scale=2):
                gr.Markdown("### 2. Model and settings")
                model = gr.Dropdown([(k, v[0]) for k, v in PRESETS.items()], value=default_model(), label="Model",
                                    allow_custom_value=not PUBLIC, elem_id="model",
                                    info="preset models only on this public Space" if PUBLIC else
                                    "a preset, or type any Hugging Face model id or local folder")
                note = gr.Markdown(model_note(model.value))
                with gr.Row():
                    precision = gr.Radio(list(PRECISIONS), value="auto", label="Precision",
                                         info="auto = 4-bit NF4 on CUDA, fp32 on CPU")
                    checkpointing = gr.Radio(list(CHECKPOINTING), value="off", label="Gradient checkpointing",
                                             info="less GPU memory, slower steps: mlp recomputes the MLPs "
                                                  "(3B: 4.9 instead of 6.5 GiB), layers whole layers")
                with gr.Row():
                    single = gr.Checkbox(False, label="Single-example mode: adapt on one image, evaluate on all")
                    single_item = gr.Dropdown([], label="Image to adapt on", allow_custom_value=True)
                with gr.Accordion("Settings (the paper's defaults)" + (", capped on this public Space"
                                                                        if PUBLIC else ""), open=False):
                    with gr.Row():
                        n_votes = gr.Number(DEFAULTS.n_votes, precision=0, label="Votes N per image",
                                            maximum=cap("n_votes"))
                        n_train = gr.Number(DEFAULTS.n_train, precision=0, label="Trained answers G (≤ N)",
                                            maximum=cap("n_train"))
                        temperature = gr.Number(DEFAULTS.temperature, label="Temperature")
                    with gr.Row():
                        train_items = gr.Number(DEFAULTS.train_items, precision=0,
                                                label="Images adapted on (a random subset; 0 = all)")
                        max_steps = gr.Number(DEFAULTS.max_steps, precision=0, label="Steps (0 = by epochs)",
                                              maximum=cap("steps"))
                        epochs = gr.Number(DEFAULTS.epochs, precision=0, label="Epochs over the images")
                        prompts_per_step = gr.Number(DEFAULTS.prompts_per_step, precision=0, label="Images per step",
                                                     maximum=cap("prompts_per_step"))
                    with gr.Row():
                        lr = gr.Number(DEFAULTS.lr, label="Learning rate (LoRA)")
                        lora_r = gr.Number(DEFAULTS.lora_r, precision=0, label="LoRA rank (alpha = 2 × rank)",
                                           maximum=cap("lora_r"))
                        eval_votes = gr.Number(DEFAULTS.eval_votes, precision=0, label="Eval votes (0 = N)",
                                               maximum=cap("eval_votes"))
                    with gr.Row():
                        alpha = gr.Number(DEFAULTS.alpha, label="alpha: entropy weight")
                        beta = gr.Number(DEFAULTS.beta, label="beta: KL weight")
                        max_pixels = gr.Number(DEFAULTS.max_pixels, precision=0, label="Max pixels per image "
                                               "(0 = the model's default; lower it if memory runs out)")
                    reward = gr.Dropdown(list(REWARDS), value=DEFAULTS.reward, label="Reward", info=REWARD_HELP)
                    guard = gr.Checkbox(DEFAULTS.collapse_guard, label="Collapse guard", info=GUARD_HELP)
                with gr.Row():
                    run_btn = gr.Button("Run", variant="primary", elem_id="run")
                    stop_btn = gr.Button("Stop", variant="stop", elem_id="stop")
                status = gr.HTML(status_html("Ready: press Run."), elem_id="status")
                files = gr.File(label="Downloads: results (CSV, JSON), LoRA adapter, run log", file_count="multiple",
                                interactive=False, elem_id="downloads")

        gr.Markdown("### 3. Live")
        hist_choice = gr.Dropdown([FOLLOW], value=FOLLOW, label="Histogram of", allow_custom_value=True)
        with gr.Row():
            hist_plot = gr.Plot(label="Answer frequencies", elem_id="histogram")
            entropy_plot = gr.Plot(label="Entropy", elem_id="entropy")
        reward_plot = gr.Plot(label="Reward, majority share, accuracy", elem_id="reward")

        gr.Markdown("### 4. Before and after")
        accuracy = gr.Markdown(elem_id="accuracy")
        table = gr.Dataframe(headers=list(COLUMNS), column_widths=list(COLUMNS.values()), wrap=True, max_height=600,
                             label="Each image before and after", interactive=False, elem_id="compare")

        source.change(lambda s: (gr.Dropdown(visible=s == EXAMPLE_SET), gr.File(visible=s == MY_IMAGES),
                                 gr.File(visible=s == MY_IMAGES)), [source], [example, uploads, folder],
                      api_name=False, concurrency_limit=None, show_progress="hidden")
        qmode.change(lambda m: gr.File(visible=m == QUESTIONS_FILE), [qmode], [qfile], api_name=False,
                     concurrency_limit=None, show_progress="hidden")

        model.change(model_note, [model], [note], api_name=False, concurrency_limit=None, show_progress="hidden")

        data_inputs = [source, example, uploads, folder, qmode, question, qfile, task, options]
        preview_event = dict(fn=preview, inputs=[state] + data_inputs, concurrency_limit=None, show_progress="hidden",
                             outputs=[state, data_info, single_item, hist_choice])
        demo.load(**preview_event, api_name="preview")
        gr.on([c.change for c in (source, example, uploads, folder, qmode, qfile, task)] +
              [question.submit, options.submit], **preview_event, api_name=False)
        run_btn.click(run, [state] + data_inputs + [model, precision, single, single_item, n_votes, n_train,
                                                    temperature, max_steps, epochs, lr, lora_r, alpha, beta, reward,
                                                    eval_votes, prompts_per_step, train_items, guard,
                                                    checkpointing, hist_choice, max_pixels],
                      [state, status, hist_plot, entropy_plot, reward_plot, accuracy, table, files, data_info],
                      api_name="run", show_progress="hidden")
        stop_btn.click(stop, [state], [status], api_name="stop", concurrency_limit=None, show_progress="hidden")
        hist_choice.change(redraw_histogram, [state, hist_choice], [state, hist_plot], api_name="histogram",
                           concurrency_limit=None, show_progress="hidden")
        demo.unload(end_session)
    demo.queue(default_concurrency_limit=1)  # one job on the GPU at a time; the rest wait in line
    return demo


demo = build()

if __name__ == "__main__":
    demo.launch(max_file_size=MAX_FILE_SIZE)
