"""The live status line as a person reads it at each moment of a run: the part of the run it is in,
what happens now when the time left is not known yet, the model by the menu's name, the items by
their kind, a bar coloured by how the run ended and stopped where it did, and a refused run's
words about the results on the page."""
import re
from pathlib import Path

from PIL import Image

from ttrv_core import demos
from ttrv_core.app import live_run
from ttrv_core.app.live_run import LiveRun, display_name, noun, refusal, status_html
from ttrv_core.events import EvalResult, ItemEval, Progress, RunEnd, RunStart, StepEvent
from ttrv_core.inputs.dataset import Item

METRICS = {"answers/majority_share": .5, "answers/invalid": .25, "time/step_s": 1.0}


def ev(item_id):
    return ItemEval(item_id, "A", "A", "A", 0.5, 0.4, {"A": 2})


def items(n, ext=".png"):
    return [Item(f"{i}{ext}", Path(f"{i}{ext}"), "q") for i in range(n)]


def run_of(its, total=9, phases=("before", "train", "after")):
    run = LiveRun(its)
    run.feed(RunStart({}, len(its), [it.id for it in its], total, "all", phases=list(phases)))
    return run


def evaluated(run, phase, n):
    run.feed(EvalResult(phase, [ev(f"{i}.png") for i in range(n)], {}))


def test_after_the_evaluation_before_step_one_the_line_says_training_is_under_way():
    run = run_of(items(4))
    for i in (1, 2, 3, 4):
        run.feed(Progress("before", i, 4))
    run._pace["before"] = [(0.0, 0), (1.0, 4)]                   # 4 images in 1 s: a pace is known
    evaluated(run, "before", 4)
    text, frac, kind = run.status()
    assert text == "2/3 Training: step 1 of 9 under way · the time left is known after it"
    assert "steps done" not in text and "left for the evaluations" not in text
    assert kind == "info" and frac == 4 / (4 + 9 + 4)             # by the work done: the time left is unknown
    run.feed(StepEvent(1, 9, [], METRICS))
    assert run.status()[0].startswith("2/3 Training: 1 of 9 steps done · majority share 0.50")


def test_the_status_names_the_part_of_the_run():
    run = run_of(items(4))
    run.feed(Progress("before", 1, 4))
    assert run.status()[0].startswith("1/3 Evaluating the model before training: 1/4 images")
    evaluated(run, "before", 4)
    for step in range(1, 10):
        run.feed(StepEvent(step, 9, [], METRICS))
    run.feed(Progress("after", 2, 4))
    assert run.status()[0].startswith("3/3 Evaluating the adapted model: 2/4 images")
    resumed = run_of(items(4), phases=("train", "after"))        # no evaluation before: two parts
    assert resumed.status()[0].startswith("1/2 Training: step 1 of 9 under way")


def test_clips_are_counted_as_clips_and_a_mix_as_items(tmp_path):
    frames = [Image.new("RGB", (8, 8), (60 * i, 0, 0)) for i in range(3)]
    frames[0].save(tmp_path / "moving.gif", save_all=True, append_images=frames[1:])
    Image.new("RGB", (8, 8)).save(tmp_path / "still.gif")
    clips = [Item("a.mp4", Path("a.mp4"), "q"), Item("moving.gif", tmp_path / "moving.gif", "q")]
    still = Item("still.gif", tmp_path / "still.gif", "q")
    assert (noun(clips), noun(clips, 1), noun([still]), noun([still], 1), noun(clips + [still])) == \
        ("clips", "clip", "images", "image", "items")
    run = run_of(clips)
    run.feed(Progress("before", 1, 2))
    assert "1/2 clips" in run.status()[0] and "images" not in run.status()[0]
    evaluated(run, "before", 2)
    assert run.request_stop().startswith("Stopping training within one clip") and "all 2 clips" in run.stop_message()
    run = run_of(clips + [still])
    run.feed(RunEnd(stopped=True, seconds=1.0, summary={}))
    assert "no item evaluated" in run.outcome()[0]


def test_a_stopped_or_failed_run_has_its_own_colour_and_a_bar_where_it_ended():
    run = run_of(items(4), total=4)
    evaluated(run, "before", 4)
    run.feed(StepEvent(1, 4, [], METRICS))
    run.feed(RunEnd(stopped=True, seconds=1.0, summary={}))
    text, frac, kind = run.status()
    assert text.startswith("Stopped after step 1 of 4") and kind == "stopped" and frac == (4 + 1) / (4 + 4 + 4)
    assert "accent-color:#e07b24" in status_html(text, frac, kind) and 'value="0.4167"' in status_html(text, frac, kind)
    failed = run_of(items(4), total=4)
    failed.feed(Progress("before", 2, 4))
    failed.error = "boom"
    assert failed.status()[1:] == (2 / 12, "error")
    done = run_of(items(4), total=4)
    done.feed(RunEnd(stopped=False, seconds=1.0, summary={}))
    assert done.status()[1:] == (1.0, "done")
    colours = {k: re.search(r"accent-color:(#\w+)", status_html("", 0.5, k)).group(1) for k in live_run.COLORS}
    assert colours == live_run.COLORS and len(set(colours.values())) == 4   # info blue, done green, stopped, error


def test_the_model_is_named_as_the_menu_names_it_never_by_a_path():
    demo = demos.DEFAULT
    assert display_name(demo.model) == demo.label
    assert display_name("Qwen/Qwen2.5-VL-3B-Instruct") == "Qwen/Qwen2.5-VL-3B-Instruct"
    assert display_name("/srv/models/my-vlm") == "my-vlm"
    text = LiveRun([], model=demo.model).status()[0]
    assert text.startswith(f"Loading the model {demo.label} …") and str(demo.model) not in text


def test_a_refused_run_speaks_of_the_last_results_only_when_there_are_some():
    assert refusal("Settings: bad.", None) == "Settings: bad.\nNothing was run."
    empty = run_of(items(2))                                      # started, nothing evaluated: no results
    assert "last run" not in refusal("Settings: bad.", empty)
    evaluated(empty, "before", 2)
    assert refusal("Settings: bad.", empty).endswith("Nothing was run; the results below are still the last run's.")
