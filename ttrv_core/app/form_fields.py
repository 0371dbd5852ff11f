"""The app's form in plain Python: what its settings are called and capped at, the config its
values make, and the dataset its image and question fields describe. app.py lays the widgets
out; everything they mean is here, gradio-free, so it is tested without a browser.
"""
from __future__ import annotations

import inspect
from dataclasses import fields
from pathlib import Path
from typing import Sequence

from ttrv_core import demos, inputs
from ttrv_core.app import history, model_menu, sessions
from ttrv_core.config import TTRVConfig
from ttrv_core.inputs import dataset, tables
from ttrv_core.inputs.images import DICOM_EXTS, IMAGE_EXTS
from ttrv_core.inputs.questions import MB
from ttrv_core.inputs.uploads import MAX_TOTAL_MB
from ttrv_core.inputs.video import FRAMES, VIDEO_EXTS
from ttrv_core.problems import Problem

EXAMPLE_SET, MY_IMAGES, DATASET = "Bundled example set", "My images", "A dataset"
"""Where the images come from. DATASET: a Hugging Face dataset (inputs/tables.py), on one's own machine only."""
DATASET_LABEL = "Dataset: a save_to_disk folder, a parquet / jsonl / csv file, or a Hub id"
QFILE_LABEL = ("Questions file (optional): CSV or JSONL with columns image, question, optional options (a|b|c) and "
               "answer; a questions.csv among the images is used too")


def sources(public: bool) -> list[str]:
    """The choices of where the images come from: no dataset on a public Space (no server paths, no downloads)."""
    return [EXAMPLE_SET, MY_IMAGES] + ([] if public else [DATASET])
UPLOAD_TYPES = ["image", "video", *sorted(DICOM_EXTS | VIDEO_EXTS), ".zip", ".csv", ".jsonl"]
"""What the upload box takes: gradio's "image" and "video" go by MIME type, which DICOM (application/dicom)
and Matroska are not; the extensions cover them."""
SETTINGS = [name for name, s in TTRVConfig.settings().items() if s.label]
"""The form's settings, named as the config's fields, in the config's order: every field with a label."""
NUMBERS = {f.name: {"int": int, "float": float}[f.type] for f in fields(TTRVConfig)
           if f.name in SETTINGS and f.type in ("int", "float")}
"""The number fields, with their type."""
RUN_INPUTS = ["sess", "source", "example", "uploads", "folder", "question", "qfile", "task", "options", "model",
              "custom", "single", "single_item", "hist_choice", *SETTINGS, "rows", "dataset", "split"]
"""The Run button's inputs, in order: the API's parameter names (/run), one per setting of the form."""
MAX_UPLOAD_BYTES = MAX_TOTAL_MB * MB
"""The largest single upload (gradio's max_file_size); uploads.py refuses more unpacked anyway."""


DEFAULTS = {"rows": "all", "dataset": "", "split": "test"}
"""The API's optional parameters of /run: what a call that leaves them out gets."""


def takes(names: list[str], request_type: type):
    """A generator handler fn(values: dict, request) made one whose signature has a parameter per name,
    then `request` annotated `request_type`: gradio passes the inputs by position, inserts the request
    after them, and names the API's parameters from the signature. So the settings come from the
    config's declarations, and a new setting needs no edit in app.py."""
    def wrap(fn):
        def handler(*args, request=None):
            if len(args) > len(names):  # the request, after the inputs
                *args, request = args
            yield from fn(dict(zip(names, args)), request)
        P = inspect.Parameter
        handler.__signature__ = inspect.Signature(
            [P(n, P.POSITIONAL_OR_KEYWORD, default=DEFAULTS.get(n, P.empty)) for n in names]
            + [P("request", P.POSITIONAL_OR_KEYWORD, default=None, annotation=request_type)])
        handler.__annotations__ = {"request": request_type}
        handler.__doc__, handler.__name__ = fn.__doc__, fn.__name__
        return handler
    return wrap


def model_id(model: str | None, custom: str | None) -> str:
    """The menu's value, or the typed id when the menu says 'Other'."""
    return (custom or "").strip() if model == model_menu.OTHER else (model or "").strip()


def config(model: str, **settings) -> TTRVConfig:
    """The run's config from the form's values (raises ValueError with the config's reason). An empty
    number field is 0 (the setting's default where 0 stands for one).

    >>> config("m", n_votes=8, n_train=4, lr=0.01).n_train
    4
    """
    given = {k: NUMBERS[k](v or 0) if k in NUMBERS else v for k, v in settings.items() if k in SETTINGS}
    if "collapse_guard" in given:
        given["collapse_guard"] = bool(given["collapse_guard"])
    for name in [n for n in given if TTRVConfig.settings()[n].choices]:  # a choice left empty: the default
        if not given[name]:
            del given[name]
    return TTRVConfig(model=model, **given)


def widget(name: str, value, public: bool) -> tuple[str, dict]:
    """A setting's form field, as its declaration says (config.py): (gradio component, its arguments):
    a number (capped on a public Space), a choice, or a switch, each with its help."""
    s = TTRVConfig.settings()[name]
    if name in NUMBERS:
        return "Number", dict(value=value, label=s.label, info=s.help, min_width=140,
                              maximum=sessions.CAPS.get(name) if public else None,
                              precision=0 if NUMBERS[name] is int else None)
    if s.choices:
        return "Radio" if len(s.choices) <= 4 else "Dropdown", dict(choices=list(s.choices), value=value,
                                                                  label=s.label, info=s.help)
    return "Checkbox", dict(value=value, label=s.label, info=s.help)


def brought(model: str | None, source: str, sets: list[str]) -> tuple[str | None, str | None, list | None]:
    """What choosing a model brings to the form: (example set, task, settings' values), each None where
    it changes nothing. A demo brings its own set, task and settings, a preset the photos and the paper's
    settings (the set and task only while the images come from an example set); any other model nothing."""
    brings = model_menu.opens_on(model or "")
    if brings is None:
        return None, None, None
    example, task = brings if source == EXAMPLE_SET and brings[0] in sets else (None, None)
    return example, task, values(defaults(model))


def defaults(model: str) -> TTRVConfig:
    """The settings a model brings to the form: a demo's own, else the paper's."""
    return TTRVConfig().with_(**getattr(demos.by_model(model or ""), "settings", {}))


def values(cfg: TTRVConfig) -> list:
    """The form's values (SETTINGS order) that show this config."""
    return [getattr(cfg, name) for name in SETTINGS]


def example_sets(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def read(sess: sessions.Session, examples: Path, workdir: Path | None, source: str, example: str | None,
         files: Sequence[str], question: str | None, qfile: str | None, task: str, options: str | None,
         public: bool = False, frames: int = FRAMES, table: str | None = None, split: str | None = None
         ) -> inputs.Inputs:
    """The dataset the fields describe. workdir None: the preview (uploads copied once per set of files).
    frames: the frames a run reads from each video (TTRVConfig.video_frames): the check reads as many.
    table, split: source DATASET's name (a folder, a file or a Hub id) and split, read lazily."""
    opts = [o.strip() for o in (options or "").split("|") if o.strip()]
    if source == DATASET:
        return _table(sess, workdir, (table or "").strip(), (split or "").strip() or "test", question, task, opts,
                      public)
    if source == EXAMPLE_SET and example not in example_sets(examples):
        return inputs.Inputs(dataset.Dataset(problems=[Problem("example set", f"no example set named '{example}'")]),
                             "", "")
    if source != EXAMPLE_SET and not files:
        return inputs.Inputs(dataset.Dataset(problems=[Problem("upload", "no images yet: add images, a .zip of a "
                                                                      "folder, or a folder")]), "your uploads", "")
    if source == EXAMPLE_SET:  # with its own questions: a questions file given for one's images is not read
        got, qfile = inputs.collect(examples / example, sess.root, label=f"example set '{example}'"), None
    else:
        got = sess.collect_preview(files) if workdir is None else inputs.collect(list(files), workdir)
    inp = inputs.load(got, question, Path(qfile) if qfile else None, task, opts, frames)
    if public:
        sessions.cap_items(inp.dataset)
    return inp


GALLERY = 24
"""Images the preview shows before Run (the first ones)."""


def gallery(items: Sequence[dataset.Item]) -> list[tuple[str, str]]:
    """(file, caption) of the first GALLERY items a browser can show: files already on disk (a dataset's
    rows are not decoded for a preview), DICOM left out (the table shows its thumbnail after a run)."""
    shown = [(str(it.path), it.id) for it in items
             if it.path is not None and it.path.suffix.lower() not in DICOM_EXTS and it.path.is_file()]
    return shown[:GALLERY]


def note(model: str | None, custom: str | None, source: str, example: str | None) -> str:
    """Under the model menu: what to expect from the model, and a warning where it does not fit the images."""
    mid = model_id(model, custom)
    said = [mid and model_menu.about(mid), model_menu.warning(mid, source == MY_IMAGES, example)]
    return "\n\n".join(filter(None, said))


def previewed(sess: sessions.Session, ds: dataset.Dataset) -> list[dataset.Item]:
    """Note in the session what the form's images are now (for the plan line and stale results); its items."""
    sess.n_items, sess.inputs = len(ds.items), history.items_key(ds.items)
    sess.nothing = "" if ds.items else nothing_to_run(ds)
    return ds.items


def plan(sess: sessions.Session | None, cfg: TTRVConfig, single: str | None) -> str:
    """The plan line above Run: what Run will do, or why there is nothing to run."""
    if sess is not None and not sess.n_items and sess.nothing:
        return f"**Run:** nothing to run yet: {sess.nothing}. Fix it in section 1."
    return model_menu.plan(sess.n_items if sess else 0, cfg, single)


def not_run(ds: dataset.Dataset, target: str | None, refusal: str | None) -> str | None:
    """Why Run does not run (nothing to run, a single-example image that is not there, a public Space's
    refusal), or None."""
    if not ds.items:
        return f"Nothing to run: {nothing_to_run(ds)}. Fix it in section 1 (Images and questions)."
    if target and target not in {it.id for it in ds.items}:
        return f"Single-example mode: '{target}' is not among the images."
    return f"Refused: {refusal}." if refusal else None


def nothing_to_run(ds: dataset.Dataset) -> str:
    """Why there is nothing to run, naming the real cause: a problem of the whole set (the task needs
    options, a questions file without its column, no uploads, a dataset not found) before any one
    file's; only when every file failed, the files.

    >>> nothing_to_run(dataset.Dataset(problems=[Problem("a.png", "not an image"),
    ...                                          Problem("options", "task 'choice' needs options (none given)")]))
    "options: task 'choice' needs options (none given)"
    >>> nothing_to_run(dataset.Dataset(problems=[Problem("a.png", "not an image"), Problem("b.jpg", "truncated")]))
    'none of the 2 image files could be read (a.png: not an image); the list is under the images'
    """
    media = IMAGE_EXTS | VIDEO_EXTS | {".zip"}
    whole = [p for p in ds.problems if Path(p.file).suffix.lower() not in media]
    if whole:
        return f"{whole[0].file}: {whole[0].message}"
    if ds.problems:
        p = ds.problems[0]
        return (f"none of the {len(ds.problems)} image files could be read ({p.file}: {p.message}); "
                "the list is under the images")
    return "no images yet"


def _table(sess: sessions.Session, workdir: Path | None, name: str, split: str, question: str | None, task: str,
           options: list[str], public: bool) -> inputs.Inputs:
    """The rows of a dataset on this machine or the Hub, lazily (their images written under the run's
    folder, or the session's for the preview, when read). Not on a public Space: its visitors name no
    server path or download."""
    where = f"dataset '{name}' ({split})"
    refused = ("a public Space reads uploaded files only" if public else
               "" if name else "name a dataset: a save_to_disk folder, a parquet, jsonl or csv file, or a Hub id")
    if refused:
        return inputs.Inputs(dataset.Dataset(problems=[Problem("dataset", refused)]), where, "")
    try:
        ds = tables.load_table(name, (workdir or sess.root / "dataset"), split=split, question=question,
                               task=task, options=options)
    except (ValueError, OSError) as e:
        ds = dataset.Dataset(problems=[Problem(where, str(e))])
    return inputs.Inputs(ds, where, "the dataset's question column" if not question else "the question typed")
