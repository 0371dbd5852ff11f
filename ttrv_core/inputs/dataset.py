"""The dataset: unlabeled items from a folder of images (and videos: video.py) plus questions.

Questions come from one question for every image, or a questions file:
CSV (header row; ',', ';' or tab, read from the header or Excel's 'sep=' line) or JSONL, with columns
    image     path relative to the folder (required; also: file, filename, path)
    question  the question (required unless one question is given for all; also: prompt)
    options   optional; CSV: separated by '|', JSONL: a list (also: choices)
    answer    optional; used for evaluation only, never for rewards (also: label)
An image may have several rows (several questions): ids are then 'a.png', 'a.png#2', ...

Bad input never stops the run: each bad file or row becomes a `Problem`
naming the file and what is wrong, and the good items still run. Images are
read by ttrv_core.inputs.images (formats, sizes and modes); uploads and zips are
copied into the folder by ttrv_core.inputs.uploads; here:
  - hidden and system files (.DS_Store, ._foo.png, __MACOSX/, Thumbs.db) are skipped silently;
  - questions files are decoded as text only (UTF-8, UTF-16 with a BOM, else
    Windows-1252 with a warning), at most MAX_FILE_MB each; nothing is ever executed or
    unpickled (questions.py reads them into rows; here the rows become items).
"""
from __future__ import annotations

import os
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable

from PIL import Image

from ttrv_core.inputs.images import IMAGE_EXTS, UNSUPPORTED_EXTS, check_image, load_image
from ttrv_core.inputs.questions import EXPECTED, cell_options, cell_text, read_rows
from ttrv_core.inputs.video import FRAMES, VIDEO_EXTS, Video, check_video, is_video, load_video
from ttrv_core.problems import Problem
from ttrv_core.tasks.answers import canonical_reference
from ttrv_core.tasks.prompts import LETTERS, TASKS, Task, build_prompt

QUESTION_EXTS = (".csv", ".jsonl")
MAX_QUESTION_CHARS = 2000
"""Longer questions are refused: they would crowd out the image in the model's context."""

SYSTEM_NAMES = {"thumbs.db", "ehthumbs.db", "desktop.ini", "icon\r", "__macosx", "$recycle.bin",
                "system volume information"}
NO_QUESTION = "no question given and no questions file"


@dataclass(frozen=True)
class Item:
    id: str                      # path relative to the image folder ('#2', '#3'... for further questions)
    path: Path
    question: str
    task: Task = "open"
    options: tuple[str, ...] = ()
    answer: str | None = None    # evaluation only
    # writes `path` the first time image() reads it (a dataset row's bytes: tables.RowImage); None: a file
    source: Callable[[Path], None] | None = field(default=None, compare=False, repr=False)

    @property
    def prompt(self) -> str:
        return build_prompt(self.task, self.question, self.options)

    @property
    def reference(self) -> str | None:
        """The answer in the space of extracted votes, or None."""
        return None if self.answer is None else canonical_reference(self.task, self.answer, self.options)

    @property
    def video(self) -> bool:
        """A video file (.mp4, .webm, .mov, an animated .gif): image() gives its frames."""
        return self.path is not None and is_video(self.path)

    def image(self, frames: int = FRAMES) -> Image.Image | Video:
        """The image, or for a video `frames` frames sampled uniformly (video.py)."""
        if self.source is not None and not self.path.is_file():
            self.source(self.path)
        return load_video(self.path, frames) if self.video else load_image(self.path)


@dataclass
class Dataset:
    items: list[Item] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    adapt_on: list[Item] | None = None   # items adapted on from another split (--eval-split); None: from `items`


# --------------------------------------------------------------------------- folders

def ignored(rel: PurePosixPath | Path) -> bool:
    """Hidden and system files: .DS_Store, ._foo.png (macOS resource forks), __MACOSX/, Thumbs.db."""
    return any(p.startswith(".") or p.lower() in SYSTEM_NAMES for p in rel.parts)


def _files(root: Path) -> list[Path]:
    """Every non-ignored file under root (links to files included, linked folders not followed)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not ignored(PurePosixPath(d)))
        found += [Path(dirpath) / f for f in filenames if not ignored(PurePosixPath(f))]
    return sorted(found)


def find_images(root: Path) -> list[Path]:
    return [p for p in _files(root) if p.suffix.lower() in IMAGE_EXTS | VIDEO_EXTS]


def unsupported_images(root: Path) -> list[Problem]:
    """Files that look like images in a format we do not read, named with what to do."""
    return [Problem(p.relative_to(root).as_posix(),
                    f"{p.suffix.lower().lstrip('.').upper()} images are not supported; convert to PNG or JPEG")
            for p in _files(root) if p.suffix.lower() in UNSUPPORTED_EXTS]


def _check_images(root: Path, paths: list[Path], frames: int = FRAMES) -> tuple[dict[str, Path], list[Problem]]:
    """id -> path of the images (and videos) that load, and a Problem for each that does not
    (and for each video that was capped: it still runs). Videos are read at `frames` frames: what
    the run will read (a truncated clip can give 8 frames and fail at 16)."""
    readable, problems = {}, []
    for p in paths:
        rel = p.relative_to(root).as_posix()
        err, note = check_video(p, frames) if is_video(p) else (check_image(p), None)
        if note:
            problems.append(Problem(rel, note))
        if err:
            problems.append(Problem(rel, err))
        else:
            readable[rel] = p
    return readable, problems


# --------------------------------------------------------------------------- questions files

def questions_files(folder: Path) -> list[Path]:
    """The questions files (.csv, .jsonl) at the top of a folder of images."""
    return sorted(p for p in folder.iterdir()
                  if p.suffix.lower() in QUESTION_EXTS and p.is_file() and not ignored(PurePosixPath(p.name)))


def find_questions_file(folder: Path) -> Path | None:
    """A questions file shipped with the images: questions.csv/.jsonl first, else the only one
    (None when there are several: which one is meant is the user's call)."""
    for name in ("questions.csv", "questions.jsonl"):
        if (folder / name).is_file():
            return folder / name
    found = questions_files(folder)
    return found[0] if len(found) == 1 else None


def nfc(rel: str) -> str:
    """Paths as written in a questions file: '/' separators, no './', Unicode NFC (macOS writes NFD)."""
    rel = unicodedata.normalize("NFC", rel.strip().replace("\\", "/"))
    while rel.startswith("./"):
        rel = rel[2:]
    return rel


class _ImageIndex:
    """Finds an image id from what a questions file wrote: exactly, else ignoring case,
    else by file name alone (each fallback only when it names one image)."""

    def __init__(self, ids):
        self.exact = {nfc(i): i for i in ids}
        self.lower, self.base = self._unique(str.casefold), self._unique(lambda k: k.rsplit("/", 1)[-1])

    def _unique(self, key) -> dict[str, str]:
        seen: dict[str, list[str]] = {}
        for k, i in self.exact.items():
            seen.setdefault(key(k), []).append(i)
        return {k: v[0] for k, v in seen.items() if len(v) == 1}

    def find(self, rel: str) -> str | None:
        rel = nfc(rel)
        return self.exact.get(rel) or self.lower.get(rel.casefold()) or self.base.get(rel.rsplit("/", 1)[-1])


def _answer(value) -> tuple[str | None, str | None]:
    """The reference answer as text, and a note if it had to be dropped."""
    try:
        return cell_text(value, "answer"), None
    except ValueError as e:  # a list or an object: the item still runs, unscored
        return None, f"{e}; answer ignored"


def _row_item(row: dict, index: _ImageIndex, paths: dict[str, Path], question: str | None, task: Task,
              options: tuple[str, ...]) -> Item | str:
    """One row as an Item, or what is wrong with it (without 'line N: ')."""
    image = row.get("image")
    if image is not None and not isinstance(image, str):
        return "'image' should be a file name"
    rel = nfc(image or "")
    if not rel:
        return "empty 'image'"
    key = index.find(rel)
    if key is None:
        return f"image '{rel}' not found in the folder"
    try:
        q = cell_text(row.get("question"), "question") or (question or "").strip()
        opts = cell_options(row.get("options")) or options
    except ValueError as e:
        return str(e)
    if not q and task == "open":
        return f"no question for '{rel}' (column 'question')"
    if len(q) > MAX_QUESTION_CHARS:
        return f"question for '{rel}' is {len(q):,} characters; the limit is {MAX_QUESTION_CHARS:,}"
    if task != "open" and not opts:
        return f"task '{task}' needs options for '{rel}'"
    if len(opts) > len(LETTERS):
        return f"{len(opts)} options for '{rel}'; at most {len(LETTERS)}"
    return Item(key, paths[key], q, task, opts, _answer(row.get("answer"))[0])


def _items_from_file(qfile: Path, readable: dict[str, Path], unreadable: set[str], question: str | None,
                     task: Task, options: tuple[str, ...]) -> tuple[list[Item], list[Problem]]:
    rows, columns, problems = read_rows(qfile)
    name = qfile.name
    if rows is None:
        return [], problems
    if not rows:
        return [], problems + [Problem(name, "questions file has no rows" if columns else "questions file is empty")]
    if "image" not in columns:
        found = ", ".join(name for name in columns.values() if name) or "none"  # as the file wrote them
        return [], problems + [Problem(name, f"missing column 'image' (found: {found}; expected: {EXPECTED})")]
    if "question" not in columns and task == "open" and not (question or "").strip():
        return [], problems + [Problem(name, "no column 'question' and no question given for all images")]
    index, bad = _ImageIndex(readable), _ImageIndex(unreadable)
    items, seen, named = [], {}, set()
    for row in rows:
        where, image = f"line {row['_line']}", row.get("image")
        named.add(index.find(image) if isinstance(image, str) else None)
        item = _row_item(row, index, readable, question, task, options)
        if isinstance(item, str):
            if not (isinstance(image, str) and bad.find(image)):  # a broken image is reported once, by itself
                problems.append(Problem(name, f"{where}: {item}; skipped"))
            continue
        note = _answer(row.get("answer"))[1]
        if note:
            problems.append(Problem(name, f"{where}: {note}"))
        seen[item.id] = seen.get(item.id, 0) + 1
        if seen[item.id] > 1:  # another question about the same image
            item = Item(f"{item.id}#{seen[item.id]}", item.path, item.question, item.task, item.options, item.answer)
        items.append(item)
    unused = [i for i in readable if i not in named]
    if unused and items:
        shown = ", ".join(unused[:5]) + (f" and {len(unused) - 5} more" if len(unused) > 5 else "")
        problems.append(Problem(name, f"{len(unused)} image(s) have no row here and are not used: {shown}"))
    return items, problems


# --------------------------------------------------------------------------- the dataset

def load_dataset(images: Path, question: str | None = None, questions_file: Path | None = None,
                 task: Task = "open", options: tuple[str, ...] = (), label: str | None = None,
                 frames: int = FRAMES) -> Dataset:
    """Items for every readable image that has a question; a Problem for everything else.

    label: how problems name the image folder (default: its path; the app names the upload).
    frames: the frames the run will read from each video (TTRVConfig.video_frames): the check reads
    as many, at the same times. A file that still fails when the run reads it is left out of the run
    then, named (sampling/prompt_cache.py)."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got '{task}'")
    ds = Dataset()
    images = Path(images)
    where = label or str(images)
    if not images.is_dir():
        ds.problems.append(Problem(where, "image folder not found"))
        return ds
    ds.problems += unsupported_images(images)
    paths = find_images(images)
    if not paths:
        looked = ", ".join(sorted(IMAGE_EXTS | VIDEO_EXTS))
        ds.problems.append(Problem(where, f"no images found (looked for {looked})"))
        return ds
    readable, problems = _check_images(images, paths, frames)
    ds.problems += problems
    options = tuple(options)
    if questions_file is not None:
        unreadable = {p.file for p in ds.problems}
        items, problems = _items_from_file(Path(questions_file), readable, unreadable, question, task, options)
        ds.items, ds.problems = items, ds.problems + problems
    elif not (question or "").strip() and task == "open":
        ds.problems.append(Problem(where, NO_QUESTION))
    elif task != "open" and not options:
        ds.problems.append(Problem("options", f"task '{task}' needs options (none given): list them for all "
                                              "images, or give a questions file with an options column"))
    elif len(options) > len(LETTERS):
        ds.problems.append(Problem("options", f"{len(options)} options; at most {len(LETTERS)}"))
    else:
        ds.items = [Item(rel, p, (question or "").strip(), task, options) for rel, p in readable.items()]
    return ds
