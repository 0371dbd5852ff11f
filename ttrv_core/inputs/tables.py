"""A table of items: a Hugging Face dataset (`--dataset`) as a Dataset of Items, read lazily.

What `--dataset NAME_OR_PATH` names (`open_split`):
  - a folder written by `datasets.Dataset.save_to_disk` (a DatasetDict's: the split asked for);
  - a parquet, jsonl or csv file, or a folder of them, or a folder in the Hub's imagefolder
    layout (images and a metadata.csv / metadata.jsonl with a `file_name` column): read by
    `datasets.load_dataset` as the Hub would; files whose names say no split are one split,
    used whatever `split` says;
  - else a Hub id: `datasets.load_dataset(name, config, split=split)`.

Columns (`pick_columns`; `columns` overrides, e.g. {"image": "img", "question": "q"}):
    image     image, img, file_name, path: an Image feature, a {bytes, path} dict, or a path
              (relative to the file or folder given)
    question  question, query, prompt (else the one question given for every row)
    options   options, choices (a list), or one column per letter: A, B, C, ... / option_a, ...
    answer    answer, label: evaluation only. An int with a ClassLabel feature is its class name;
              another int, or digits no option reads as (AI2D's "0".."3"), indexes the options.

Lazy: nothing is decoded here. A row whose image is stored as bytes becomes an Item whose
`path` is a file in `workdir/rows/<the split's fingerprint>/` not written yet, and whose
`source` writes it there the first time the run reads the image (Item.image); a row whose
image is a path is an Item on that file. So the image of each row is checked when the run
reads it: sampling/prompt_cache.py leaves out and names a row whose bytes do not decode.
What needs no pixels is checked here, for every row: a row with no image, no question (and
none given for all), or too many options is skipped and named ("test row 17: ...").
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from ttrv_core.inputs.dataset import MAX_QUESTION_CHARS, Dataset, Item
from ttrv_core.inputs.images import IMAGE_EXTS
from ttrv_core.problems import Problem
from ttrv_core.tasks.prompts import LETTERS, TASKS, Task

TABLE_EXTS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv"}
ROLES = {"image": ("image", "img", "file_name", "path"), "question": ("question", "query", "prompt"),
         "options": ("options", "choices"), "answer": ("answer", "label")}
"""Each role's column, the first of these names the table has (case-insensitive)."""


def parse_columns(text: str) -> dict[str, str]:
    """--columns 'image=img,question=q' -> {'image': 'img', 'question': 'q'}."""
    out = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        role, sep, col = part.partition("=")
        if not sep or role.strip() not in ROLES or not col.strip():
            raise ValueError(f"--columns: '{part}' should be ROLE=COLUMN, ROLE one of {', '.join(ROLES)}")
        out[role.strip()] = col.strip()
    return out


def open_split(name: str, split: str = "test", config: str | None = None):
    """The split `name` names (module docstring), and the folder its relative image paths start from."""
    import datasets
    path = Path(name)
    if not path.exists():   # a Hub id (needs the network)
        try:
            return datasets.load_dataset(name, config, split=split), None
        except (OSError, ValueError) as e:   # not found, offline, no such split: the run stops, said why
            raise ValueError(f"--dataset {name}: no such file or folder, and as a Hub dataset: {e}") from None
    if path.is_dir() and any((path / f).is_file() for f in ("dataset_info.json", "dataset_dict.json", "state.json")):
        got = datasets.load_from_disk(str(path))
    elif path.is_file():
        if path.suffix.lower() not in TABLE_EXTS:
            raise ValueError(f"{name}: a dataset file is .parquet, .jsonl or .csv")
        got = datasets.load_dataset(TABLE_EXTS[path.suffix.lower()], data_files=str(path))
        path = path.parent
    else:   # parquet / jsonl / csv files, or the imagefolder layout: the Hub's reading of a folder
        got = datasets.load_dataset(str(path), config)
    if isinstance(got, datasets.DatasetDict):
        if split not in got and len(got) == 1:   # files that name no split: their one split
            split = next(iter(got))
        if split not in got:
            raise ValueError(f"{name} has no split '{split}' (it has: {', '.join(got)}); choose one with --split")
        got = got[split]
    return got, path


def pick_columns(names: Sequence[str], given: Mapping[str, str] | None = None) -> dict[str, str | list[str]]:
    """role -> column (options: a column, or the list of per-letter columns), from `given` and ROLES."""
    lower = {n.lower(): n for n in names}
    cols: dict[str, str | list[str]] = {}
    for role, known in ROLES.items():
        if given and role in given:
            if given[role] not in names:
                raise ValueError(f"no column '{given[role]}' for {role} (columns: {', '.join(names)})")
            cols[role] = given[role]
        elif found := next((lower[k] for k in known if k in lower), None):
            cols[role] = found
    if "options" not in cols:
        for form in ("{}", "option_{}", "option{}"):
            letters = [lower[k] for L in LETTERS if (k := form.format(L).lower()) in lower]
            if len(letters) >= 2 and letters[0].lower() == form.format("a"):
                cols["options"] = letters
                break
    if "image" not in cols:
        raise ValueError(f"no image column (looked for {', '.join(ROLES['image'])}; columns: {', '.join(names)}); "
                         "name it with --columns image=COLUMN")
    return cols


@dataclass(frozen=True)
class RowImage:
    """Writes one row's image bytes to a file the first time the run reads it (Item.source)."""
    table: object   # the split's image column alone, undecoded (a datasets.Dataset: memory-mapped)
    column: str
    row: int

    def __call__(self, path: Path) -> None:
        data = (self.table[self.row][self.column] or {}).get("bytes")
        if not data:
            raise OSError("no image bytes in the row")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")   # whole or absent: another process may read it
        tmp.write_bytes(data)
        os.replace(tmp, path)


def _cells(table, column: str) -> list[tuple[str | None, bool]]:
    """Each row's image as (its path, whether it holds bytes), read from Arrow without the bytes."""
    import pyarrow as pa
    import pyarrow.compute as pc
    arr = table.data.column(column).combine_chunks() if table.num_rows else pa.array([], pa.string())
    if pa.types.is_struct(arr.type):
        names = {arr.type.field(i).name for i in range(arr.type.num_fields)}
        paths = pc.struct_field(arr, "path").to_pylist() if "path" in names else [None] * len(arr)
        has = pc.is_valid(pc.struct_field(arr, "bytes")).to_pylist() if "bytes" in names else [False] * len(arr)
        valid = arr.is_valid().to_pylist()
        return [(p if v else None, b and v) for p, b, v in zip(paths, has, valid)]
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        return [(p, False) for p in arr.to_pylist()]
    raise ValueError(f"image column '{column}' holds {arr.type}: expected images, {{bytes, path}} or file paths")


def _answer(value, feature, options: tuple[str, ...]) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        names = getattr(feature, "names", None)   # a ClassLabel
        if names and 0 <= value < len(names):
            return names[value]
        if options and 0 <= value < len(options):
            return options[value]
    text = str(value).strip()
    # an option's index written as text (lmms-lab's AI2D: "0".."3"), where no option reads so
    if options and text.isdigit() and int(text) < len(options) and text not in [o.strip() for o in options]:
        return options[int(text)]
    return text


def _options(row: dict, col) -> tuple[str, ...]:
    if col is None:
        return ()
    if isinstance(col, list):
        return tuple(str(row[c]).strip() for c in col if row[c] is not None and str(row[c]).strip())
    value = row[col]
    if isinstance(value, str):
        value = value.split("|")
    return tuple(str(o).strip() for o in value or () if str(o).strip())


def load_table(name: str, workdir: Path, split: str = "test", config: str | None = None,
               columns: Mapping[str, str] | None = None, question: str | None = None, task: Task = "open",
               options: Sequence[str] = ()) -> Dataset:
    """The items of one split (module docstring), a Problem for each row skipped. Raises ValueError
    for what stops the whole table (no such split, no image column)."""
    import datasets
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got '{task}'")
    table, base = open_split(name, split, config)
    cols = pick_columns(table.column_names, columns)
    image = cols["image"]
    if isinstance(table.features[image], datasets.Image):
        table = table.cast_column(image, datasets.Image(decode=False))
    images = table.select_columns([image])
    cache = Path(workdir) / "rows" / table._fingerprint
    text = [c for role, c in cols.items() if role != "image" for c in (c if isinstance(c, list) else [c])]
    rows = table.select_columns(text).to_list() if text else [{}] * table.num_rows
    ds, label, question = Dataset(), split, (question or "").strip()
    for i, ((path, has_bytes), row) in enumerate(zip(_cells(table, image), rows)):
        rid = f"{label} row {i}"
        opts = _options(row, cols.get("options")) or tuple(options)
        q = str(row.get(cols.get("question"), None) or "").strip() or question
        why = ("no image" if not path and not has_bytes else
               "no question (and none given for every row: --question)" if not q and task == "open" else
               f"question is {len(q):,} characters; the limit is {MAX_QUESTION_CHARS:,}" if len(q) > MAX_QUESTION_CHARS
               else f"task '{task}' needs options" if task != "open" and not opts else
               f"{len(opts)} options; at most {len(LETTERS)}" if len(opts) > len(LETTERS) else None)
        if why:
            ds.problems.append(Problem(rid, f"{why}; skipped"))
            continue
        answer = _answer(row.get(cols.get("answer")), table.features.get(cols.get("answer")), opts)
        if has_bytes:
            ext = Path(path or "").suffix.lower()
            ext = ext if ext in IMAGE_EXTS and ext != ".gif" else ".png"   # Pillow reads by content anyway
            ds.items.append(Item(rid, cache / f"{i:07d}{ext}", q, task, opts, answer, RowImage(images, image, i)))
        else:
            file = Path(path) if base is None or Path(path).is_absolute() else base / path
            ds.items.append(Item(rid, file, q, task, opts, answer))
    if not table.num_rows:
        ds.problems.append(Problem(f"{name} ({split})", "the split has no rows"))
    return ds
