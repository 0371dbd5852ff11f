"""Figures are pure functions of events: tables of small synthetic runs."""
import json

import pytest

from ttrv_core.app import plots
from ttrv_core.events import EvalResult, ItemEval, ItemVotes, StepEvent, to_json


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
    assert list(before.x) == ["1", "7"] and [round(y, 2) for y in before.y] == [0.25, 0.75]
    assert list(before.marker.color) == [plots.GREEN, plots.BLUE]      # "1" is the reference
    assert "a, after" in fig.layout.title.text
    # moving the slider shows exactly one snapshot and retitles the figure
    args = fig.layout.sliders[0].steps[1].args
    assert args[0]["visible"] == [False, True, False, False] and "step 1" in args[1]["title.text"]


def test_histogram_names_empty_answers_and_handles_nothing():
    fig = plots.histogram(plots.snapshots(STEPS, "b"))
    assert "(empty)" in list(fig.data[-1].x)
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
    assert [list(t.x) for t in fig.data] == [["1", "7"], ["1", "7"], ["1"], ["1"]]


def test_histogram_keeps_the_top_answers_and_pools_the_rest():
    counts = {f"answer number {i:02d} that is long": 20 - i for i in range(15)}
    fig = plots.histogram([plots.Snapshot("step 1", "a", counts)], top=5)
    bars = fig.data[0]
    assert len(bars.x) == 6 and bars.x[-1] == plots.OTHER
    assert sum(bars.y) == pytest.approx(1.0) and bars.marker.color[-1] == plots.GREY
    assert all(len(x) <= 19 for x in bars.x) and len(set(bars.x)) == 6   # short and unique labels
    assert bars.customdata[0][1] == "answer number 00 that is long"      # full answer on hover
