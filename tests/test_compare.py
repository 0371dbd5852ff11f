"""What TTRV changed, as the app shows it: strict and content accuracy side by side, the strict gain
split into its reply-format and answers parts, the label-free split per image (format only, answer
changed, unchanged) in the summary, the table and its filter; the answer-share chart, its warning
and the confusion heatmap. One small hand-made run, scored by the evaluation's own code."""
from pathlib import Path
from types import SimpleNamespace

import pytest

from ttrv_core.app import compare
from ttrv_core.events import EvalResult
from ttrv_core.inputs.dataset import Item
from ttrv_core.method import content
from ttrv_core.method.evaluate import _score, summarize

IMAGE = Path(__file__).resolve().parents[1] / "assets" / "examples" / "digits" / "digit_0000.png"
OPTIONS = ("0", "1", "2")
# file: (reference, greedy reply before, sampled votes before, greedy reply after)
RUN = {"i0": ("0", "It is 0.", ["A", "A", "It is zero."], "A"),        # a sentence -> the letter: format only
       "i1": ("1", "It must be one.", ["B", "C"], "B"),                # format only
       "i2": ("2", "C", ["C", "C"], "B"),                              # answer changed (to a wrong one)
       "i3": ("0", "A", ["A", "B"], "A"),                              # unchanged
       "i4": ("2", "It is two.", ["C", "no idea"], "I cannot tell.")}  # answer changed (to none)


def items(labeled=True):
    return [Item(f, IMAGE, "Which digit?", "choice", OPTIONS, ref if labeled else None)
            for f, (ref, *_) in RUN.items()]


def evaluation(phase, its, replies):
    """An EvalResult scored as evaluate.py scores a model's replies: {file: (greedy, votes)}."""
    evals = [_score(it, SimpleNamespace(texts=[greedy, *votes])) for it in its
             for greedy, votes in [replies[it.id]]]
    return EvalResult(phase, evals, summarize(evals))


def run(labeled=True, after=None):
    its = items(labeled)
    before = evaluation("before", its, {f: (b, votes) for f, (_, b, votes, _) in RUN.items()})
    after = evaluation("after", its, {f: ((after or {}).get(f, a), ["A"]) for f, (*_, a) in RUN.items()})
    return its, before, after


def test_the_summary_shows_content_accuracy_and_splits_the_gain():
    its, before, after = run()
    text = compare.summary(before, after, len(its), its)
    assert ("**What changed:** Strict accuracy rose from 0.400 to 0.600 (+20.0 points), of which reply format "
            "+60.0 and answers -40.0: more replies take the form the strict scoring reads (no valid answer 60% → "
            "20%), but the right answer is named less often (content accuracy 1.000 → 0.600).") in text
    assert "| strict accuracy (greedy) | 0.400 | **0.600** (+20.0 points) |" in text
    assert "| content accuracy (greedy) | 1.000 | **0.600** (-40.0 points) |" in text
    assert "| top answer share | 40% | **50%** (+10.0 points) |" in text
    assert "Content: the answer it names" in text                      # the two accuracies explained


def test_the_summary_splits_what_changed_per_image_without_labels():
    its, before, after = run(labeled=False)
    text = compare.summary(before, after, len(its), its)
    assert ("**Each image's greedy reply, before → after** (label-free, of 5): answer changed **2** (40%) · "
            "format only **2** (40%) · unchanged **1** (20%).") in text
    assert "content accuracy" not in text
    assert compare.verdict(before, after, its).startswith(
        "No answers were given, so accuracy is unknown; label-free, the greedy reply named another answer on 40% "
        "of the images and changed its form only on 40%; the votes agreed")


def test_the_changed_column_tells_format_only_from_answer_changed():
    its, before, after = run()
    heads, rows, _, _ = compare.table(its, before, after)
    changed = {r[heads.index("file")]: r[heads.index("changed")] for r in rows}
    assert changed == {"i0": "format only", "i1": "format only", "i2": "● answer changed", "i3": "",
                       "i4": "● answer changed"}


@pytest.mark.parametrize("only, files", [("answer_changed", ["i2", "i4"]), ("format_only", ["i0", "i1"]),
                                         ("unchanged", ["i3"]), ("all", list(RUN))])
def test_the_filter_shows_only_the_rows_of_one_kind_of_change(only, files):
    its, before, after = run()
    heads, rows, _, _ = compare.table(its, before, after, only=only)
    assert [r[heads.index("file")] for r in rows] == files
    assert heads == compare.table(its, before, after)[0]                # the same columns, filtered or not
    assert len(compare.table(its, before, None, only=only)[1]) == 5      # no after yet: nothing to filter by
    assert [v for _, v in compare.SHOW] == ["all", *sorted(content.CHANGES)]


def test_the_chart_has_three_series_per_answer():
    from ttrv_core.app import answer_plots
    its, before, after = run()
    fig = answer_plots.shares(its, before, after)
    bars = {t.name: t for t in fig.data if t.type == "bar"}
    assert list(bars) == ["before", "after", "base model's valid votes"]
    assert all(list(t.x) == ["A · 0", "B · 1", "C · 2"] for t in bars.values())
    assert list(bars["before"].y) == pytest.approx([.4, .2, .4])          # named answers: A A C ... of 5
    assert list(bars["after"].y) == pytest.approx([.5, .5, 0])           # 4 name one; "I cannot tell." none
    assert list(bars["base model's valid votes"].y) == pytest.approx([3 / 9, 2 / 9, 4 / 9])   # 9 valid votes
    assert fig.layout.shapes[0].y0 == pytest.approx(1 / 3) and fig.data[-1].name.startswith("1/K = 1/3")
    bars = [t.name for t in answer_plots.shares(its, before, None).data if t.type == "bar"]
    assert bars == ["before", "base model's valid votes"]                # no after yet


@pytest.mark.parametrize("after, amplified", [
    ({}, False),                                          # A and B on half the images each: under 2/K = 67%
    ({f: "B" for f in RUN}, True),                        # B on all: 4.5x its 22% of the votes, 3x chance
    ({"i0": "C", "i1": "C", "i3": "C"}, False),           # C on 3 of 4: over 2/K, under 2x its 44% of the votes
    ({f: "C" for f in RUN}, True),                        # C on all: over both
])
def test_the_warning_appears_exactly_when_an_answer_is_amplified(after, amplified):
    from ttrv_core.app import answer_plots
    its, before, after = run(after=after)
    got = compare.amplified(its, before, after)
    assert bool(got) == bool(content.amplified_answers(its, before, after)) == amplified
    assert got.count("⚠️") == len(content.amplified_answers(its, before, after))
    if "B" in got:
        assert got == ("⚠️ 'B · 1' is the answer on 100% of the images after adaptation, 4.5x its share of the base "
                       "model's valid votes (22%): TTRV rewards what the model already says most.")
        assert answer_plots.warnings(its, before, after)[0].startswith("'B · 1' is the answer on 100%")
    assert compare.amplified(its, before, None) == ""


def test_the_heatmap_cells_are_the_counts_and_the_rows_say_their_recall():
    from ttrv_core.app import answer_plots
    its, before, after = run()
    fig = answer_plots.confusion(its, before, after)
    shown, hidden = fig.data
    assert (shown.name, shown.visible, hidden.name, hidden.visible) == ("after", True, "before", False)
    assert list(shown.x) == ["A · 0", "B · 1", "C · 2", "(none)"]
    assert [list(r) for r in shown.z] == [[2, 0, 0, 0], [0, 1, 0, 0], [0, 1, 0, 1]]   # C: one B, one naming none
    assert [list(r) for r in hidden.z] == [[2, 0, 0, 0], [0, 1, 0, 0], [0, 0, 2, 0]]  # before: named right
    assert list(shown.y) == ["A · 0 · 1.00", "B · 1 · 1.00", "C · 2 · 0.00"]
    (menu,) = fig.layout.updatemenus
    before_button = next(b for b in menu.buttons if b.label == "before")
    assert before_button.args[0]["visible"] == [False, True]
    assert before_button.args[0]["y"][1] == ["A · 0 · 1.00", "B · 1 · 1.00", "C · 2 · 1.00"]
    assert [list(r) for r in answer_plots.confusion(its, before, None).data[0].z] == [list(r) for r in hidden.z]
    free = answer_plots.confusion(items(labeled=False), before, after)
    assert not free.data and "needs answers" in free.layout.annotations[0].text
