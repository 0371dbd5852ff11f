"""Figures are pure functions of events: tables of small synthetic runs."""
import json

import pytest

from ttrv_core.app import plots
from ttrv_core.events import EvalResult, ItemEval, ItemVotes, StepEvent, to_json
from ttrv_core.inputs.dataset import Item


def votes(item, counts, ent=0.5):
    n = sum(counts.values())
    top = max(counts, key=counts.get)
    return ItemVotes(item, counts, top, counts[top] / n, ent, counts[top] / n)


def ev(phase, counts_by_item, ref=None):
    items = [ItemEval(i, max(c, key=c.get), "", max(c, key=c.get), 0.5, 0.4, c, (ref or {}).get(i))
             for i, c in counts_by_item.items()]
    m = {"eval/entropy": 0.4, "eval/majority_share": 0.5}
    if ref:
        m["eval/greedy_acc"] = 0.5
    return EvalResult(phase, items, m)


STEPS = [
    StepEvent(1, 3, [votes("a", {"1": 3, "7": 1}), votes("b", {"2": 4})], {"reward/mean": .5, "answers/entropy": .4,
                                                                          "answers/majority_share": .8}),
    StepEvent(2, 3, [votes("b", {"2": 2, "": 2}), votes("c", {"3": 4})], {"reward/mean": .6, "answers/entropy": .3,
                                                                          "answers/majority_share": .9}),
    StepEvent(3, 3, [votes("a", {"1": 4})], {"reward/mean": .7, "answers/entropy": .0,
                                             "answers/majority_share": 1.}),
]
BEFORE = ev("before", {"a": {"7": 3, "1": 1}, "b": {"2": 4}, "c": {"3": 4}}, {"a": "1", "b": "2", "c": "3"})
AFTER = ev("after", {"a": {"1": 4}, "b": {"2": 4}, "c": {"3": 4}}, {"a": "1", "b": "2", "c": "3"})


@pytest.mark.parametrize("item, before, after, want", [
    ("a", None, None, [("step 1", "a"), ("step 3", "a")]),
    ("a", BEFORE, AFTER, [("before", "a"), ("step 1", "a"), ("step 3", "a"), ("after", "a")]),
    ("c", BEFORE, None, [("before", "c"), ("step 2", "c")]),
    (plots.FOLLOW, None, None, [("step 1", "a"), ("step 2", "b"), ("step 3", "a")]),
    (plots.FOLLOW, BEFORE, AFTER, [("before", "a"), ("step 1", "a"), ("step 2", "b"), ("step 3", "a"), ("after", "a")]),
    ("zzz", BEFORE, AFTER, []),
])
def test_snapshots(item, before, after, want):
    got = plots.snapshots(STEPS, item, before, after)
    assert [(s.label, s.item_id) for s in got] == want


def test_snapshots_before_any_step_shows_the_eval():
    got = plots.snapshots([], plots.FOLLOW, BEFORE)
    assert [(s.label, s.item_id, s.counts) for s in got] == [("before", "a", {"7": 3, "1": 1})]


def test_single_example_mode_keeps_one_snapshot_per_step():
    step = StepEvent(1, 1, [votes("a", {"1": 4})] * 4)
    assert [s.label for s in plots.snapshots([step], "a")] == ["step 1"]


def test_histogram_slider_shows_the_latest_and_marks_the_reference():
    snaps = plots.snapshots(STEPS, "a", BEFORE, AFTER)
    fig = plots.histogram(snaps)
    assert [t.visible for t in fig.data] == [False, False, False, True]
    assert len(fig.layout.sliders[0].steps) == 4 and fig.layout.sliders[0].active == 3
    before = fig.data[0]
    assert list(before.y) == ["1", "7"] and [round(x, 2) for x in before.x] == [0.25, 0.75]
    assert list(before.marker.color) == [plots.GREEN, plots.BLUE]      # "1" is the reference
    assert "a, after" in fig.layout.title.text
    # moving the slider shows exactly one snapshot and retitles the figure
    args = fig.layout.sliders[0].steps[1].args
    assert args[0]["visible"] == [False, True, False, False] and "step 1" in args[1]["title.text"]


def test_histogram_names_empty_answers_and_handles_nothing():
    fig = plots.histogram(plots.snapshots(STEPS, "b"))
    assert "(empty)" in list(fig.data[-1].y)
    assert len(plots.histogram([]).data) == 0


def test_entropy_has_a_dot_per_image_and_eval_points():
    fig = plots.entropy(STEPS, BEFORE, AFTER)
    dots, mean, evals = fig.data
    assert list(dots.x) == [1, 1, 2, 2, 3] and list(dots.text) == ["a", "b", "b", "c", "a"]
    assert list(mean.y) == [.4, .3, .0]
    assert list(evals.x) == [0, 4] and list(evals.y) == [0.4, 0.4]


def test_reward_shows_accuracy_only_where_answers_exist():
    names = [t.name for t in plots.reward(STEPS).data]
    assert names == ["reward (mean)", "majority share"]
    labeled = [StepEvent(1, 1, [], {"reward/mean": .5, "answers/majority_share": .6, "acc/majority": 1.,
                                    "acc/single": .7})]
    names = [t.name for t in plots.reward(labeled, BEFORE, AFTER).data]
    assert names == ["reward (mean)", "majority share", "accuracy: majority of the votes",
                     "accuracy: single vote", "accuracy: greedy answer (eval)"]


def test_empty_run_gives_placeholder_figures():
    for fig in (plots.entropy([]), plots.reward([])):
        assert len(fig.data) == 0 and "waiting" in fig.layout.annotations[0].text


def test_load_events_reads_a_run_log_back(tmp_path):
    with open(tmp_path / "events.jsonl", "w") as f:
        for e in [BEFORE, *STEPS, AFTER]:
            f.write(json.dumps(to_json(e)) + "\n")
        f.write(json.dumps({"type": "run_end", "stopped": False}) + "\n")
    steps, evals = plots.load_events(tmp_path)
    assert steps == STEPS and evals["before"] == BEFORE and evals["after"] == AFTER
    fig = plots.histogram(plots.snapshots(steps, "a", evals["before"], evals["after"]))
    assert fig.to_json() == plots.histogram(plots.snapshots(STEPS, "a", BEFORE, AFTER)).to_json()
    assert [list(t.y) for t in fig.data] == [["1", "7"], ["1", "7"], ["1"], ["1"]]


def test_histogram_keeps_the_top_answers_and_pools_the_rest():
    counts = {f"answer number {i:02d} that is long": 20 - i for i in range(15)}
    fig = plots.histogram([plots.Snapshot("step 1", "a", counts)], top=5)
    bars = fig.data[0]
    assert len(bars.y) == 6 and bars.y[-1] == plots.OTHER
    assert sum(bars.x) == pytest.approx(1.0) and bars.marker.color[-1] == plots.GREY
    assert all(len(y) <= plots.LABEL for y in bars.y) and len(set(bars.y)) == 6   # short and unique labels
    assert bars.customdata[0][1] == "answer number 00 that is long"      # full answer on hover


# --------------------------------------------------------------------------- read on a phone (a plot ~380 px wide)

LONG_Q = "Which of these objects is shown in the picture? Answer with the letter of the option only, please."
PHOTO = "holidays/2024/IMG_20240611_174501.jpg"


def test_histogram_title_names_the_image_its_question_and_the_moment():
    items = [Item(PHOTO, None, LONG_Q, "choice", ("cat", "tower"), "B"), Item("b", None, "What is it?")]
    step = StepEvent(1, 1, [votes(PHOTO, {"B": 3, "A": 1}), votes("b", {"x": 2})])
    fig = plots.histogram(plots.snapshots([step], PHOTO, items=items), title="Votes")
    head, question = fig.layout.title.text.split("<br>")[:2]
    assert head.startswith("Votes: …") and "IMG_20240611_174501.jpg" in head and "step 1" in head
    assert len(head) <= 40 + plots.ID                                     # one line of a phone
    assert LONG_Q[:40] in question and question.endswith("…”</span>")   # cut to a phone's line...
    assert f"{PHOTO}: {LONG_Q}" in fig.data[0].customdata[0][2].replace("<br>", " ")  # ...whole on hover
    fig = plots.histogram(plots.snapshots([StepEvent(1, 1, [votes("b", {"x": 2})])], items=items))
    assert "“What is it?”" in fig.layout.title.text and fig.data[0].customdata[0][2] == ""  # nothing cut
    # the slider retitles: each snapshot its own image and question
    two = [StepEvent(1, 2, [votes(PHOTO, {"B": 4})]), StepEvent(2, 2, [votes("b", {"x": 2})])]
    fig = plots.histogram(plots.snapshots(two, plots.FOLLOW, items=items))
    titles = [st.args[1]["title.text"] for st in fig.layout.sliders[0].steps]
    assert "IMG_20240611" in titles[0] and "Which of these" in titles[0] and "b, step 2" in titles[1]
    assert "What is it?" in titles[1]


def test_long_invalid_replies_read_level_short_and_marked():
    replies = {"IT SHOWS THE NUMBER SEVEN ON A WHITE BACKGROUND": 3, "I CANNOT TELL WHAT IS IN THE IMAGE": 2,
               "IT SHOWS THE NUMBER ONE": 1, "B": 2}
    fig = plots.histogram([plots.Snapshot("after", "a.png", replies, "B", "choice", ("cat", "tower"))])
    bars = fig.data[0]
    assert bars.orientation == "h" and fig.layout.yaxis.tickangle == 0 and fig.layout.yaxis.automargin
    assert all(len(label) <= plots.LABEL for label in bars.y) and len(set(bars.y)) == 4
    assert sum(label.startswith("✗ ") for label in bars.y) == 3 and "B · tower" in bars.y
    assert {c[1] for c in bars.customdata} == set(replies)               # the whole reply on hover
    assert fig.layout.height >= 24 * 4                                   # a line a bar


def test_the_reward_plot_gives_each_unit_its_own_named_axis():
    steps = [StepEvent(1, 1, [], {"reward/mean": -.2, "answers/majority_share": .6, "answers/invalid": .25,
                                  "acc/majority": 1., "acc/single": .7})]
    fig = plots.reward(steps, *(EvalResult(p, [], {"eval/greedy_acc": .5, "eval/greedy_invalid": .3})
                                for p in ("before", "after")))
    axis = {t.name: fig.layout[t.yaxis.replace("y", "yaxis")] for t in fig.data}
    assert len(axis) == 7 and axis["reward (mean)"].title.text == "reward"
    shares = [name for name in axis if name != "reward (mean)"]
    assert all(axis[n].title.text == "share" and axis[n].tickformat == ".0%" for n in shares)
    assert max(axis[shares[0]].range) <= 1.05 and axis["reward (mean)"].range is None  # 0..1; the reward its own
    assert "value" not in {a.title.text for a in axis.values()}


@pytest.mark.parametrize("last", [1, 2, 4, 5, 9, 10, 17, 20, 44, 99, 300])
def test_the_step_axis_reads_at_phone_width(last):
    steps = [StepEvent(k, last, [votes("a", {"1": 2})], {"reward/mean": .5, "answers/entropy": .1})
             for k in range(1, last + 1)]
    for fig in (plots.entropy(steps, BEFORE, AFTER), plots.reward(steps, BEFORE, AFTER)):
        ax = fig.layout.xaxis if fig.layout.xaxis.showticklabels is not False else fig.layout["xaxis2"]
        assert ax.tickangle == 0 and ax.automargin                       # level: plotly never turns them on end
        ticks, text = list(ax.tickvals), list(ax.ticktext)
        assert text[0] == "before" and text[-1] == "after" and text[1].startswith("step ")
        assert len(ticks) <= 6 and all(len(t) <= 8 for t in text)
        width = ax.range[1] - ax.range[0]                               # ~300 px on a phone: >= 25 px apart
        assert min(b - a for a, b in zip(ticks, ticks[1:])) >= width / 12
