"""Reading a reply for its content, and the label-free split of what changed (content.py)."""
import pytest

from ttrv_core.events import EvalResult, ItemEval
from ttrv_core.inputs.dataset import Item
from ttrv_core.method.content import (
    amplified,
    amplified_answers,
    change,
    content_correct,
    gain_sentence,
    named_answer,
    run_summary,
    shares,
    vote_shares,
)
from ttrv_core.method.evaluate import summarize
from ttrv_core.tasks.answers import extract_answer, is_valid

DIGITS = tuple(str(d) for d in range(10))


@pytest.mark.parametrize("task, reply, options, want", [
    ("choice", "C", DIGITS, "C"),                      # the strict letter
    ("choice", "It must be two.", DIGITS, "C"),        # a number word names the option "2"
    ("choice", "That is a 7", DIGITS, "A"),            # the authors' quirk: the article reads as A, strictly
    ("choice", "It is 7 or 1", DIGITS, ""),            # two options named: none
    ("choice", "I see nothing", DIGITS, ""),
    ("choice", "", DIGITS, ""),
    ("choice", "the koala, surely", ("accordion", "koala"), "B"),
    ("choice", "koalas", ("accordion", "koala"), ""),  # whole words only
    ("classify", "It is a Koala.", ("koala", "toaster"), "koala"),
    ("classify", "banana", ("koala", "toaster"), ""),
    ("open", "It is 3.", (), "it is 3"),
])
def test_named_answer(task, reply, options, want):
    assert named_answer(task, reply, options) == want


@pytest.mark.parametrize("task, reply, ref, answer, options, want", [
    ("choice", "It must be two.", "C", "2", DIGITS, True),
    ("choice", "It must be three.", "C", "2", DIGITS, False),
    ("choice", "C", "C", "2", DIGITS, True),
    ("open", "It is the digit 3.", "3", "3", (), True),
    ("open", "It is 13.", "3", "3", (), False),           # whole words: 13 is not 3
    ("open", "a red car", "red car", "red car", (), True),
    ("open", "anything", None, None, (), None),           # no reference: no verdict
])
def test_content_correct(task, reply, ref, answer, options, want):
    assert content_correct(task, reply, ref, options, answer) is want


@pytest.mark.parametrize("task, before, after, options, want", [
    ("choice", "C", "C", DIGITS, "unchanged"),
    ("choice", "C", "C.", DIGITS, "unchanged"),
    ("choice", "It must be two.", "C", DIGITS, "format_only"),
    ("choice", "C", "It must be two.", DIGITS, "format_only"),
    ("choice", "It must be two.", "D", DIGITS, "answer_changed"),
    ("choice", "I see nothing", "D", DIGITS, "answer_changed"),     # naming nothing -> naming D
    ("choice", "I see nothing", "no idea", DIGITS, "unchanged"),
    ("open", "It is 3.", "3", (), "format_only"),
    ("open", "3", "it is 3", (), "format_only"),
    ("open", "3", "5", (), "answer_changed"),
    ("open", "3", "3.", (), "unchanged"),
])
def test_change(task, before, after, options, want):
    assert change(task, before, after, options) == want


def evals(phase, replies, items):
    out = []
    for it, reply in zip(items, replies):
        ref = it.reference
        e = ItemEval(it.id, "", reply, "", 1.0, 0.0, counts={}, reference=ref, entropy_paper=0.0,
                     named=named_answer(it.task, reply, it.options))
        e.greedy = extract_answer(it.task, reply, it.options)
        e.greedy_correct = e.greedy == ref
        e.content_correct = content_correct(it.task, reply, ref, it.options, it.answer)
        e.greedy_valid = is_valid(it.task, e.greedy, it.options)
        e.majority_correct, e.single_acc = False, 0.0
        out.append(e)
    return EvalResult(phase, out, summarize(out))


def test_run_summary_splits_the_strict_gain():
    """Four digits: two sentences that name the right digit become letters (format), one right letter
    becomes a wrong one (answer), one stays. strict 0.25 -> 0.5 = format +0.5 and answers -0.25."""
    items = [Item(f"{i}.png", None, "", "choice", DIGITS, answer=a) for i, a in enumerate("2352")]
    before = evals("before", ["It must be two.", "It is three", "F", "C"], items)
    for e, counts in zip(before.items, ({"C": 3, "x": 1}, {"D": 2}, {"F": 4}, {"C": 4})):
        e.counts = counts
    after = evals("after", ["C", "D", "E", "C"], items)
    m = run_summary(items, before, after)
    assert before.metrics["eval/greedy_acc"] == 0.5 and before.metrics["eval/content_acc"] == 1.0
    assert after.metrics["eval/greedy_acc"] == 0.75 and after.metrics["eval/content_acc"] == 0.75
    assert m["gain/strict"] == pytest.approx(0.25)
    assert m["gain/answers"] == pytest.approx(-0.25) and m["gain/format"] == pytest.approx(0.5)
    assert (m["changed/unchanged"], m["changed/format_only"], m["changed/answer_changed"]) == (0.25, 0.5, 0.25)
    # the base votes, valid only ("x" is not a letter): C 7 of 13, D 2, F 4
    assert vote_shares(items, before.items) == pytest.approx({"C": 7 / 13, "F": 4 / 13, "D": 2 / 13})
    assert m["votes/top_answer_share"] == pytest.approx(7 / 13)
    assert after.metrics["eval/top_answer_share"] == 0.5             # C on 2 of 4
    assert m["amplified/top_ratio"] == pytest.approx(0.5 / (7 / 13))
    assert gain_sentence(m) == "strict +25.0 points, of which reply format +50.0 and answers -25.0"


def test_amplified_needs_twice_the_votes_and_twice_chance():
    votes = {"J": 0.18, "B": 0.26, "E": 0.01}
    # J: 0.40 >= 2 x 0.18 and >= 2/10; B: 0.30 < 2 x 0.26; E: 0.15 < 2/10 although 15x its votes
    assert [a.answer for a in amplified({"J": 0.40, "B": 0.30, "E": 0.15}, votes, k=10)] == ["J"]
    assert amplified({"J": 0.35}, votes, k=10) == []
    assert "J" in str(amplified({"J": 0.40}, votes, k=10)[0])
    items = [Item("a.png", None, "", "choice", DIGITS)]
    before = EvalResult("before", [ItemEval("a.png", "J", "J", "J", 1.0, 0.0, {"J": 1, "B": 9})], {})
    after = EvalResult("after", [ItemEval("a.png", "J", "J", "J", 1.0, 0.0, {"J": 10}, named="J")], {})
    assert [a.answer for a in amplified_answers(items, before, after)] == ["J"]


def test_shares_ignore_replies_that_name_nothing():
    assert shares(["A", "", "A", "B"]) == pytest.approx({"A": 2 / 3, "B": 1 / 3})
    assert shares(["", ""]) == {}
