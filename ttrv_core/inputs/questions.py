"""Reading a questions file into rows: CSV (header row; ',', ';' or tab, read from the header
or Excel's 'sep=' line) or JSONL, decoded as text only (UTF-8, UTF-16 with a BOM, else
Windows-1252 with a warning), at most MAX_FILE_MB; nothing is ever executed or unpickled.
Column names are matched by COLUMNS. dataset.py turns the rows into items."""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from ttrv_core.problems import Problem

MB = 1 << 20
MAX_FILE_MB = 50
"""Per file: a questions file read here; an upload, or a file unpacked from a zip (ttrv_core.inputs.uploads)."""
COLUMNS = {"image": ("image", "file", "filename", "file_name", "path", "image_path"),
           "question": ("question", "prompt"), "options": ("options", "choices"), "answer": ("answer", "label")}
EXPECTED = "image, question[, options][, answer]"


def megabytes(n: int) -> str:
    """A size in bytes as the messages show it.

    >>> megabytes(3 * MB // 2)
    '1.5 MB'
    """
    return f"{n / MB:.1f} MB"


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


def _jsonl_rows(text: str, name: str) -> tuple[list[dict], list[str], list[Problem]]:
    """Rows (canonical column names, '_line'), the keys as written, and problems."""
    rows, names, problems = [], {}, []
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
        names.update(dict.fromkeys(map(str, row)))
    return rows, list(names), problems


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
    """Rows (canonical column names, '_line'), the header as written, and problems."""
    delimiter, text, skipped = _delimiter(text.replace("\r\n", "\n").replace("\r", "\n"))  # old Macs: \r
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    rows, problems, header = [], [], []
    try:
        for fields in reader:
            n = reader.line_num + skipped  # the record's last line in the file
            if not header:
                header, written = [_canonical(h) for h in fields], fields
            elif any(f.strip() for f in fields[len(header):]):
                problems.append(Problem(name, f"line {n}: {len(fields)} fields but the header has {len(header)} "
                                              "(quote fields that contain the separator); skipped"))
            elif any(f.strip() for f in fields):
                rows.append(dict(zip(header, fields)) | {"_line": n})
    except csv.Error as e:
        problems.append(Problem(name, f"line {reader.line_num + skipped}: {e}; the rest of the file is skipped"))
    return rows, written if header else [], problems


def read_rows(qfile: Path) -> tuple[list[dict] | None, dict[str, str], list[Problem]]:
    """Rows (canonical column names, '_line'), the columns seen (canonical name -> as the file
    wrote it), and problems; rows None if unreadable."""
    try:
        size = qfile.stat().st_size
        if size > MAX_FILE_MB * MB:
            return None, {}, [Problem(qfile.name, f"file is {megabytes(size)}; the limit is {MAX_FILE_MB} MB")]
        raw = qfile.read_bytes()
    except FileNotFoundError:
        return None, {}, [Problem(qfile.name, "questions file not found")]
    except OSError as e:
        return None, {}, [Problem(qfile.name, f"cannot read questions file ({e.strerror or e})")]
    text, problems = _decode(raw, qfile.name)
    if text is None:
        return None, {}, problems
    if qfile.suffix.lower() in (".jsonl", ".json"):
        rows, names, more = _jsonl_rows(text, qfile.name)
    else:
        rows, names, more = _csv_rows(text, qfile.name)
    columns = {}
    for name in names:
        columns.setdefault(_canonical(name), str(name).strip())
    return rows, columns, problems + more


def cell_text(value, column: str) -> str | None:
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


def cell_options(value) -> tuple[str, ...]:
    if isinstance(value, list):
        return tuple(t for t in (cell_text(v, "options") for v in value) if t)
    text = cell_text(value, "options")
    return tuple(s.strip() for s in text.split("|") if s.strip()) if text else ()
