"""Unlabeled items from a folder (or zip, or uploaded files) of images plus questions.

Questions come from one question for every image, or a questions file:
CSV (header row; ',', ';' or tab, read from the header or Excel's 'sep=' line) or JSONL, with columns
    image     path relative to the folder (required; also: file, filename, path)
    question  the question (required unless one question is given for all; also: prompt)
    options   optional; CSV: separated by '|', JSONL: a list (also: choices)
    answer    optional; used for evaluation only, never for rewards (also: label)
An image may have several rows (several questions): ids are then 'a.png', 'a.png#2', ...

Bad input never stops the run: each bad file or row becomes a `Problem`
naming the file and what is wrong, and the good items still run. Images are
read by ttrv_core.images (formats, sizes and modes); here:
  - hidden and system files (.DS_Store, ._foo.png, __MACOSX/, Thumbs.db) are skipped silently;
  - uploads are copied (and zips unpacked) only into the run's own folder:
    members with '..' or absolute paths, links, encrypted members, nested zips
    and zip bombs are skipped with a message; sizes are capped (MAX_FILE_MB per
    file, MAX_TOTAL_MB for everything unpacked);
  - questions files are decoded as text only (UTF-8, UTF-16 with a BOM, else
    Windows-1252 with a warning); nothing uploaded is ever executed or unpickled.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import shutil
import stat
import unicodedata
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from PIL import Image

from .images import IMAGE_EXTS, UNSUPPORTED_EXTS, check_image, load_image
from .prompts import LETTERS, TASKS, Task, build_prompt, canonical_reference

QUESTION_EXTS = (".csv", ".jsonl")
MB = 1 << 20
MAX_FILE_MB = 50
"""Per file: an uploaded image or questions file, or one unpacked from a zip."""
MAX_TOTAL_MB = 1024
"""All uploads of one dataset together, zips counted unpacked."""
MAX_ZIP_MEMBERS = 10_000
MAX_ZIP_RATIO = 100
"""A member that unpacks to over 100x its packed size (and over ZIP_RATIO_MIN_MB) is taken for a zip bomb."""
ZIP_RATIO_MIN_MB = 1
MAX_QUESTION_CHARS = 2000
"""Longer questions are refused: they would crowd out the image in the model's context."""

SYSTEM_NAMES = {"thumbs.db", "ehthumbs.db", "desktop.ini", "icon\r", "__macosx", "$recycle.bin",
                "system volume information"}
COLUMNS = {"image": ("image", "file", "filename", "file_name", "path", "image_path"),
           "question": ("question", "prompt"), "options": ("options", "choices"), "answer": ("answer", "label")}
EXPECTED = "image, question[, options][, answer]"


@dataclass(frozen=True)
class Item:
    id: str                      # path relative to the image folder ('#2', '#3'... for further questions)
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
    return [p for p in _files(root) if p.suffix.lower() in IMAGE_EXTS]


def unsupported_images(root: Path) -> list[Problem]:
    """Files that look like images in a format we do not read, named with what to do."""
    return [Problem(p.relative_to(root).as_posix(),
                    f"{p.suffix.lower().lstrip('.').upper()} images are not supported; convert to PNG or JPEG")
            for p in _files(root) if p.suffix.lower() in UNSUPPORTED_EXTS]


def _check_images(root: Path, paths: list[Path]) -> tuple[dict[str, Path], list[Problem]]:
    """id -> path of the images that load, and a Problem for each that does not."""
    readable, problems = {}, []
    for p in paths:
        rel = p.relative_to(root).as_posix()
        err = check_image(p)
        if err:
            problems.append(Problem(rel, err))
        else:
            readable[rel] = p
    return readable, problems


# --------------------------------------------------------------------------- uploads and zips

def _mb(n: int) -> str:
    return f"{n / MB:.1f} MB"


class _Budget:
    """Bytes left for one set of uploads (MAX_TOTAL_MB), zips counted unpacked."""

    def __init__(self):
        self.left, self.over = MAX_TOTAL_MB * MB, False

    def refuse(self, n: int, name: str) -> str | None:
        """None if n more bytes fit (they are taken); else why not, said once ('' after): once over,
        every later file is refused, so the set is a prefix of the uploads, not a random subset."""
        if not self.over and n <= self.left:
            self.left -= n
            return None
        first, self.over = not self.over, True
        return f"uploads exceed {MAX_TOTAL_MB} MB in total; '{name}' and any later files skipped" if first else ""


def _unique(target: Path) -> Path:
    """target, or 'name (2).ext', 'name (3).ext'... if it is taken: same-named files are all kept."""
    n, out = 2, target
    while out.exists():
        out = target.with_name(f"{target.stem} ({n}){target.suffix}")
        n += 1
    return out


def _renamed(name: str, target: Path, dest: Path) -> list[Problem]:
    if target.name == PurePosixPath(name).name:
        return []
    return [Problem(name, f"another file has the same name; kept as '{target.relative_to(dest).as_posix()}'")]


def _copy_upload(f: Path, dest: Path, budget: _Budget) -> list[Problem]:
    try:
        size = f.stat().st_size
    except OSError:
        return [Problem(f.name, "upload not found")]
    if size > MAX_FILE_MB * MB:
        return [Problem(f.name, f"file is {_mb(size)}; the limit is {MAX_FILE_MB} MB per file")]
    why = budget.refuse(size, f.name)
    if why is not None:
        return [Problem(f.name, why)] if why else []
    target = _unique(dest / f.name)
    shutil.copyfile(f, target)  # contents only: no permissions, no link followed into dest
    return _renamed(f.name, target, dest)


def collect_uploads(files: list[str], dest: Path) -> tuple[Path, Path | None, list[Problem]]:
    """Copy uploaded images (and unpack zips) into `dest`; returns the image folder,
    a questions file found among the uploads, and problems. Nothing is written outside dest."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    problems, budget = [], _Budget()
    for f in map(Path, files):
        ext = f.suffix.lower()
        if ext == ".zip":
            problems += extract_zip(f, dest, budget)
        elif ext in IMAGE_EXTS or ext in QUESTION_EXTS:
            problems += _copy_upload(f, dest, budget)
        elif ext in UNSUPPORTED_EXTS:
            problems.append(Problem(f.name, f"{ext.lstrip('.').upper()} images are not supported; "
                                            "convert to PNG or JPEG"))
        else:
            problems.append(Problem(f.name, "not an image, a .zip or a questions file (.csv, .jsonl); skipped"))
    entries = [p for p in dest.iterdir() if not ignored(PurePosixPath(p.name))]
    if len(entries) == 1 and entries[0].is_dir():  # a zip of one folder: its contents are the set
        dest = entries[0]
    return dest, find_questions_file(dest), problems


def safe_member_path(name: str) -> PurePosixPath | None:
    """The member's path inside the archive, or None if it would land outside it.

    >>> safe_member_path("photos/./cat.png")
    PurePosixPath('photos/cat.png')
    >>> [safe_member_path(n) for n in ("../evil.png", "/etc/x.png", "C:\\\\x.png", "a\\\\..\\\\..\\\\b.png")]
    [None, None, None, None]
    """
    n = name.replace("\\", "/")
    if n.startswith("/") or (len(n) > 1 and n[1] == ":"):
        return None
    parts = [p for p in n.split("/") if p not in ("", ".")]
    if ".." in parts or not parts:
        return None
    return PurePosixPath(*parts)


def _member_refusal(info: zipfile.ZipInfo, rel: PurePosixPath) -> str | None:
    """Why a member is not unpacked, or None (checks on the central directory, before reading)."""
    name = info.filename
    if stat.S_ISLNK(info.external_attr >> 16):
        return f"member '{name}' is a symbolic link; skipped"
    if rel.suffix.lower() == ".zip":
        return f"member '{name}' is a zip inside the zip; unpack it and upload its contents"
    if rel.suffix.lower() in UNSUPPORTED_EXTS:
        return f"member '{name}': {rel.suffix.lstrip('.').upper()} images are not supported; convert to PNG or JPEG"
    if info.flag_bits & 0x1:
        return f"member '{name}' is encrypted (password-protected); skipped"
    if info.file_size > MAX_FILE_MB * MB:
        return f"member '{name}' is {_mb(info.file_size)} unpacked; the limit is {MAX_FILE_MB} MB per file"
    if info.file_size > ZIP_RATIO_MIN_MB * MB and info.file_size > MAX_ZIP_RATIO * max(info.compress_size, 1):
        return (f"member '{name}' would expand {info.file_size // max(info.compress_size, 1)}x "
                f"({_mb(info.compress_size)} to {_mb(info.file_size)}): a zip bomb? skipped")
    return None


class _Outside(Exception):
    """A member whose target resolves outside dest (through a link already there)."""


def _unpack_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, rel: PurePosixPath, dest: Path) -> Path:
    """Stream one member to a free name under dest, never more bytes than its header declares."""
    target = _unique(dest.joinpath(*rel.parts))
    if not target.resolve().is_relative_to(dest.resolve()):
        raise _Outside
    target.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    try:
        with zf.open(info) as src, open(target, "wb") as out:
            while chunk := src.read(MB):
                written += len(chunk)
                if written > info.file_size:
                    raise ValueError("it holds more data than its header declares")
                out.write(chunk)
    except BaseException:
        with contextlib.suppress(OSError):
            target.unlink(missing_ok=True)
        raise
    return target


def extract_zip(zip_path: Path, dest: Path, budget: _Budget | None = None) -> list[Problem]:
    """Unpack the image and questions members of a zip into dest, never outside it."""
    zip_path, budget = Path(zip_path), budget or _Budget()
    dest.mkdir(parents=True, exist_ok=True)
    problems = []

    def skip(msg: str) -> None:
        problems.append(Problem(zip_path.name, msg))

    try:
        with zipfile.ZipFile(zip_path) as zf:
            members = zf.infolist()
            if len(members) > MAX_ZIP_MEMBERS:
                return [Problem(zip_path.name, f"holds {len(members)} files; the limit is {MAX_ZIP_MEMBERS}")]
            for info in members:
                rel = safe_member_path(info.filename)
                if rel is None:
                    skip(f"member '{info.filename}' points outside the archive; skipped")
                    continue
                if info.is_dir() or ignored(rel):
                    continue
                if rel.suffix.lower() not in IMAGE_EXTS | set(QUESTION_EXTS) | UNSUPPORTED_EXTS | {".zip"}:
                    continue  # READMEs and the like, as in a folder
                why = _member_refusal(info, rel)
                if why is None:
                    why = budget.refuse(info.file_size, info.filename)
                if why is not None:
                    if why:
                        skip(why)
                    continue
                try:
                    target = _unpack_member(zf, info, rel, dest)
                except _Outside:
                    skip(f"member '{info.filename}' points outside the archive; skipped")
                    continue
                except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, NotImplementedError,
                        RuntimeError) as e:  # bad CRC, unknown method, a name the disk refuses...
                    why = e.strerror if isinstance(e, OSError) and e.strerror else e
                    skip(f"member '{info.filename}' cannot be unpacked ({why}); skipped")
                    continue
                problems += [Problem(zip_path.name, f"member '{info.filename}': {p.message}")
                             for p in _renamed(info.filename, target, dest)]
    except FileNotFoundError:
        problems.append(Problem(zip_path.name, "zip file not found"))
    except (zipfile.BadZipFile, EOFError) as e:
        problems.append(Problem(zip_path.name, f"not a valid zip file ({e})"))
    except OSError as e:
        problems.append(Problem(zip_path.name, f"cannot read the zip file ({e.strerror or e})"))
    return problems


# --------------------------------------------------------------------------- questions files

def find_questions_file(folder: Path) -> Path | None:
    """A questions file shipped with the images: questions.csv/.jsonl first, else the only one."""
    for name in ("questions.csv", "questions.jsonl"):
        if (folder / name).is_file():
            return folder / name
    found = [p for p in folder.iterdir() if p.suffix.lower() in QUESTION_EXTS and not ignored(PurePosixPath(p.name))]
    return found[0] if len(found) == 1 else None


def _decode(raw: bytes, name: str) -> tuple[str | None, list[Problem]]:
    """Text of a questions file, or None with the reason."""
    if raw.startswith(b"PK\x03\x04"):
        return None, [Problem(name, "this is a zip or an Excel workbook, not a text file; "
                                    "save it as CSV (UTF-8) or JSONL")]
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return raw.decode("utf-16"), []
    if b"\0" in raw:
        return None, [Problem(name, "not a text file (it contains NUL bytes); save it as CSV (UTF-8) or JSONL")]
    try:
        return raw.decode("utf-8-sig"), []
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace"), [
            Problem(name, "not UTF-8; read as Windows-1252 (check accented names, or save as CSV UTF-8)")]


def _canonical(key) -> str:
    key = str(key or "").strip().lower()
    return next((c for c, names in COLUMNS.items() if key in names), key)


def _jsonl_rows(text: str, name: str) -> tuple[list[dict], list[Problem]]:
    rows, problems = [], []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as e:
            problems.append(Problem(name, f"line {n}: not valid JSON ({e}); skipped"))
            continue
        if not isinstance(row, dict):
            problems.append(Problem(name, f"line {n}: not a JSON object (got {type(row).__name__}); skipped"))
            continue
        rows.append({_canonical(k): v for k, v in row.items()} | {"_line": n})
    return rows, problems


def _delimiter(text: str) -> tuple[str, str, int]:
    """',', ';' or tab: whichever the header line uses most (',' if none), the text to parse, lines skipped.

    Excel's 'sep=;' first line names it outright.
    """
    first, _, rest = text.partition("\n")
    first = first.rstrip("\r")
    if first.lower().startswith("sep=") and len(first) == 5:
        return first[4], rest, 1
    return (max((",", ";", "\t"), key=first.count) if any(d in first for d in ",;\t") else ","), text, 0


def _csv_rows(text: str, name: str) -> tuple[list[dict], list[str], list[Problem]]:
    delimiter, text, skipped = _delimiter(text.replace("\r\n", "\n").replace("\r", "\n"))  # old Macs: \r
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    rows, problems, header = [], [], []
    try:
        for fields in reader:
            n = reader.line_num + skipped  # the record's last line in the file
            if not header:
                header = [_canonical(h) for h in fields]
            elif any(f.strip() for f in fields[len(header):]):
                problems.append(Problem(name, f"line {n}: {len(fields)} fields but the header has {len(header)} "
                                              "(quote fields that contain the separator); skipped"))
            elif any(f.strip() for f in fields):
                rows.append(dict(zip(header, fields)) | {"_line": n})
    except csv.Error as e:
        problems.append(Problem(name, f"line {reader.line_num + skipped}: {e}; the rest of the file is skipped"))
    return rows, header, problems


def _read_rows(qfile: Path) -> tuple[list[dict] | None, set[str], list[Problem]]:
    """Rows (canonical column names, '_line'), the columns seen, and problems; rows None if unreadable."""
    try:
        size = qfile.stat().st_size
        if size > MAX_FILE_MB * MB:
            return None, set(), [Problem(qfile.name, f"file is {_mb(size)}; the limit is {MAX_FILE_MB} MB")]
        raw = qfile.read_bytes()
    except FileNotFoundError:
        return None, set(), [Problem(qfile.name, "questions file not found")]
    except OSError as e:
        return None, set(), [Problem(qfile.name, f"cannot read questions file ({e.strerror or e})")]
    text, problems = _decode(raw, qfile.name)
    if text is None:
        return None, set(), problems
    if qfile.suffix.lower() in (".jsonl", ".json"):
        rows, more = _jsonl_rows(text, qfile.name)
        columns = set().union(*rows) - {"_line"} if rows else set()
    else:
        rows, header, more = _csv_rows(text, qfile.name)
        columns = set(header)
    return rows, columns, problems + more


def _text(value, column: str) -> str | None:
    """A cell as text: numbers of either type read alike (7, 7.0, "7" -> '7'); None if empty."""
    if value is None or isinstance(value, str) and not value.strip():
        return None
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, (int, str)):
        return str(value).strip()
    raise ValueError(f"'{column}' should be text or a number, not a {type(value).__name__}")


def _options(value) -> tuple[str, ...]:
    if isinstance(value, list):
        return tuple(t for t in (_text(v, "options") for v in value) if t)
    text = _text(value, "options")
    return tuple(s.strip() for s in text.split("|") if s.strip()) if text else ()


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
        return _text(value, "answer"), None
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
        q = _text(row.get("question"), "question") or (question or "").strip()
        opts = _options(row.get("options")) or options
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
    rows, columns, problems = _read_rows(qfile)
    name = qfile.name
    if rows is None:
        return [], problems
    if not rows:
        return [], problems + [Problem(name, "questions file has no rows" if columns else "questions file is empty")]
    if "image" not in columns:
        found = ", ".join(sorted(c for c in columns if c)) or "none"
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
                 task: Task = "open", options: tuple[str, ...] = ()) -> Dataset:
    """Items for every readable image that has a question; a Problem for everything else."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got '{task}'")
    ds = Dataset()
    images = Path(images)
    if not images.is_dir():
        ds.problems.append(Problem(str(images), "image folder not found"))
        return ds
    ds.problems += unsupported_images(images)
    paths = find_images(images)
    if not paths:
        ds.problems.append(Problem(str(images), "no images found (looked for " + ", ".join(sorted(IMAGE_EXTS)) + ")"))
        return ds
    readable, problems = _check_images(images, paths)
    ds.problems += problems
    options = tuple(options)
    if questions_file is not None:
        unreadable = {p.file for p in ds.problems}
        items, problems = _items_from_file(Path(questions_file), readable, unreadable, question, task, options)
        ds.items, ds.problems = items, ds.problems + problems
    elif not (question or "").strip() and task == "open":
        ds.problems.append(Problem(str(images), "no question given and no questions file"))
    elif task != "open" and not options:
        ds.problems.append(Problem(str(images), f"task '{task}' needs options (none given)"))
    elif len(options) > len(LETTERS):
        ds.problems.append(Problem(str(images), f"{len(options)} options; at most {len(LETTERS)}"))
    else:
        ds.items = [Item(rel, p, (question or "").strip(), task, options) for rel, p in readable.items()]
    return ds
