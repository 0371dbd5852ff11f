"""TTRV in the browser: upload images, adapt a vision-language model on them live, compare.

    python app.py          # http://127.0.0.1:7860

Widgets <-> ttrv_core's app layer, nothing else (what each field and view means lives there). A run
replaces the page's results only once it has started: bad settings, bad data or a model that does not
load leave the last results and downloads in place. Runs go one at a time, in the app's own line (app/line.py),
which tells each waiting visitor its place. Environment: TTRV_PUBLIC, TTRV_TRUST_REMOTE_CODE (README).
"""
from __future__ import annotations

import os
import shutil
import traceback
from pathlib import Path

import gradio as gr

from ttrv_core import inputs
from ttrv_core.app import (answer_plots, compare, form_fields, history, image_table, kept_runs, model_menu,
                           pick_hint, plots, sessions)
from ttrv_core.app.background import background
from ttrv_core.app.form_fields import DATASET, EXAMPLE_SET, MY_IMAGES
from ttrv_core.app.line import Line
from ttrv_core.app.live_run import FIRST, LiveRun, refusal, status_html
from ttrv_core.config import TTRVConfig
from ttrv_core.model import kept_base, loading
from ttrv_core.runs import model_card

try:  # Hugging Face Spaces (ZeroGPU): the GPU is attached only inside decorated calls; elsewhere a no-op
    import spaces
    gpu = spaces.GPU(duration=600)  # seconds a run may hold the GPU; ZeroGPU quotas may cap it lower
except ImportError:
    gpu = lambda fn: fn  # noqa: E731

EXAMPLES = Path(__file__).resolve().parent / "assets" / "examples"
PUBLIC = os.environ.get("TTRV_PUBLIC", "").strip() == "1"
ON_SPACE = bool(os.environ.get("SPACE_ID"))  # a Hugging Face Space: visitors can sign in with their account
MAX_FILE_SIZE = form_fields.MAX_UPLOAD_BYTES
SESSIONS = sessions.make_root()
DEMO = model_menu.default_demo()
OPENS = model_menu.default_model()  # probed once: a GPU with the Hub opens on InternVL3-2B and the photos
START = model_menu.opens_on(OPENS)   # (example set, task) the page opens on
DEFAULTS = form_fields.defaults(OPENS)
loading.import_peft()  # at startup, not in the first run's wait (the engine does not import it)
LINE = Line()  # the runs of all visitors, one at a time, in the order Run was pressed
KEPT = kept_base.KeptBase()  # the base model of the last run, loaded again only for another model, precision or device
KEEP = gr.skip()
CSS = (Path(__file__).resolve().parent / "assets" / "page.css").read_text(encoding="utf-8")
DOWNLOADS = "Downloads, when a run ends: its results, its adapter if it trained, the run log"
TO_LIVE = "() => { document.getElementById('live')?.scrollIntoView({behavior: 'smooth', block: 'start'}); return []; }"


def ensure(sess, request) -> sessions.Session:
    return sess or sessions.Session(sessions.folder(SESSIONS, getattr(request, "session_hash", None)))


@gpu
def gpu_job(cfg: TTRVConfig, items: list, single: str | None, out: Path, meta: dict, problems: list, should_stop):
    """A run's GPU-held part (spaces.GPU on a Space): kept_runs.run on the app's kept base model (KEPT: the
    model loaded once, the last complete before-evaluation used again while nothing it depends on changed)."""
    yield from kept_runs.run(cfg, items, single, out, meta, problems, should_stop, KEPT,
                             trust_remote_code=loading.remote_code_allowed() and not PUBLIC)


# --------------------------------------------------------------------------- handlers

def preview(sess, source, example, uploads, folder, question, qfile, task, options, dataset, split,
            request: gr.Request = None):
    sess = ensure(sess, request)
    inp = form_fields.read(sess, EXAMPLES, None, source, example, [*(uploads or []), *(folder or [])], question,
                           qfile, task, options, PUBLIC, table=dataset, split=split)
    shown = [key[0] for key in sess.inputs]  # the images the gallery has: not sent again per keystroke
    items = form_fields.previewed(sess, inp.dataset)
    ids = [it.id for it in items]
    return (sess, inputs.describe(inp), gr.Dropdown(choices=ids, value=ids[0] if ids else None),
            gr.Dropdown(choices=[FIRST] + ids),
            gr.Gallery(form_fields.gallery(items), visible=bool(items)) if ids != shown else KEEP)


def plan(v: dict) -> tuple[str, str, str]:
    """The plan line above Run (or what is wrong with the settings or the images), the line over the
    results when they no longer come from what the form says, and which image single-example mode suggests."""
    sess, mid = v["state"], form_fields.model_id(v.pop("model"), v.pop("custom"))
    try:
        cfg = form_fields.config(mid or model_menu.default_model(), **v)
    except (ValueError, TypeError) as e:
        return f"⚠️ **Settings:** {e}", KEEP, KEEP
    return (form_fields.plan(sess, cfg, v["single_item"] if v["single"] else None), history.stale(sess, cfg),
            gr.Markdown(pick_hint.for_page(sess and sess.shown, history.shows_these_images(sess)), visible=v["single"]))


def pick_model(model, source):
    """A demo brings its example set, task and settings, a preset the photos and the paper's settings;
    another model changes nothing else."""
    example, task, values = form_fields.brought(model, source, form_fields.example_sets(EXAMPLES))
    return ([gr.Textbox(visible=model == model_menu.OTHER), example or KEEP, task or KEEP]
            + (values or [KEEP] * len(form_fields.SETTINGS)))


class Outputs:
    """The Run handler's outputs (run_outputs, in that order); what is not given stays as it is."""
    def __init__(self, sess):
        self.sess = sess

    def only(self, status: str, info=KEEP):  # the status line (and the data summary) change, nothing else
        return self.sess, status, *[KEEP] * 6, info, *[KEEP] * 3

    def refuse(self, text: str, info=KEEP):
        return self.only(status_html(refusal(text, self.sess.shown), kind="error"), info)

    def view(self, live: LiveRun, text: str, frac=None, kind="info", figures="all", table=False, files=KEEP,
             info=KEEP):
        h, e, r = live.figures(self.sess.choice) if figures else (KEEP, KEEP, KEEP)
        e, r = (KEEP, KEEP) if figures == "votes" else (e, r)  # during an evaluation only the votes move
        summ, frame, note, shares, confusion = compare.results(live) if table else [KEEP] * 5
        if files is not KEEP:  # at the start: empty until the end; at the end: what the run left, said as it is
            got = sessions.downloads(live.run_dir) if files is True else []
            files = gr.File(got, label=f"Downloads: {sessions.contents(live.run_dir)}" if got else DOWNLOADS)
        return (self.sess, status_html(text, frac, kind), h, e, r, summ, frame, files, info, note, shares, confusion)


@form_fields.takes(form_fields.RUN_INPUTS, gr.Request)
def on_run(given: dict, request: gr.Request = None):
    """The Run button's handler (API /run): stream a run: status, plots, before/after (the table shows
    `rows`: image_table.SHOW), downloads, then the answer shares and their warning, the confusion heatmap.
    Nothing on the page changes until it starts."""
    out = Outputs(sess := ensure(given["sess"], request))
    source, example, uploads, folder, question, qfile, task, options, model, custom, single, single_item, \
        hist_choice, rows, dataset, split = (given[k] for k in form_fields.RUN_INPUTS
                                             if k not in form_fields.SETTINGS and k != "sess")
    if model == model_menu.OTHER and not (custom or "").strip():
        yield out.refuse("Model: type a Hugging Face model id or a local folder, or pick a model from the menu.")
        return
    try:  # everything is checked before anything on the page changes
        cfg = form_fields.config(form_fields.model_id(model, custom) or model_menu.default_model(),
                          **{k: given[k] for k in form_fields.SETTINGS if k in given})
    except (ValueError, TypeError) as e:
        yield out.refuse(f"Settings: {e}.")
        return
    work = sess.new_run_dir()
    inp = form_fields.read(sess, EXAMPLES, work, source, example, [*(uploads or []), *(folder or [])], question,
                           qfile, task, options, PUBLIC, cfg.video_frames, table=dataset, split=split)
    ds, info, target = inp.dataset, inputs.describe(inp), single_item if single else None
    refusal = PUBLIC and sessions.public_refusal(cfg.model, cfg, len(ds.items), target, model_menu.allowed())
    if why := form_fields.not_run(ds, target, refusal):
        yield out.refuse(why, info)
        return
    live = sess.running = LiveRun(ds.items, work / "out", cfg.model, rows=rows or "all")
    ticket = sess.ticket = LINE.join()
    try:
        for words in LINE.waits(ticket):  # others ahead: where this visitor stands, about every second
            yield out.only(status_html(words), info)
        if ticket.gone:
            yield out.refuse("You left the line.", info)
            return
        ticket.left_s = live.left_s
        yield from run_live(out, live, cfg, ds, inp, info, target, hist_choice, question, task)
    finally:
        LINE.leave(ticket)
        sess.running = None


def run_live(out: Outputs, live, cfg, ds, inp, info, target, hist_choice, question, task):
    """A run whose turn has come: load the model, evaluate, train, evaluate, streamed to the page."""
    sess = out.sess
    sess.choice = hist_choice or FIRST
    meta = {"config": cfg.to_dict(), "model": model_card.model_name(cfg.model), "source": inp.where,
            "questions": inp.questions, "question": question, "task": task, "single": target}
    yield out.only(status_html(*live.status()), info)
    events = gpu_job(cfg, ds.items, target, live.run_dir, meta, ds.problems, lambda: len(live.stops))
    try:
        for batch in background(events, abandon=lambda: live.stops.extend(["closed"] * 3)):
            redraw = live.take(batch)
            if live.start is None:  # loading: the page still shows the last run
                yield out.only(status_html(*live.status()))
                continue
            if redraw.started:  # the run has started: it replaces the last one (results, downloads) on the page
                sess.shown = live
                sess.history.append(history.Entry.of(len(sess.history) + 1, cfg, inp.where, live))
            yield out.view(live, *live.status(), figures=redraw.figures, table=redraw.table,
                       files=[] if redraw.started else KEEP)
        yield out.view(live, *live.status(), table=True, files=True, info=info)
    except Exception as e:  # a clear message on the page, the traceback in the run folder (or the server log)
        msg = live.fail(e, cfg)
        gr.Warning(f"Run failed: {msg.splitlines()[0]}")
        if live.start is None:  # never started (the model did not load): the page keeps the last run
            traceback.print_exc()
            yield out.refuse(f"Run failed: {msg}", info)
            return
        (live.run_dir / "error.log").write_text(traceback.format_exc(), encoding="utf-8")
        live.error += "\n(details: error.log in the downloads)"
        yield out.view(live, *live.status(), table=bool(live.evals), files=True, info=info)


def show_rows(sess, rows):
    """The table's filter: the rows of one kind of change, or all; a run under way keeps to it too."""
    for live in (sess.shown, sess.running) if sess is not None else ():
        if live is not None:
            live.rows = rows or "all"
    return compare.rows(sess.shown) if sess is not None and sess.shown is not None and sess.shown.evals else gr.skip()


def stop(sess):
    return status_html(*sessions.stop(sess, LINE))


def push(sess, repo):  # off a Space: this machine's Hub login (an OAuth parameter would demand it at start)
    return sessions.push(sess and sess.shown, repo, None, PUBLIC)


def push_signed_in(sess, repo, oauth_token: gr.OAuthToken | None = None):  # on a Space: the visitor's sign-in
    return sessions.push(sess and sess.shown, repo, oauth_token.token if oauth_token else None, PUBLIC)


def redraw_histogram(sess, choice):
    sess = ensure(sess, None)
    sess.choice = choice or FIRST
    return sess, (sess.shown or LiveRun([])).figures(sess.choice)[0]


def end_session(request: gr.Request) -> None:
    """The tab closed: its files go now (the state itself lingers an hour in gradio)."""
    shutil.rmtree(sessions.folder(SESSIONS, request.session_hash), ignore_errors=True)


# --------------------------------------------------------------------------- layout

def build() -> gr.Blocks:
    """The page. PUBLIC (read at call time): the menu's models only, settings capped (on_run() checks both too)."""
    with gr.Blocks(title="TTRV: test-time RL for vision-language models",
                   delete_cache=(3600, sessions.SESSION_TTL_S)) as demo:  # gradio's copies of uploads go too
        state = gr.State(None, time_to_live=sessions.SESSION_TTL_S, delete_callback=lambda s: s and s.forget())
        gr.HTML(f"<style>{CSS}</style>", padding=False, container=False, elem_id="page-style")
        gr.Markdown(model_menu.INTRO)
        with gr.Row():
            with gr.Column(scale=3, min_width=320):
                gr.Markdown("### 1. Images and questions")
                source = gr.Radio(form_fields.sources(PUBLIC), value=EXAMPLE_SET, label="Images from")
                sets = form_fields.example_sets(EXAMPLES)
                example = gr.Dropdown(sets, value=START[0] if START and START[0] in sets else
                                      sets[0] if sets else None, label="Example set")
                uploads = gr.File(file_count="multiple", label="Images (DICOM too), or a .zip of a folder",
                                  visible=False, file_types=form_fields.UPLOAD_TYPES, elem_id="uploads")
                folder = gr.File(file_count="directory", label="… or a whole folder", visible=False)
                with gr.Row(visible=False) as table_row:   # read when Enter is pressed or the field is left
                    dataset = gr.Textbox("", label=form_fields.DATASET_LABEL, placeholder="lmms-lab/ai2d", scale=3)
                    split = gr.Textbox("test", label="Split", elem_id="split", min_width=100)
                question = gr.Textbox(label="Question for all images (a questions file's rows take their own)",
                                      placeholder="e.g. What is shown in the image?", elem_id="question")
                qfile = gr.File(label=form_fields.QFILE_LABEL, file_types=[".csv", ".jsonl", ".json"], visible=False)
                with gr.Row():
                    task = gr.Radio([("Open answer", "open"), ("Multiple choice", "choice"),
                                     ("Classification", "classify")], value=START[1] if START else "open",
                                    label="Task format")
                    options = gr.Textbox(label="Options / class names for all images, separated by |",
                                         placeholder="cat | dog | bird")
                data_info = gr.Markdown(elem_id="data-info")
                gallery = gr.Gallery(label="The images (the first 24)", columns=8, height=200, elem_id="gallery",
                                     allow_preview=True, visible=False)
            with gr.Column(scale=2, min_width=320):
                gr.Markdown("### 2. Model and settings")
                model = gr.Dropdown(model_menu.choices(PUBLIC), value=OPENS, label="Model",
                                    elem_id="model")
                custom = gr.Textbox(label="Hugging Face model id or local folder", visible=False, elem_id="custom")
                about = gr.Markdown(elem_id="about")
                with gr.Row():
                    single = gr.Checkbox(False, label="Single-example mode: adapt on one image, evaluate on all")
                    single_item = gr.Dropdown([], label="Image to adapt on", allow_custom_value=True)
                hint = gr.Markdown(elem_id="pick-hint", visible=False)
                with gr.Accordion("Settings (the paper's defaults; a demo brings its own)" + (", capped on this Space"
                                                                        if PUBLIC else ""), open=False):
                    w = {name: getattr(gr, kind)(**kw) for name in form_fields.SETTINGS  # number, choice or switch
                         for kind, kw in [form_fields.widget(name, getattr(DEFAULTS, name), PUBLIC)]}
                    reset = gr.Button("Reset to the defaults (the chosen demo's own)", size="sm", elem_id="reset")
                plan_md = gr.Markdown(elem_id="plan")
                run_btn = gr.Button("Run", variant="primary", elem_id="run")
        with gr.Column(elem_id="live"):
            gr.Markdown("### 3. Live")
            with gr.Row(elem_id="runbar", equal_height=True):  # in sight while a run goes (CSS: sticky)
                status = gr.HTML(status_html("Ready: press Run."), elem_id="status", scale=5, min_width=200)
                stop_btn = gr.Button("Stop", variant="stop", elem_id="stop", scale=0, min_width=80)
            hist_choice = gr.Dropdown([FIRST], value=FIRST, label="Histogram of", allow_custom_value=True)
            with gr.Row():  # side by side where both fit 400 px, stacked on a phone; drawn at once, so
                with gr.Column(min_width=400):  # that plotly is loaded before the first votes arrive
                    hist_plot = gr.Plot(plots.histogram([], "Votes", waiting="press Run"), label="Votes on one image",
                                        elem_id="histogram", show_label=False)   # the figures have titles
                with gr.Column(min_width=400):
                    entropy_plot = gr.Plot(plots.entropy([], waiting="press Run"), elem_id="entropy", show_label=False)
            reward_plot = gr.Plot(plots.reward([], waiting="press Run"), elem_id="reward", show_label=False)
            gr.Markdown("### 4. Before and after")
            stale = gr.Markdown(elem_id="stale")
            summary = gr.Markdown(elem_id="accuracy")
            with gr.Column(elem_id="answers"):
                amplified = gr.Markdown(elem_id="amplified")
                with gr.Row():  # as the live plots: side by side where both fit, stacked on a phone
                    with gr.Column(min_width=400):
                        shares_plot = gr.Plot(answer_plots.shares([], None, None, waiting="press Run"),
                                              elem_id="shares", show_label=False)
                    with gr.Column(min_width=400):
                        confusion_plot = gr.Plot(answer_plots.confusion([], None, None), elem_id="confusion",
                                                 show_label=False)
            rows = gr.Radio(list(image_table.SHOW), value="all", label="Show the images whose greedy reply changed",
                            elem_id="rows")
            table = gr.HTML(image_table.table_html([], None, None), elem_id="compare")
            files = gr.File(label=DOWNLOADS, file_count="multiple", interactive=False, elem_id="downloads")
            with gr.Row():  # the adapter to one's own Hub repo; on a Space after signing in (only there)
                gr.LoginButton(min_width=160) if ON_SPACE else None
                repo = gr.Textbox(placeholder="your-name/ttrv-adapter", show_label=False, elem_id="repo", scale=2)
                push_btn = gr.Button("Push the adapter to the Hub", elem_id="push")
            pushed = gr.Markdown(elem_id="pushed")
            runs = gr.Markdown(elem_id="history")

        light = dict(api_name=False, concurrency_limit=None, show_progress="hidden")  # never queue behind a run
        settings = [w[n] for n in form_fields.SETTINGS]
        source.change(lambda s: (gr.Dropdown(visible=s == EXAMPLE_SET), gr.File(visible=s == MY_IMAGES),
                                 gr.File(visible=s == MY_IMAGES), gr.File(visible=s == MY_IMAGES),
                                 gr.Row(visible=s == DATASET)), [source], [example, uploads, folder, qfile, table_row],
                      **light)
        model.change(pick_model, [model, source], [custom, example, task, *settings], **light)
        gr.on([demo.load, model.change, custom.change, source.change, example.change], form_fields.note,
              [model, custom, source, example], [about], **light)
        data_inputs = [source, example, uploads, folder, question, qfile, task, options, dataset, split]
        named = {state: "state", model: "model", custom: "custom", single: "single", single_item: "single_item"}
        named |= {c: n for n, c in w.items()}
        show_plan = dict(fn=lambda v: plan({named[c]: x for c, x in v.items()}), inputs=set(named),
                         outputs=[plan_md, stale, hint], **light)
        show_data = dict(fn=preview, inputs=[state] + data_inputs,
                         outputs=[state, data_info, single_item, hist_choice, gallery])
        demo.load(**show_data, api_name="preview", concurrency_limit=None, show_progress="hidden").then(**show_plan)
        typed = [dataset.submit, dataset.blur, split.submit, split.blur]   # a Hub id is not read per keystroke
        gr.on([c.change for c in data_inputs[:-2]] + typed, **show_data, **light).then(**show_plan)
        gr.on([c.change for c in (model, custom, single, single_item, *settings)], **show_plan)
        run_inputs = [state, *data_inputs[:-2], model, custom, single, single_item, hist_choice, *settings, rows, dataset,
                      split]  # form_fields.RUN_INPUTS
        run_outputs = [state, status, hist_plot, entropy_plot, reward_plot, summary, table, files, data_info, amplified,
                       shares_plot, confusion_plot]
        gr.on([run_btn.click, question.submit], lambda: gr.Button(interactive=False), None, [run_btn], js=TO_LIVE,
              queue=False, **light).then(   # Run, or Enter in the question
            on_run, run_inputs, run_outputs, api_name="run", show_progress="hidden", concurrency_limit=None).then(
            lambda: gr.Button(interactive=True), None, [run_btn], queue=False, **light).then(
            lambda sess: history.table(sess.history) if sess else "", [state], [runs], **light).then(**show_plan)
        reset.click(lambda m: form_fields.values(form_fields.defaults(m)), [model], settings, **light)
        stop_btn.click(stop, [state], [status], api_name="stop", concurrency_limit=None, show_progress="hidden")
        push_btn.click(push_signed_in if ON_SPACE else push, [state, repo], [pushed], api_name="push")
        rows.change(show_rows, [state, rows], [table], api_name="rows", concurrency_limit=None, show_progress="hidden")
        hist_choice.change(redraw_histogram, [state, hist_choice], [state, hist_plot], api_name="histogram",
                           concurrency_limit=None, show_progress="hidden")
        demo.unload(end_session)
    demo.queue(default_concurrency_limit=1)  # runs keep to LINE; the Hub push and the like one at a time
    return demo


demo = build()

if __name__ == "__main__":
    sessions.clean_up_on_signals(lambda: demo.close(verbose=False))  # SIGTERM: the uploads go, as at Ctrl-C
    demo.launch(max_file_size=MAX_FILE_SIZE, max_threads=100)  # a visitor waiting in LINE holds a thread
