"""Free-form answers: open answers scored by exact match, token F1 and ROUGE-1,
yes/no answers by exact match only; the soft reward in a run; the soft votes in the histogram."""
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from ttrv_core.app import compare, plots
from ttrv_core.events import EvalResult, eval_from_json, to_json
from ttrv_core.inputs.dataset import Item
from ttrv_core.method.evaluate import _score, summarize


def scored(answer, greedy, votes=("x",) * 3, task="open", options=()):
    item = Item(f"{answer}-{greedy}.png", Path("unused.png"), "Where is the lesion?", task, options, answer)
    return _score(item, SimpleNamespace(texts=[greedy, *votes]))


# reference, greedy reply, closed?, exact, token F1, ROUGE-1 (hand values)
TABLE = [
    ("left lung", "The left lung.", False, True, 1.0, 2 * (2 / 3) / (2 / 3 + 1)),  # ROUGE keeps 'the'
    ("left lung", "left lower lobe", False, False, 2 / 5, 2 / 5),
    ("Left upper lobe", "upper lobe", False, False, 2 * 2 / 5, 2 * 2 / 5),
    ("two nodules", "2 nodules", False, True, 1.0, 0.5),                            # 'two' vs '2' in ROUGE
    ("yes", "Yes.", True, True, None, None),
    ("no", "yes", True, False, None, None),
]


@pytest.mark.parametrize("ref,greedy,closed,exact,f1,r1", TABLE, ids=[f"{r}|{g}" for r, g, *_ in TABLE])
def test_open_item_scores(ref, greedy, closed, exact, f1, r1):
    ev = scored(ref, greedy)
    assert ev.closed is closed and ev.greedy_correct is exact
    assert ev.f1 == (None if f1 is None else pytest.approx(f1))
    assert ev.rouge1 == (None if r1 is None else pytest.approx(r1))


def test_summary_adds_open_and_closed_keys_and_keeps_the_others():
    evs = [scored(r, g) for r, g, *_ in TABLE]
    m = summarize(evs)
    opened = TABLE[:4]
    assert m["eval/open_items"] == 4 and m["eval/closed_items"] == 2
    assert m["eval/open_exact"] == pytest.approx(2 / 4)
    assert m["eval/open_f1"] == pytest.approx(sum(t[4] for t in opened) / 4)
    assert m["eval/open_rouge1"] == pytest.approx(sum(t[5] for t in opened) / 4)
    assert m["eval/closed_exact"] == pytest.approx(1 / 2)
    assert m["eval/greedy_acc"] == pytest.approx(3 / 6)   # the task-independent keys: over every labeled item
    old = {k: v for k, v in m.items() if not k.startswith(("eval/open_", "eval/closed_"))}
    for e in evs:
        e.closed = e.f1 = e.rouge1 = None
    assert summarize(evs) == old


def test_choice_and_unlabeled_items_get_no_open_keys():
    choice = scored("B", "B", ("A", "B", "B"), task="choice", options=("cat", "dog"))
    unlabeled = scored(None, "left lung")
    assert choice.closed is None and choice.f1 is None and unlabeled.f1 is None
    assert not any(k.startswith(("eval/open_", "eval/closed_")) for k in summarize([choice, unlabeled]))


def test_open_scores_survive_the_log_and_show_in_the_summary_table():
    evs = [scored(r, g) for r, g, *_ in TABLE]
    res = EvalResult("before", evs, summarize(evs))
    back = eval_from_json(json.loads(json.dumps(to_json(res))))
    assert [e.f1 for e in back.items] == [e.f1 for e in evs]
    table = compare.summary(res, res, len(evs))
    assert "| token F1 (open answers) |" in table and "| ROUGE-1 (open answers) |" in table


def test_histogram_shows_soft_votes_for_open_answers():
    """Open answers: beside each bar (votes of one normalised form), its soft vote share."""
    snap = plots.Snapshot("step 1", "a.png", {"left lung": 2, "lung": 1, "heart": 1}, task="open")
    fig = plots.histogram([snap, snap])
    bars = [t for t in fig.data if t.type == "bar"]
    soft = [t for t in fig.data if t.type == "scatter"]
    assert len(bars) == len(soft) == 2
    assert dict(zip(soft[-1].y, soft[-1].x)) == pytest.approx(
        {"left lung": (2 + 2 / 3) / 4, "lung": (4 / 3 + 1) / 4, "heart": 1 / 4})
    assert list(soft[-1].y) == list(bars[-1].y)
    assert [s["args"][0]["visible"] for s in fig.layout.sliders[0].steps] == [
        [True, True, False, False], [False, False, True, True]]
    choice = plots.histogram([plots.Snapshot("step 1", "a.png", {"A": 3, "B": 1}, task="choice", options=("x", "y"))])
    assert [t.type for t in choice.data] == ["bar"]
    words = plots.histogram([plots.Snapshot("step 1", "a.png", {"7": 3, "1": 1}, task="open")])   # soft = votes
    assert [t.type for t in words.data] == ["bar"] and "soft" not in words.layout.title.text


def test_cli_runs_the_soft_reward_and_reports_open_scores(tmp_path):
    """--reward soft end to end on the open-answer demo (digits: one-word answers, where the soft
    reward is the frequency reward): the run's config names it, the summary has the open keys."""
    import csv
    import shutil

    from ttrv_core.cli import main
    from ttrv_core.demos import by_key
    examples, d = by_key("open").example_dir, tmp_path / "imgs"
    d.mkdir()
    rows = list(csv.DictReader(open(examples / "questions.csv")))[:3]
    for r in rows:
        shutil.copy(examples / r["image"], d / r["image"])
    with open(d / "questions.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["image", "question", "answer"])
        w.writeheader()
        w.writerows({k: r[k] for k in ("image", "question", "answer")} for r in rows)
    out = tmp_path / "run"
    assert main(["--demo", "open", "--images", str(d), "--out", str(out), "--reward", "soft", "--steps", "1",
                 "--votes", "4", "--train", "2", "--prompts-per-step", "2"]) == 0
    assert json.load(open(out / "config.json"))["config"]["reward"] == "soft"
    summary = json.load(open(out / "summary.json"))
    for phase in ("before", "after"):
        assert summary[f"{phase}/open_items"] == 3 and 0 <= summary[f"{phase}/open_f1"] <= 1
        assert 0 <= summary[f"{phase}/open_rouge1"] <= 1
        assert summary[f"{phase}/open_exact"] == summary[f"{phase}/greedy_acc"]  # no yes/no reference here
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert len(rows) == 3 and all(0 <= float(r[f"{p}_{k}"]) <= 1 for r in rows
                                  for p in ("before", "after") for k in ("f1", "rouge1"))
    assert sum(float(r["after_f1"]) for r in rows) / 3 == pytest.approx(summary["after/open_f1"], abs=1e-3)


def test_the_app_form_and_the_cli_offer_the_soft_reward():
    from ttrv_core import cli
    from ttrv_core.app import form_fields
    from ttrv_core.config import TTRVConfig
    assert form_fields.config("m", reward="soft", n_votes=8, n_train=4).reward == "soft"
    assert "soft" in TTRVConfig.settings()["reward"].help
    action = next(a for a in cli.parser()._actions if a.dest == "reward")
    assert "soft" in action.choices
    with pytest.raises(ValueError, match="reward must be one of"):
        TTRVConfig(reward="softer")
