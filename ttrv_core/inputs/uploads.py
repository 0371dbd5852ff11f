"""Uploads: files and zips copied into a run's own input folder, for ttrv_core.inputs.dataset to read.

`collect_uploads` copies uploaded images and questions files (a folder arrives
as its files) and unpacks zips into one folder, and finds a questions file
among them. Every bad upload becomes a `Problem` with what to do; the rest is kept:
  - nothing is written outside the run's folder: zip members with '..' or
    absolute paths, links, encrypted members, nested zips and zip bombs
    (over MAX_ZIP_RATIO) are skipped with a message;
  - sizes are capped: MAX_FILE_MB per file (ttrv_core.inputs.questions, which caps a
    questions file read from anywhere too), MAX_TOTAL_MB for everything
    unpacked, MAX_ZIP_MEMBERS per zip;
  - same-named files are all kept ('cat (2).png'); hidden and system files
    are skipped as in a folder; nothing uploaded is ever executed or unpickled.
"""
from __future__ import annotations

import contextlib
import shutil
import stat
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from ttrv_core.inputs.dataset import QUESTION_EXTS, find_questions_file, ignored
from ttrv_core.inputs.images import IMAGE_EXTS, UNSUPPORTED_EXTS
from ttrv_core.inputs.questions import MAX_FILE_MB, MB, megabytes
from ttrv_core.inputs.video import VIDEO_EXTS
from ttrv_core.problems import Problem

MAX_TOTAL_MB = 1024
"""All uploads of one dataset together, zips counted unpacked."""
MAX_ZIP_MEMBERS = 10_000
MAX_ZIP_RATIO = 100
"""A member that unpacks to over 100x its packed size (and over ZIP_RATIO_MIN_MB) is taken for a zip bomb."""
ZIP_RATIO_MIN_MB = 1


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
        return [Problem(f.name, f"file is {megabytes(size)}; the limit is {MAX_FILE_MB} MB per file")]
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
        elif ext in IMAGE_EXTS or ext in VIDEO_EXTS or ext in QUESTION_EXTS:
            problems += _copy_upload(f, dest, budget)
        elif ext in UNSUPPORTED_EXTS:
            problems.append(Problem(f.name, f"{ext.lstrip('.').upper()} images are not supported; "
                                            "convert to PNG or JPEG"))
        else:
            problems.append(Problem(f.name, "not an image, a video, a .zip or a questions file (.csv, .jsonl); "
                                            "skipped"))
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
        return f"member '{name}' is {megabytes(info.file_size)} unpacked; the limit is {MAX_FILE_MB} MB per file"
    if info.file_size > ZIP_RATIO_MIN_MB * MB and info.file_size > MAX_ZIP_RATIO * max(info.compress_size, 1):
        return (f"member '{name}' would expand {info.file_size // max(info.compress_size, 1)}x "
                f"({megabytes(info.compress_size)} to {megabytes(info.file_size)}): a zip bomb? skipped")
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
                if rel.suffix.lower() not in IMAGE_EXTS | VIDEO_EXTS | set(QUESTION_EXTS) | UNSUPPORTED_EXTS | {".zip"}:
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
