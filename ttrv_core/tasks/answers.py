"""Reading a reply back as an answer of its task format (prompts.py): the vote it casts.

  open      `normalize_open`: lower case, articles, punctuation and number words normalised.
  choice    `extract_letter`, exactly as the authors' code does it.
  classify  the reply normalised and mapped to the class it names (`extract_class`).

The extracted answer is what votes are counted over (method/rewards.py); an answer
that cannot be parsed is kept as its raw (normalised) string, and an empty
answer is a vote like any other (as in the authors' code). `is_valid` says whether
a vote is an answer of its format at all (one option letter, one class).
"""
from __future__ import annotations

import re
import string
from typing import Sequence

from ttrv_core.tasks.prompts import LETTERS, Task


def extract_letter(reply: str, n_options: int = 4) -> str:
    """The authors' multiple-choice extraction.

    strip; drop trailing '.' and '/', and a leading ':'; uppercase; take the
    LAST standalone letter among the option letters; else keep the cleaned string.
    The authors' quirks stay: "C. B" reads as B, and the article "a" in a sentence
    reads as A. One departure, where their code has no rule (it knows A-D only):
    with 9 or more options, the pronoun "I" (followed by an apostrophe or by a
    word: "I think", "I'm") is not read as option I, nor the letter of a
    contraction as an option ("I'm": M, "it's": S).

    >>> extract_letter(" The answer is B.")
    'B'
    >>> extract_letter("A or C")
    'C'
    >>> extract_letter("koala")
    'KOALA'
    >>> extract_letter("")
    ''
    >>> extract_letter("B, I think", 9), extract_letter("The answer is I", 9)
    ('B', 'I')
    """
    s = reply.strip().rstrip("./").lstrip(":").strip().upper()
    letters = "|".join(LETTERS[: max(n_options, 1)])
    found = [m for m in re.finditer(rf"\b({letters})\b", s) if n_options < 9 or not _a_word(s, m)]
    return found[-1][1] if found else s


_APOSTROPHES = ("'", "\u2019")
_AFTER_PRONOUN_I = re.compile(r"['\u2019]|\s+[A-Z]{2,}")  # "I'M", "I THINK"


def _a_word(s: str, m: re.Match) -> bool:
    """The standalone letter m of s is the pronoun I or a contraction's letter ("I'M": M)."""
    pronoun = m[1] == "I" and _AFTER_PRONOUN_I.match(s, m.end()) is not None
    return pronoun or s[m.start() - 1:m.start()] in _APOSTROPHES


_NUMBER_WORDS = {w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen "
    "fourteen fifteen sixteen seventeen eighteen nineteen twenty".split())}
_ARTICLES = {"a", "an", "the"}
_DECIMAL = re.compile(r"^(\d+)(?:\.0+|(\.\d*?[1-9])0+)$")  # 7.0 -> 7, 2.50 -> 2.5; 10 stays
# punctuation but the apostrophe, except a decimal point between digits (a regex, not a placeholder
# character: any placeholder could occur in a reply, e.g. "\0" would come back as ".")
_PUNCT = re.compile(r"(?!(?<=\d)\.(?=\d))[" + re.escape(string.punctuation.replace("'", "")) + "]")


def normalize_open(reply: str) -> str:
    """Normalise a short open answer so equal answers count as one vote.

    Lowercase; drop punctuation (a decimal point between digits is kept) and
    apostrophes; drop articles, i.e. "a", "an", "the" followed by another word
    (a last word is kept: "A" is the answer 'a', "plan A" is 'plan a'); number
    words zero..twenty become digits; a decimal's trailing zeros go (so a
    reference "7.0" meets a vote "7"); collapse whitespace.

    >>> normalize_open("  The Seven. ")
    '7'
    >>> normalize_open("3.5 cm")
    '3.5 cm'
    >>> normalize_open("A red car!")
    'red car'
    >>> normalize_open("7.0"), normalize_open("2.50 kg"), normalize_open("10")
    ('7', '2.5 kg', '10')
    >>> normalize_open("A"), normalize_open("Plan A.")
    ('a', 'plan a')
    """
    s = _PUNCT.sub(" ", reply.strip().lower()).replace("'", "").split()
    words = [_NUMBER_WORDS.get(w, w) for i, w in enumerate(s) if w not in _ARTICLES or i == len(s) - 1]
    return " ".join(_DECIMAL.sub(lambda m: m[1] + (m[2] or ""), w) for w in words)


def extract_class(reply: str, classes: Sequence[str]) -> str:
    """Map a reply to the class it names (normalised); else the normalised reply.

    Exact normalised match first, then the class whose name ends last in the
    reply, the longest on a tie (so "a red car" is 'red car', not 'car').

    >>> extract_class("It is a Koala.", ["koala", "toaster"])
    'koala'
    >>> extract_class("banana", ["koala", "toaster"])
    'banana'
    """
    norm = normalize_open(reply)
    by_norm = {normalize_open(c): c for c in classes}
    if norm in by_norm:
        return by_norm[norm]
    best, best_end = None, -1
    for key, cls in by_norm.items():
        if not key:
            continue
        for m in re.finditer(rf"(?<!\w)(?={re.escape(key)}(?!\w))", norm):  # overlapping occurrences too
            end = m.start() + len(key)
            if end > best_end or (end == best_end and len(cls) > len(best)):
                best, best_end = cls, end
    return best if best is not None else norm


def extract_answer(task: Task, reply: str, options: Sequence[str] = ()) -> str:
    """The vote a reply casts, for the given task format."""
    if task == "choice":
        return extract_letter(reply, len(options) or 4)
    if task == "classify":
        return extract_class(reply, options)
    return normalize_open(reply)


def is_valid(task: Task, answer: str, options: Sequence[str] = ()) -> bool:
    """Whether an extracted answer is a reply of the asked form: one of the option
    letters (choice), one of the class names (classify), anything non-empty (open).

    A reply that is not (a sentence with no option letter, ".", an empty reply) is
    what the authors' evaluation counts as wrong whatever it says, and what TTRV's
    gain on small models mostly removes (DESIGN.md section 7).

    >>> is_valid("choice", extract_answer("choice", "It is the digit seven.", "abcd"), "abcd")
    False
    >>> is_valid("choice", extract_answer("choice", "C.", "abcd"), "abcd")
    True
    >>> is_valid("open", extract_answer("open", "."))
    False
    >>> [is_valid("choice", a, "abcd") for a in ("", "AB", "BC", "E", "D")]
    [False, False, False, False, True]
    """
    if task == "choice":
        return len(answer) == 1 and answer in LETTERS[:len(options) or 4]
    if task == "classify":
        return answer in options
    return answer != ""


def canonical_reference(task: Task, answer: str, options: Sequence[str] = ()) -> str:
    """A user-given reference answer in the same space as extracted votes.

    For choice, the reference may be a letter or the option text.
    """
    answer = str(answer).strip()
    if task == "choice":
        for i, o in enumerate(options):
            if normalize_open(o) == normalize_open(answer):
                return LETTERS[i]
        return extract_letter(answer, len(options) or 4)
    return extract_answer(task, answer, options)
