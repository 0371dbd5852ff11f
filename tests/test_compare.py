"""What TTRV changed, as the app shows it: strict and content accuracy side by side, the strict gain
split into its reply-format and answers parts, the label-free split per image (format only, answer
changed, unchanged) in the summary, the table and its filter; the answer-share chart, its warning
and the confusion heatmap. One small hand-made run, scored by the evaluation's own code."""
from pathlib import Path
from types import SimpleNamespace

import pytest

from ttrv_core.app import compare, image_table
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


def test_almost_no_valid_vote_is_said_first():
    """Votes that name no answer give the reward nothing to favour: the verdict opens with that, not with
    the votes agreeing more."""
    its = items()
    none = {f: ("I see the tower.", ["no idea", "not sure", "the tower"]) for f in RUN}
    before, after = evaluation("before", its, none), evaluation("after", its, {f: ("A", ["A"]) for f in RUN})
    assert before.metrics["eval/invalid"] == 1.0
    text = compare.summary(before, after, len(its), its)
    assert text.startswith("**What changed:** Almost no vote was a valid answer (100% of the base model's votes "
                           "named none): there was nothing for the reward to favour, so what moved is not learned "
                           "from votes that agree. Strict accuracy rose from 0.000 to 0.400")
    assert "| votes with no valid answer | 100% | **0%** (-100.0 points) |" in text
    _, before, after = run()                                             # 2 of 11 votes invalid: no such sentence
    assert before.metrics["eval/invalid"] < compare.NOTHING_VALID
    assert compare.verdict(before, after, its).startswith("Strict accuracy rose")


def test_the_changed_column_tells_format_only_from_answer_changed():
    its, before, after = run(labeled=False)
    heads, rows = image_table.table(its, before, after)
    changed = {r[heads.index("file")]: r[heads.index("changed")] for r in rows}
    assert changed == {"i0": "format only", "i1": "format only", "i2": "● answer changed", "i3": "",
                       "i4": "● answer changed"}


# i0 wrong -> right, i1 right -> wrong, i2 wrong -> another wrong, i3 the same, i4 the same answer in a sentence
BETTER_WORSE = ({"i0": ("B", ["A"]), "i1": ("B", ["A"]), "i2": ("A", ["A"]), "i3": ("A", ["A"]), "i4": ("C", ["A"])},
                {"i0": ("A", ["A"]), "i1": ("C", ["A"]), "i2": ("B", ["A"]), "i3": ("A", ["A"]),
                 "i4": ("It is two.", ["A"])})


def test_a_changed_answer_is_better_worse_or_other_where_answers_exist():
    for labeled, kinds in ((True, ["better", "worse", "other"]), (False, ["answer_changed"] * 3)):
        its = items(labeled)
        before, after = (evaluation(p, its, r) for p, r in zip(("before", "after"), BETTER_WORSE))
        heads, rows = image_table.table(its, before, after)
        changed = {r[heads.index("file")]: r[heads.index("changed")] for r in rows}
        assert changed == {"i0": image_table.CHANGED[kinds[0]], "i1": image_table.CHANGED[kinds[1]],
                           "i2": image_table.CHANGED[kinds[2]], "i3": "", "i4": "format only"}
    files = {only: [r[heads.index("file")] for r in image_table.table(items(), *(
        evaluation(p, items(), r) for p, r in zip(("before", "after"), BETTER_WORSE)), only=only)[1]]
        for only in ("better", "worse", "answer_changed")}
    assert files == {"better": ["i0"], "worse": ["i1"], "answer_changed": ["i0", "i1", "i2"]}
    free = image_table.table_html(its, before, after, only="better")         # the run without answers
    assert "need the answers" in free and "<table" not in free


@pytest.mark.parametrize("only, files", [("answer_changed", ["i2", "i4"]), ("format_only", ["i0", "i1"]),
                                         ("unchanged", ["i3"]), ("all", list(RUN)), ("worse", ["i2", "i4"]),
                                         ("better", [])])
def test_the_filter_shows_only_the_rows_of_one_kind_of_change(only, files):
    its, before, after = run()
    heads, rows = image_table.table(its, before, after, only=only)
    assert [r[heads.index("file")] for r in rows] == files
    assert heads == image_table.table(its, before, after)[0]            # the same columns, filtered or not
    assert len(image_table.table(its, before, None, only=only)[1]) == 5  # no after yet: nothing to filter by
    assert [v for _, v in image_table.SHOW] == ["all", "answer_changed", "better", "worse", "format_only",
                                                "unchanged"]


def test_every_row_shows_its_raw_reply_and_long_ones_whole_on_hover_or_tap():
    long = "A, I think, as the digit's shape is a single closed loop with nothing inside it."
    its, before, after = run(after={"i3": long})
    heads, rows = image_table.table(its, before, after)
    for r in rows:                                                      # "C" and "I cannot tell." too
        assert all('class="reply"' in r[heads.index(side)] for side in ("before", "after"))
    cell = rows[3][heads.index("after")]
    assert cell.count("single closed loop") == 3                      # cut in the summary; whole in title and body
    assert '<details class="reply" title="A, I think, as' in cell and "…”</summary>" in cell
    assert "“It must be one.”" in rows[1][heads.index("before")]


def test_two_replies_that_differ_never_look_the_same():
    """Long replies alike past the cut: the cells show where they part ways (the visible text differs)."""
    same = "The image shows a tall tower against the sky with some clouds around it and "
    its, before, after = run(after={"i4": same + "a bird."})
    before.items[4].greedy_text = same + "a plane."
    heads, rows = image_table.table(its, before, after)

    def shown(cell):
        return cell.split("<summary>")[1].split("</summary>")[0]
    b, a = shown(rows[4][heads.index("before")]), shown(rows[4][heads.index("after")])
    assert b != a and "plane" in b and "bird" in a


def test_the_page_table_keeps_to_a_phone_and_the_datas_order():
    its, before, after = run()
    page = image_table.table_html(its, before, after, ["i0"])
    css, body = page.split("</style>")
    phone = css.split(f"@media (max-width: {image_table.PHONE}px)")[1]
    assert "#compare .secondary {display: none}" in phone
    for head in ("file", "adapted on", "answer (evaluation only)", "majority share"):
        assert "secondary" in image_table.COLUMNS[head]
        assert f'<th class="{image_table.COLUMNS[head]}">{head}</th>' in body
    assert all("secondary" not in image_table.COLUMNS[h] for h in ("image", "before", "after", "changed"))
    assert [body.index(f'<td class="file secondary">{f}</td>') for f in RUN] == sorted(
        body.index(f'<td class="file secondary">{f}</td>') for f in RUN)   # all rows, in the data's order
    assert body.count("<tr>") == 1 + len(RUN)
    odd = Item("<b>x</b>.png", IMAGE, "Which digit?", "choice", OPTIONS, "0")
    _, ev_before, _ = run()
    ev_before.items[0].item_id = odd.id
    ev_before.items[0].greedy_text = "<script>alert(1)</script>"
    html_text = image_table.table_html([odd], ev_before, None)
    assert "<script>" not in html_text and "&lt;script&gt;" in html_text and "&lt;b&gt;x&lt;/b&gt;.png" in html_text


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
