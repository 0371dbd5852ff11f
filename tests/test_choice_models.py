"""The multiple-choice demo models (assets/build_choice_model.py): their sets, their cards, and the
behaviour their build criteria promise, measured here through the engine on validation images."""
import csv
import statistics
import sys
from pathlib import Path

import pytest
from PIL import Image

from ttrv_core.config import TTRVConfig
from ttrv_core.demos import by_key
from ttrv_core.inputs.dataset import load_dataset
from ttrv_core.method.evaluate import evaluate, summarize
from ttrv_core.model.loading import load_policy
from ttrv_core.tasks import answers, prompts

ROOT = Path(__file__).resolve().parents[1]
VALIDATION = ROOT / "assets" / "validation" / "digits_choice"


def _rows(folder: Path) -> list[dict]:
    with open(folder / "questions.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_example_set_is_the_held_out_digits_as_the_papers_multiple_choice():
    demo = by_key("format")
    rows = _rows(demo.example_dir)
    assert len(rows) == 240 and demo.task == "choice"
    assert {r["options"] for r in rows} == {"|".join(str(d) for d in range(10))}
    assert {r["question"] for r in rows} == {prompts.DEFAULT_CHOICE_QUESTION}
    # the same held-out images as the open-answer set (never trained on by any build), same answers
    open_rows = _rows(by_key("open").example_dir)
    assert [r["answer"] for r in rows] == [r["answer"] for r in open_rows]
    for r, o in list(zip(rows, open_rows))[::40]:
        a, b = Image.open(demo.example_dir / r["image"]), Image.open(by_key("open").example_dir / o["image"])
        assert a.tobytes() == b.tobytes()
    items = load_dataset(demo.example_dir, questions_file=demo.example_dir / "questions.csv", task="choice").items
    assert len(items) == 240
    assert items[0].prompt == prompts.build_prompt("choice", "", [str(d) for d in range(10)])
    assert {it.reference for it in items} == set("ABCDEFGHIJ")


def test_validation_set_is_disjoint_from_the_example_set():
    val = {Image.open(VALIDATION / r["image"]).tobytes() for r in _rows(VALIDATION)}
    held = {Image.open(by_key("format").example_dir / r["image"]).tobytes()
            for r in _rows(by_key("format").example_dir)}
    assert len(_rows(VALIDATION)) == 200
    assert len(val & held) < 5   # a few 8x8 digits are pixel-identical by chance; the files differ


@pytest.mark.parametrize("key", ["format", "clean"])
def test_model_card_states_its_criteria_before_any_ttrv_run(key):
    card = (Path(by_key(key).model) / "README.md").read_text()
    assert "No checkpoint, mix or prompt was chosen by a TTRV outcome" in card
    assert "greedy invalid share" in card and "valid sampled replies" in card
    assert ("the letter with probability" in card) == (key == "format")


def test_sentences_of_the_build_never_cast_a_valid_vote():
    sys.path.insert(0, str(ROOT / "assets"))
    import build_choice_model as build
    build.check_sentences()   # asserts: no option letter, and every sentence starts with "It"
    reply = build.sentence(build.SENTENCES[0], 7)
    assert answers.extract_answer("choice", reply, build.OPTIONS) == reply.upper().rstrip(".")


@pytest.fixture(scope="module")
def val_items():
    return load_dataset(VALIDATION, questions_file=VALIDATION / "questions.csv", task="choice").items


@pytest.mark.parametrize("key", ["format", "clean"])
def test_base_models_behave_as_their_criteria_say(key, val_items, one_thread):
    """On the validation split (200 images) through the engine's own evaluation, with maj@32 as the
    build criteria state it: the format model's greedy reply is often no option while its valid samples
    are mostly right, and maj@32 beats greedy by at least 0.15; the control's reply is nearly always valid.

    Measured spread (fp32 on the CPU, this build; this test evaluates with seed 0). Greedy
    decoding does not depend on the seed: greedy_acc 0.345, greedy_invalid 0.655. Over 40 sampling
    streams (evaluation seeds 0-39): maj_acc - greedy_acc 0.303, sd 0.014 (0.26 to 0.335; 0.295 at
    seed 0); valid_acc 0.744, sd 0.010 (0.719 to 0.766). Over the images (bootstrap resamples of the
    200, with a stream drawn from the 40; 4,000 resamples): the margin's sd 0.036, 95% of it within
    0.235-0.375, none under 0.15; valid_acc's sd 0.020, 2.4% of resamples under 0.7. On 40 images the
    margin's sd is 0.074, and the split's first 40, harder than the rest, gave 0.125-0.275 by stream:
    why the 40-image, 16-vote check this replaced failed by stream. So the margin is asserted with a
    stated confidence, on these images: its one-sided 99% lower bound, margin - 2.33 x the standard
    error of the per-image differences (maj right) - (greedy right), is at least 0.15 (0.22 at seed 0;
    0.19-0.26 over the 40 streams). Control over 10 streams: valid_acc 0.91-0.92, greedy_invalid
    0.005, invalid 0.025-0.029."""
    policy = load_policy(by_key(key).model, "fp32", "cpu", seed=0)
    evals = list(evaluate(policy, val_items, TTRVConfig(eval_votes=32), seed=0))
    m = summarize(evals)
    assert m["eval/valid_acc"] >= 0.7
    if key == "format":
        assert 0.25 <= m["eval/greedy_invalid"] <= 0.9
        gains = [float(e.majority_correct) - float(e.greedy_correct) for e in evals]
        margin = statistics.mean(gains)
        assert margin == pytest.approx(m["eval/maj_acc"] - m["eval/greedy_acc"])
        assert margin - 2.33 * statistics.stdev(gains) / len(gains) ** 0.5 >= 0.15, margin
    else:
        assert m["eval/greedy_invalid"] <= 0.05 and m["eval/invalid"] <= 0.05
