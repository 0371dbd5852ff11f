"""Unlabeled items from a folder (or zip) of images plus questions.

Questions come from one question for every image, or a questions file:
CSV (header row) or JSONL, with columns
    image     path relative to the folder (required)
    question  the question (required unless one question is given for all)
    options   optional; CSV: separated by '|', JSONL: a list
    answer    optional; used for evaluation only, never for rewards

Bad input never stops the run: each bad file or row becomes a `Problem`
naming the file and what is wrong, and the good items still run.
"""
from __future__ import annotations

import csv
import json
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageOps

from .prompts import TASKS, Task, build_prompt, canonical_reference

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
MAX_SIDE = 2048
"""Images are downscaled to this longest side on load; processors resize further."""
Image.MAX_IMAGE_PIXELS = 100_000_000  # larger is refused as a decompression bomb


@dataclass(frozen=True)
class Item:
    id: str                      # path relative to the image folder
    path: Path
    question: str
    task: Task = "open"
    options: tuple[str, ...] = ()
    answer: str | None = None    # evaluation only

    @property
    def prompt(self) -> str:
        return build_prompt(self.task, self.question, self.options)

    @property
    def reference(self) -> str | None:
        """The answer in the space of extracted votes, or None."""
        return None if self.answer is None else canonical_reference(self.task, self.answer, self.options)

    def image(self) -> Image.Image:
        return load_image(self.path)


@dataclass(frozen=True)
class Problem:
    file: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.message}"


@dataclass
class Dataset:
    items: list[Item] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def load_image(path: Path) -> Image.Image:
    """RGB image, EXIF rotation applied, first frame of animations, capped size."""
    with Image.open(path) as im:
        im.seek(0)
        im = ImageOps.exif_transpose(im)
        if im.mode in ("RGBA", "LA", "P"):
            im = im.convert("RGBA")
            bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
            im = Image.alpha_composite(bg, im)
        im = im.convert("RGB")
        if max(im.size) > MAX_SIDE:
            im.thumbnail((MAX_SIDE, MAX_SIDE))
        return im.copy()


def check_image(path: Path) -> str | None:
    """None if the image loads, else the problem in words."""
    try:
        if path.stat().st_size == 0:
            return "empty file (0 bytes)"
        im = load_image(path)
        if min(im.size) < 1:
            return "image has no pixels"
    except Image.DecompressionBombError as e:
        return f"image too large ({e})"
    except Exception as e:  # PIL raises many types for broken files
        return f"cannot read image ({type(e).__name__}: {e})"
    return None


def _hidden(rel: Path) -> bool:
    return any(p.startswith(".") or p == "__MACOSX" for p in rel.parts)


def find_images(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*")
                  if p.is_file() and p.suffix.lower() in IMAGE_EXTS and not _hidden(p.relative_to(root)))


def extract_zip(zip_path: Path, dest: Path) -> list[Problem]:
    """Extract image/question members only, never outside dest."""
    problems = []
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with zipfile.ZipFile(zip_path) as zf:
            for info in zf.infolist():
                name = info.filename
                rel = Path(name)
                if rel.is_absolute() or ".." in rel.parts:
                    problems.append(Problem(f"{zip_path.name}:{name}", "unsafe path in zip, skipped"))
                    continue
                if info.is_dir() or _hidden(rel):
                    continue
                if info.flag_bits & 0x1:
                    problems.append(Problem(f"{zip_path.name}:{name}", "encrypted member, skipped"))
                    continue
                target = dest / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as out:
                    out.write(src.read())
    except zipfile.BadZipFile as e:
        problems.append(Problem(zip_path.name, f"not a valid zip file ({e})"))
    return problems


def find_questions_file(folder: Path) -> Path | None:
    """A questions file shipped with the images: questions.csv/.jsonl first, else the only one."""
    for name in ("questions.csv", "questions.jsonl"):
        if (folder / name).is_file():
            return folder / name
    found = [p for p in folder.iterdir() if p.suffix.lower() in (".csv", ".jsonl")]
    return found[0] if len(found) == 1 else None


def collect_uploads(files: list[str], dest: Path) -> tuple[Path, Path | None, list[Problem]]:
    """Copy uploaded images (and unpack zips) into `dest`; returns the image folder,
    a questions file found among the uploads, and problems."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    problems = []
    for f in map(Path, files):
        ext = f.suffix.lower()
        if ext == ".zip":
            problems += extract_zip(f, dest)
        elif ext in IMAGE_EXTS or ext in (".csv", ".jsonl"):
            if (dest / f.name).exists():
                problems.append(Problem(f.name, "two uploads share this name; kept the first"))
            else:
                shutil.copy(f, dest / f.name)
        else:
            problems.append(Problem(f.name, "not an image, a .zip or a questions file; skipped"))
    entries = [p for p in dest.iterdir() if not p.name.startswith((".", "__MACOSX"))]
    if len(entries) == 1 and entries[0].is_dir():  # a zip of one folder: its contents are the set
        dest = entries[0]
    return dest, find_questions_file(dest), problems


def _read_rows(qfile: Path) -> tuple[list[dict], list[Problem]]:
    problems: list[Problem] = []
    rows: list[dict] = []
    try:
        text = qfile.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        return [], [Problem(qfile.name, f"cannot read questions file ({e})")]
    if qfile.suffix.lower() in (".jsonl", ".json"):
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise ValueError("not an object")
                rows.append({**row, "_line": n})
            except ValueError as e:
                problems.append(Problem(qfile.name, f"line {n}: not a JSON object ({e})"))
    else:
        try:
            dialect = csv.Sniffer().sniff(text.splitlines()[0] if text else ",", delimiters=",;\t")
        except csv.Error:
            dialect = csv.excel
        reader = csv.DictReader(text.splitlines(), dialect=dialect)
        for n, row in enumerate(reader, 2):
            rows.append({(k or "").strip().lower(): v for k, v in row.items()} | {"_line": n})
    return rows, problems


def _options(value) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, list):
        return tuple(str(v).strip() for v in value if str(v).strip())
    return tuple(s.strip() for s in str(value).split("|") if s.strip())


def load_dataset(images: Path, question: str | None = None, questions_file: Path | None = None,
                 task: Task = "open", options: tuple[str, ...] = ()) -> Dataset:
    """Items for every readable image that has a question; a Problem for everything else."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got '{task}'")
    ds = Dataset()
    images = Path(images)
    if not images.is_dir():
        ds.problems.append(Problem(str(images), "image folder not found"))
        return ds
    paths = find_images(images)
    if not paths:
        ds.problems.append(Problem(str(images), "no images found (looked for " + ", ".join(sorted(IMAGE_EXTS)) + ")"))
        return ds
    readable: dict[str, Path] = {}
    for p in paths:
        rel = p.relative_to(images).as_posix()
        err = check_image(p)
        if err:
            ds.problems.append(Problem(rel, err))
        else:
            readable[rel] = p
    unreadable = {pr.file for pr in ds.problems}

    if questions_file is None:
        if not (question or "").strip() and task == "open":
            ds.problems.append(Problem(str(images), "no question given and no questions file"))
            return ds
        for rel, p in readable.items():
            ds.items.append(Item(rel, p, (question or "").strip(), task, tuple(options)))
        return ds

    qfile = Path(questions_file)
    rows, problems = _read_rows(qfile)
    ds.problems += problems
    if rows and "image" not in rows[0]:
        ds.problems.append(Problem(qfile.name, "missing column 'image' (columns: image, question, options, answer)"))
        return ds
    for row in rows:
        where = f"line {row['_line']}"
        rel = str(row.get("image") or "").strip().replace("\\", "/")
        q = str(row.get("question") or question or "").strip()
        opts = _options(row.get("options")) or tuple(options)
        if not rel:
            ds.problems.append(Problem(qfile.name, f"{where}: empty 'image'"))
        elif rel in unreadable:
            continue  # already reported against the image itself
        elif rel not in readable:
            ds.problems.append(Problem(qfile.name, f"{where}: image '{rel}' not found in the folder"))
        elif not q and task == "open":
            ds.problems.append(Problem(qfile.name, f"{where}: no question for '{rel}' (column 'question')"))
        elif task != "open" and not opts:
            ds.problems.append(Problem(qfile.name, f"{where}: task '{task}' needs options for '{rel}'"))
        else:
            ans = row.get("answer")
            ans = None if ans is None or str(ans).strip() == "" else str(ans).strip()
            ds.items.append(Item(rel, readable[rel], q, task, opts, ans))
    if rows and not ds.items and not ds.problems:
        ds.problems.append(Problem(qfile.name, "no usable rows"))
    if not rows and not problems:
        ds.problems.append(Problem(qfile.name, "questions file is empty"))
    return ds
