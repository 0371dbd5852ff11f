"""Task formats, and how a question becomes a prompt (answers.py reads the reply back).

Three formats:
  open      free-form short answer; compared after `normalize_open`.
  choice    multiple choice; options become letters A, B, C, ... and the prompt
            is the paper's recognition prompt. Answers are read with
            `extract_letter`, exactly as the authors' code does it.
  classify  one of a user-given list of class names; the reply is normalised
            and mapped to the class it names.

"""
from __future__ import annotations

from typing import Literal, Sequence

Task = Literal["open", "choice", "classify"]
TASKS: tuple[str, ...] = ("open", "choice", "classify")

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

# The paper's recognition prompt (TTRV repo, data/*/ prompt files).
DEFAULT_CHOICE_QUESTION = "Look at the given image and identify what it shows."
CHOICE_INSTRUCTION = (
    "Choose the correct answer from the options below and respond with only the "
    "corresponding option letter ({letters}). Do not include any explanation or extra text."
)
OPEN_INSTRUCTION = "Answer the question using a single word or phrase."
CLASSIFY_INSTRUCTION = (
    "Answer with exactly one of these class names: {classes}. "
    "Do not include any explanation or extra text."
)


def _letter_list(n: int) -> str:
    """'A, B, C, or D' for n = 4 (the paper's wording)."""
    letters = list(LETTERS[:n])
    if n == 1:
        return letters[0]
    if n == 2:
        return f"{letters[0]} or {letters[1]}"
    return ", ".join(letters[:-1]) + ", or " + letters[-1]


def build_prompt(task: Task, question: str, options: Sequence[str] = ()) -> str:
    """The text of the single user turn (the image is placed before it).

    >>> print(build_prompt("choice", "", ["accordion", "shovel", "koala", "toaster"]))
    Look at the given image and identify what it shows. Choose the correct answer from the options below and respond with only the corresponding option letter (A, B, C, or D). Do not include any explanation or extra text.
    Options:
    A. accordion
    B. shovel
    C. koala
    D. toaster
    """
    question = question.strip()
    if task == "open":
        return f"{question}\n{OPEN_INSTRUCTION}" if question else OPEN_INSTRUCTION
    if not options:
        raise ValueError(f"task '{task}' needs options (got none)")
    if len(options) > len(LETTERS):
        raise ValueError(f"at most {len(LETTERS)} options, got {len(options)}")
    if task == "choice":
        head = question or DEFAULT_CHOICE_QUESTION
        lines = "\n".join(f"{LETTERS[i]}. {o}" for i, o in enumerate(options))
        return f"{head} {CHOICE_INSTRUCTION.format(letters=_letter_list(len(options)))}\nOptions:\n{lines}"
    if task == "classify":
        head = question or DEFAULT_CHOICE_QUESTION
        return f"{head} {CLASSIFY_INSTRUCTION.format(classes=', '.join(options))}"
    raise ValueError(f"unknown task '{task}'; expected one of {', '.join(TASKS)}")
