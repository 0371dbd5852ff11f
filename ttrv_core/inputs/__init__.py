"""What a person gave, as a Dataset: the one path from images and questions to items.

    collect   a folder is used in place; a .zip, or a list of uploaded files (images,
              zips, the files of a folder, questions files), is copied into a work
              folder first (uploads.collect_uploads: nothing written outside it)
    load      the items (dataset.load_dataset), with the questions from, in this order:
                1. the questions file given;
                2. else a questions file among the images (questions.csv / .jsonl,
                   or the only .csv / .jsonl there);
                3. else the one question typed for every image.
              In 1 and 2 the typed question fills rows that have none. Typing a
              question is enough for a folder of images; several questions files
              among the images and no question typed is a problem that says what to do.

Problems name what the person gave (the upload, the example set, a setting), never
the work folder. The app and the CLI both read their inputs here.
"""
from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ttrv_core.inputs import dataset
from ttrv_core.inputs.uploads import collect_uploads
from ttrv_core.inputs.video import FRAMES
from ttrv_core.problems import Problem
from ttrv_core.tasks.prompts import Task


@dataclass
class Collected:
    """Images in one folder, ready for dataset.load_dataset."""
    folder: Path
    found: Path | None          # a questions file among the images (dataset.find_questions_file)
    where: str                  # what the person gave, for messages: "example set 'digits'", "3 uploaded file(s)"
    problems: list[Problem] = field(default_factory=list)   # from copying and unpacking


@dataclass
class Inputs:
    dataset: dataset.Dataset
    where: str
    questions: str              # where the questions came from, in words
    several: list[str] = field(default_factory=list)   # questions files among the images, when none was chosen


def collect(source: Path | str | Sequence[Path | str], workdir: Path, label: str | None = None) -> Collected:
    """A folder as it is; a .zip or a list of uploaded files copied (and unpacked) into workdir/input."""
    if isinstance(source, (str, Path)) and Path(source).suffix.lower() != ".zip":  # a folder (load says if missing)
        folder = Path(source)
        return Collected(folder, dataset.find_questions_file(folder) if folder.is_dir() else None, label or str(folder))
    files = [str(source)] if isinstance(source, (str, Path)) else [str(f) for f in source]
    folder, found, problems = collect_uploads(files, Path(workdir) / "input")
    if label is None:
        label = Path(files[0]).name if len(files) == 1 else f"{len(files)} uploaded file(s)"
    return Collected(folder, found, label, problems)


def load(got: Collected, question: str | None = None, questions_file: Path | None = None, task: Task = "open",
         options: Sequence[str] = (), frames: int = FRAMES) -> Inputs:
    """The dataset, questions chosen as the module docstring says. frames: the frames the run will
    read from each video (TTRVConfig.video_frames): the data check reads as many."""
    question = (question or "").strip()
    qfile = Path(questions_file) if questions_file else got.found
    several = [] if qfile or not got.folder.is_dir() else [p.name for p in dataset.questions_files(got.folder)]
    ds = dataset.load_dataset(got.folder, question or None, qfile, task, tuple(options), label=got.where,
                           frames=frames)
    if qfile is not None:
        said = f"{qfile.name}" + (" (your question where a row has none)" if question else "")
    elif question or task != "open":
        said = "your question, for every image" if question else "the options' default question"
        if several:
            ds.problems.append(Problem(", ".join(several), "not used: one question for all images (to use one "
                                       "of these files, give it as the questions file)"))
    else:  # nothing says what to ask: say how to, in the words of the page and the CLI alike
        said = ""
        ds.problems = [p for p in ds.problems if p.message != dataset.NO_QUESTION]
        if not any(p.message.startswith("no images found") for p in ds.problems):
            ds.problems.append(Problem("questions", (
                f"several questions files among the images ({', '.join(several)}) and none is named "
                "questions.csv: give the one to use as the questions file, or type one question for all images"
                if several else "type a question for all images, or give a questions file (CSV or JSONL with "
                "columns image, question, optional options and answer)")))
    ds.problems = got.problems + ds.problems
    return Inputs(ds, got.where, said, several)


def describe(inp: Inputs, limit: int = 20) -> str:
    """Markdown for the page: what is ready, where the questions come from, what was skipped."""
    ds = inp.dataset
    n_ans = sum(it.answer is not None for it in ds.items)
    if ds.items:
        n_vid = sum(it.video for it in ds.items)
        vids = f" ({n_vid} of them video: frames sampled from each)" if n_vid else ""
        lines = [f"**{len(ds.items)} image(s) ready**{vids} from {inp.where}; questions: {inp.questions}."]
        if n_ans:
            lines.append(f"Answers column found for {n_ans} image(s): *used for evaluation only* "
                         "(accuracy before/after), never for the rewards.")
        head = "⚠️ **Skipped** (the other images still run):"
    else:
        lines, head = ["**Nothing to run yet.**"], "To fix:" if ds.problems else ""
    if ds.problems:
        shown = ds.problems[:limit]
        lines.append(head)
        lines += [f"- `{p.file.replace('`', chr(39))}`: {html.escape(p.message, quote=False)}" for p in shown]
        if len(ds.problems) > len(shown):
            lines.append(f"- … and {len(ds.problems) - len(shown)} more (problems.txt in the downloads)")
    return "\n".join(lines)
