"""The app's sessions: each browser session's folder and state, their clean-up, the downloads
it offers, and the caps of a public Space.

Each session keeps its files in one folder of this app process (`ttrv-app-<pid>-…` under the
temp dir, then a hash of gradio's session id). The folder goes when the tab closes, when the
session's state expires (SESSION_TTL_S), and when the process exits: at a normal exit (atexit)
and, in the app run as a script, on SIGTERM or SIGINT (clean_up_on_signals); folders of app
processes that have ended are swept when the next one starts (make_root).

A session shows one run (`shown`) and may have one under way (`running`): a new run replaces
the shown one only once its model has loaded and it has started, so a run that never starts
(bad settings, bad data, a model that does not load) leaves the last results and downloads in
place. Gradio-free; app.py holds it in a gr.State.
"""
from __future__ import annotations

import atexit
import functools
import hashlib
import json
import os
import shutil
import signal
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from ttrv_core import inputs
from ttrv_core.app.line import Line, Ticket
from ttrv_core.app.live_run import FIRST, LiveRun
from ttrv_core.config import TTRVConfig
from ttrv_core.inputs import dataset
from ttrv_core.problems import Problem
from ttrv_core.runs import hub, model_card

APP_DIR = Path(tempfile.gettempdir())
APP_PREFIX = "ttrv-app-"  # + pid: the session folders of one app process
SESSION_TTL_S = 6 * 3600
"""A session's files (and gradio's cached uploads) are deleted this long after last use."""
DOWNLOADS = ("results.csv", "results.json", "adapter.zip", "events.jsonl", "config.json", "problems.txt",
             "error.log")
ALL = "all_files.zip"
"""The download of all the others in one file, listed first: the adapter in it as a folder, adapter/."""
HOLDS = {"adapter.zip": "the LoRA adapter with its model card", "events.jsonl": "the run log",
         "config.json": "the settings", "problems.txt": "the input problems", "error.log": "the error's details"}
"""What each download other than the results is, in words (contents)."""

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


_ROOTS: list[Path] = []
"""The session roots this process made (make_root)."""


def make_root(parent: Path = APP_DIR) -> Path:
    """This process's folder of session folders (removed at exit, and on SIGTERM or SIGINT once
    clean_up_on_signals is set), after sweeping dead ones."""
    sweep_stale(parent)
    root = Path(tempfile.mkdtemp(prefix=f"{APP_PREFIX}{os.getpid()}-", dir=parent))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    _ROOTS.append(root)
    return root


EXIT_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def clean_up_on_signals(before: Callable[[], object] = lambda: None) -> None:
    """SIGTERM (a container stop, a Space restart) and SIGINT (Ctrl-C) end the process as a normal exit
    would, with the signal's conventional status: `before()` (the app: gradio's close, which deletes
    gradio's own copies of the uploads), the session roots removed, the standard streams flushed and the
    atexit hooks run, then the signal's default action (status -15 or -2; 143 or 130 in a shell).
    Without it SIGTERM ends the process at once, every upload left on disk. A handler set before, other
    than Python's SIGINT handler, is chained instead of the exit; a signal the process ignores stays
    ignored. The app calls it when run as a script (not on import: a test process keeps its own
    Ctrl-C), from the main thread, the only one that can set handlers."""
    owner = os.getpid()

    def on_signal(signum, frame, previous):
        chain = callable(previous) and previous is not signal.default_int_handler
        if os.getpid() == owner:            # not a forked child: its parent's folders are not its own
            try:
                before()
            except Exception:               # a close that fails must not keep the uploads on disk
                pass
            for root in _ROOTS:
                shutil.rmtree(root, ignore_errors=True)
            if not chain:
                sys.stdout.flush()
                sys.stderr.flush()
                atexit._run_exitfuncs()
        if chain:
            previous(signum, frame)
            return
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    for sig in EXIT_SIGNALS:
        previous = signal.getsignal(sig)
        if previous is not signal.SIG_IGN and previous is not None:   # None: set outside Python, left as is
            signal.signal(sig, functools.partial(on_signal, previous=previous))


def folder(root: Path, key: str | None) -> Path:
    """A session's folder, named by a hash of gradio's session id (which the client picks)."""
    return root / hashlib.sha256((key or os.urandom(8).hex()).encode()).hexdigest()[:16]


@dataclass
class Session:
    root: Path
    shown: LiveRun | None = None     # the run whose results are on the page
    running: LiveRun | None = None   # the run under way, shown or not yet (loading)
    ticket: Ticket | None = None     # its place in the line of runs (line.py), while waiting or running
    runs: int = 0
    choice: str = FIRST              # whose histogram is shown
    n_items: int = 0                 # images the inputs give now (the preview), for the plan line
    nothing: str = ""                # why they give none (form_fields.nothing_to_run), for the plan line
    inputs: tuple = ()               # what they are (history.items_key), to tell whether results are stale
    history: list = field(default_factory=list)   # the runs of this session (history.Entry), oldest first
    _preview: tuple | None = field(default=None, repr=False)   # (uploads key, inputs.Collected)

    def new_run_dir(self) -> Path:
        self.runs += 1
        self.root.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f"run-{self.runs}-", dir=self.root))  # fresh even if reused

    def collect_preview(self, files: Sequence[str]) -> inputs.Collected:
        """Uploads copied for the data preview, reused while they are the same files (a preview
        runs on every keystroke in the question)."""
        key = tuple((f, *_stat(f)) for f in files)
        if self._preview is None or self._preview[0] != key:
            self._preview = (key, inputs.collect(list(files), self.root / "preview"))
        return self._preview[1]

    def forget(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _stat(path: str) -> tuple[int, int]:
    try:
        st = os.stat(path)
        return st.st_size, st.st_mtime_ns
    except OSError:
        return -1, -1


def stop(sess: Session | None, line: Line) -> tuple[str, None, str]:
    """The Stop button: leave the line while waiting, else stop the run under way (LiveRun.request_stop);
    (words, no bar, kind) for the status line."""
    live, ticket = (sess.running, sess.ticket) if sess is not None else (None, None)
    if live is not None and ticket is not None and ticket.started is None:
        line.leave(ticket)  # the Run handler sees it gone and says so too
        return "You left the line; nothing was run.", None, "stopped"
    return (live.request_stop(), None, "stopped") if live else ("Nothing is running.", None, "info")


# --------------------------------------------------------------------------- downloads

def downloads(run_dir: Path | None) -> list[str]:
    """The run folder's files worth downloading, all of them in one zip first (ALL), with the adapter (and
    its model card) as a zip whose config names the base model as model_card.model_name does, not by a
    path on this machine. The zips are made again when a file in them is newer."""
    if run_dir is None or not run_dir.is_dir():
        return []
    weights = {p.name: p for p in sorted((run_dir / "adapter").glob("*")) if p.is_file()}
    if weights:
        _zip(run_dir / "adapter.zip", weights)
    files = [run_dir / n for n in DOWNLOADS if (run_dir / n).is_file() and (run_dir / n).stat().st_size]
    if not files:
        return []
    inside = {p.name: p for p in files if p.name != "adapter.zip"}
    _zip(run_dir / ALL, {**inside, **{f"adapter/{name}": p for name, p in weights.items()}})
    return [str(run_dir / ALL)] + [str(p) for p in files]


def _zip(out: Path, files: dict[str, Path]) -> None:
    """Write `files` (name in the zip -> file) to `out` unless it is newer than each; an adapter's
    config with its base model named by model_card.model_name."""
    if out.is_file() and out.stat().st_mtime_ns >= max(p.stat().st_mtime_ns for p in files.values()):
        return
    tmp = out.with_name(out.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        for name, p in files.items():
            if p.name == "adapter_config.json":
                cfg = json.loads(p.read_text(encoding="utf-8"))
                cfg["base_model_name_or_path"] = model_card.model_name(str(cfg.get("base_model_name_or_path", "")))
                z.writestr(name, json.dumps(cfg, indent=2))
            else:
                z.write(p, name)
    os.replace(tmp, out)


def contents(run_dir: Path | None) -> str:
    """What the downloads hold, in words, and why there is no adapter when there is none, so that
    the page promises nothing that is not there; "" when there is nothing to download."""
    names = [Path(p).name for p in downloads(run_dir)]
    if not names:
        return ""
    results = [kind for n, kind in (("results.csv", "CSV"), ("results.json", "JSON")) if n in names]
    held = ", ".join([f"results ({', '.join(results)})"] * bool(results) + [HOLDS[n] for n in names if n in HOLDS])
    if "adapter.zip" in names:
        return f"all in one zip, or one by one: {held}"
    why = ("the run failed before training" if "error.log" in names else
           "the run stopped before training" if _stopped(run_dir / "events.jsonl") else "nothing was trained")
    return f"all in one zip, or one by one: {held}; no adapter: {why}"


def _stopped(log: Path) -> bool:
    """Whether the run log ends with a stop (a run_end line, RunEnd, stopped)."""
    try:
        with open(log, encoding="utf-8") as f:
            ends = [json.loads(line) for line in f if '"run_end"' in line]
    except (OSError, ValueError):
        return False
    return any(e.get("type") == "run_end" and e.get("stopped") for e in ends[-1:])


# --------------------------------------------------------------------------- a public Space

CAPS = {name: s.cap for name, s in TTRVConfig.settings().items() if s.cap is not None}
"""Upper bounds on a public Space, each declared by its setting (config.py), so that one run cannot hog
the shared GPU; the max_steps cap bounds a run's steps however they are set (epochs x batches, or
max_steps). At the caps a 3B model in 4-bit on an H100 takes about 12 x 8 x 1.4 + 2 x 48 x 0.5 = ~230 s
plus loading (1.4 s per image in a step; ~0.5 s to evaluate an image, its one sampling of 33 rows;
bench/RESULTS.md), inside the 600 s GPU slot, with room for slower cards. The paper's main setting
(20 images, 6 steps) is well inside."""
MAX_ITEMS = 48
"""Images a public Space evaluates; beyond it only the first 48 are used."""


def public_refusal(model: str, cfg: TTRVConfig, n_items: int, single: str | None, allowed: set[str]) -> str | None:
    """Why a public Space refuses this run (a model not in `allowed`, a setting over CAPS), or None."""
    if model not in allowed:
        return (f"this public Space only runs its preset models; '{model}' is not one of them "
                "(run the app on your own machine for any model)")
    for name, cap in CAPS.items():
        if name != "max_steps" and getattr(cfg, name) > cap:
            return f"this public Space allows {name} up to {cap}, got {getattr(cfg, name)}"
    pool = cfg.single_copies if single else cfg.train_items if 0 < cfg.train_items < n_items else n_items
    if cfg.total_steps(pool) > (most := CAPS["max_steps"]):  # pool: the images engine.adapt adapts on
        return (f"this public Space allows {most} steps per run, these settings make "
                f"{cfg.total_steps(pool)}: set Steps or fewer epochs")
    return None


def cap_items(ds: dataset.Dataset) -> dataset.Dataset:
    """A public Space uses the first MAX_ITEMS images only, and says so."""
    if len(ds.items) > MAX_ITEMS:
        ds.problems.append(Problem(f"images {MAX_ITEMS + 1}-{len(ds.items)}",
                                   f"this public Space uses the first {MAX_ITEMS} images only"))
        ds.items = ds.items[:MAX_ITEMS]
    return ds


# --------------------------------------------------------------------------- sharing the adapter

def push(live: LiveRun | None, repo_id: str | None, token: str | None, public: bool) -> str:
    """The Push button: the shown run's adapter and model card to the visitor's Hub repo (runs/hub.py),
    in words for the page. On a public Space only with the visitor's own sign-in token: without it
    huggingface_hub would fall back on the Space's token, which is the operator's."""
    if live is None or live.run_dir is None or not (live.run_dir / "adapter").is_dir():
        return "Nothing to push yet: run TTRV first (a run that trained at least one step)."
    if not (repo_id or "").strip():
        return "Name the Hub repo to push to, e.g. your-name/ttrv-adapter."
    if public and not token:
        return "Sign in with your Hugging Face account first (the button beside): the adapter goes to your repo."
    try:
        url = hub.push_adapter(live.run_dir, repo_id.strip(), token=token)
    except hub.PushError as e:  # the page names no server folder: the adapter is in the downloads
        return f"Not pushed: {e.reason}; the adapter is still in the downloads."
    return f"Pushed to {url}"
