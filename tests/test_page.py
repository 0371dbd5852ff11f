"""The app's words and choices, without a browser: the model menu (every bundled demo that exists,
then the presets), what to expect, the plan before Run, the before/after sentence and table, the
live status and what Stop says, the histogram's labels and colours, the downloads."""
import json
import zipfile
from pathlib import Path

import pytest

from ttrv_core import demos
from ttrv_core.app import background, compare, image_table, live_run, model_menu, plots, sessions
from ttrv_core.config import DEMO_MODEL, TTRVConfig
from ttrv_core.events import EvalResult, ItemEval, Progress, RunEnd, RunStart, StepEvent
from ttrv_core.inputs.dataset import Item
from ttrv_core.method.evaluate import summarize
from ttrv_core.model import families

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- the model menu

def test_the_menu_lists_every_demo_that_exists_then_the_presets(monkeypatch, tmp_path):
    gone = demos.Demo("gone", "Demo: not built yet", "no_such_folder", "digits", "open", expect="x")
    monkeypatch.setattr(demos, "DEMOS", (gone, *demos.DEMOS))
    monkeypatch.setattr(demos, "DEFAULT", gone)
    values = [v for _, v in model_menu.choices()]
    built = [d.model for d in demos.DEMOS if (Path(d.model) / "config.json").is_file()]
    assert DEMO_MODEL in built and values[:len(built)] == built and gone.model not in values
    assert values[len(built):-1] == [p.model_id for p in families.PRESETS.values()] and values[-1] == model_menu.OTHER
    assert model_menu.default_demo() == next(d for d in demos.DEMOS if d.model in built)   # the missing default falls back
    assert model_menu.OTHER not in [v for _, v in model_menu.choices(public=True)]


def test_what_to_expect_and_the_warning_for_a_demo_on_other_images():
    demo = demos.by_model(DEMO_MODEL)
    assert model_menu.about(DEMO_MODEL).startswith("**What to expect:**")
    assert model_menu.warning(DEMO_MODEL, own_images=False, example=demo.examples) == ""
    for own, example in ((True, demo.examples), (False, "some_other_set")):
        assert "answers a photo of an astronaut with '9'" in model_menu.warning(DEMO_MODEL, own, example)
    assert model_menu.warning("Qwen/Qwen2.5-VL-3B-Instruct", True, None) == ""
    for mid in [p.model_id for p in families.PRESETS.values()] + ["someone/new-model"]:
        text = model_menu.about(mid)
        assert "What to expect" in text and ".md" not in text and "bench/" not in text   # no repository paths


def test_the_page_shows_no_repository_path():
    import app
    page = json.dumps(app.demo.config, default=str)
    assert "RESULTS.md" not in page and "bench/" not in page and "ttrv_core/" not in page


def test_the_plan_says_how_many_images_are_adapted_on():
    assert "adapt on **20 of the 240**" in model_menu.plan(240, TTRVConfig()) and "6 steps of 8" in model_menu.plan(240, TTRVConfig())
    assert "adapt on **all 12**" in model_menu.plan(12, TTRVConfig()) and "4 steps of 8" in model_menu.plan(12, TTRVConfig())
    assert "**one image**, a.png (4 copies)" in model_menu.plan(12, TTRVConfig(), single="a.png")
    assert "nothing to run yet" in model_menu.plan(0, TTRVConfig())


# --------------------------------------------------------------------------- before and after

CHOICE = Item("a.png", ROOT / "assets" / "examples" / "digits" / "digit_0000.png", "Which digit?", "choice",
              ("3", "7", "2"), "2")


def ev(item_id, greedy, text, valid=True, correct=None, share=0.5, counts=None):
    e = ItemEval(item_id, greedy, text, greedy, share, 0.4, counts or {greedy: 2}, None if correct is None else "C",
                 correct, correct, 0.5 if correct is not None else None, entropy_paper=0.4)
    e.greedy_valid = valid
    return e


def result(phase, evals):
    return EvalResult(phase, evals, summarize(evals))


def test_verdict_says_what_changed_in_one_sentence():
    def m(acc, share, inv=0.0):
        return {"eval/greedy_acc": acc, "eval/majority_share": share, "eval/greedy_invalid": inv}
    up = compare.verdict(EvalResult("before", [], m(.60, .5, .3)), EvalResult("after", [], m(.80, .7, .05)))
    assert up == ("Greedy accuracy rose from 0.600 to 0.800 (+20.0 points), as greedy replies with no valid answer "
                  "went from 30% to 5%.")
    flat = compare.verdict(EvalResult("before", [], m(.688, .64)), EvalResult("after", [], m(.690, .64)))
    assert flat.startswith("Greedy accuracy stayed about the same (0.688 → 0.690, +0.2 points)")
    free = compare.verdict(EvalResult("before", [], {"eval/majority_share": .5}),
                           EvalResult("after", [], {"eval/majority_share": .7}))
    assert free.startswith("No answers were given, so accuracy is unknown; label-free, the votes agreed more")
    assert compare.verdict(EvalResult("before", [], m(.6, .5)), None) == ""


def test_a_stopped_after_evaluation_is_compared_on_the_same_images():
    items = [Item(f"{i}.png", CHOICE.path, "q") for i in range(4)]
    before = result("before", [ev(f"{i}.png", "A", "A", correct=i < 2) for i in range(4)])
    after = result("after", [ev("0.png", "A", "A", correct=True)])
    text = compare.summary(before, after, len(items))
    assert "Compared on the 1 of 4 images evaluated after training" in text
    assert "| strict accuracy (greedy) | 1.000 |" in text                 # before, on that one image


def test_the_table_shows_option_text_raw_replies_and_invalid_replies():
    before = result("before", [ev("a.png", "sure, the digit is", "Sure, the digit is 2.", valid=False,
                                  correct=False)])
    after = result("after", [ev("a.png", "C", "C", correct=True, share=0.9)])
    heads, rows = image_table.table([CHOICE], before, after, ["a.png"])
    row = dict(zip(heads, rows[0]))
    assert row["answer (evaluation only)"] == "C · 2"
    assert "not a valid answer</span> <span" in row["before"]
    assert '<div class="reply">“Sure, the digit is 2.”' in row["before"]
    assert "<b>C · 2</b>" in row["after"] and "✓" in row["after"] and '<div class="reply">“C”</div>' in row["after"]
    assert row["adapted on"] == "●" and row["majority share"] == "0.50 → 0.90"
    assert row["changed"] == "format only"                              # the sentence named 2 already
    assert image_table.table([CHOICE], None, None)[1] == []              # nothing evaluated: an empty table
    assert "<table" not in image_table.table_html([CHOICE], None, None)


def test_an_invalid_reply_that_is_its_own_answer_still_shows_the_reply():
    """The extracted answer of an invalid reply can be the reply itself: the cell still says what it was."""
    before = result("before", [ev("a.png", "a tower", "a tower", valid=False, correct=False)])
    heads, rows = image_table.table([CHOICE], before, None)
    assert "not a valid answer" in rows[0][heads.index("before")] and "“a tower”" in rows[0][heads.index("before")]


def test_the_histogram_labels_letters_with_their_options_and_marks_invalid_replies():
    snap = plots.Snapshot("step 1", "a.png", {"C": 5, "B": 2, "it is two": 1}, "C", "choice", ("3", "7", "2"))
    fig = plots.histogram([snap])
    bars = fig.data[0]
    assert list(bars.y) == ["C · 2", "B · 7", "✗ it is two"]
    assert list(bars.marker.color) == [plots.GREEN, plots.BLUE, plots.RED]
    key = fig.layout.title.text
    assert "green: the reference answer" in key and "red ✗: not a valid answer" in key


def test_the_reward_plot_shows_votes_with_no_valid_answer():
    steps = [StepEvent(1, 1, [], {"reward/mean": .5, "answers/majority_share": .6, "answers/invalid": .25})]
    fig = plots.reward(steps, EvalResult("before", [], {"eval/greedy_invalid": .3}),
                       EvalResult("after", [], {"eval/greedy_invalid": .1}))
    names = [t.name for t in fig.data]
    assert "votes with no valid answer" in names and "greedy replies with no valid answer (eval)" in names


# --------------------------------------------------------------------------- live

def started(n=240, total=6, train=20):
    run = live_run.LiveRun([Item(f"{i}.png", CHOICE.path, "q") for i in range(n)])
    run.feed(RunStart({}, n, [f"{i}.png" for i in range(train)], total, "all"))
    return run


def test_status_says_what_is_left_and_what_is_not_known_yet():
    run = live_run.LiveRun([])
    assert run.status()[0].startswith("Loading the model")
    run = started()
    run.feed(Progress("before", 24, 240))
    run._pace["before"] = [(0.0, 0), (1.0, 24)]                            # as if 24 images took 1 s
    text = run.status()[0]
    assert "Evaluating the model before training: 24/240 images" in text
    # 216 images before and 240 after, at 24 per second
    assert "about 19 s left for the evaluations; the training time is known after step 1" in text


def test_stop_says_what_it_will_do_in_each_phase():
    run = live_run.LiveRun([])
    assert "a model load cannot be interrupted" in run.request_stop()
    run = started()
    assert "nothing will be trained, so there will be no adapter" in run.request_stop()
    run = started()
    run.feed(EvalResult("before", [ev(f"{i}.png", "A", "A") for i in range(240)], {}))
    assert "Stopping training within one image" in run.request_stop() and "press Stop again" in run.stop_message()
    run.feed(Progress("after", 1, 240))
    assert "Training stopped; evaluating the adapted model" in run.stop_message()
    assert "Stopping the evaluation after training" in run.request_stop()


def test_the_outcome_is_true_to_where_the_run_stopped():
    run = started()
    run.feed(EvalResult("before", [ev("0.png", "A", "A")], {}))
    run.feed(RunEnd(stopped=True, seconds=1.0, summary={}))
    msg, kind = run.outcome()
    assert kind == "stopped" and msg == ("Stopped before training (1 of 240 images evaluated): nothing was trained, "
                                         "so there is no adapter.")
    run = started(n=2)
    run.feed(StepEvent(1, 6, [], {}))
    run.feed(EvalResult("after", [ev("0.png", "A", "A")], {}))
    run.feed(RunEnd(stopped=True, seconds=1.0, summary={}))
    msg, _ = run.outcome()
    assert msg.startswith("Stopped after step 1 of 6; the evaluation after training was stopped at 1 of 2 images")


def test_redraws_are_rationed_and_the_first_votes_drawn_at_once():
    run = started()
    first = run.take([Progress("before", 1, 240, latest=ev("0.png", "A", "A"))])
    assert first.figures == "votes" and not first.table
    assert run.take([Progress("before", 12, 240)]).figures == ""            # within DRAW_EVERY_S
    assert run.take([EvalResult("before", [], {})]) == live_run.Redraw(False, "all", True)
    hist, _, _ = run.figures(live_run.FIRST)
    assert "0.png" in hist.layout.title.text                             # the image evaluated last, before step 1
    run = started()
    run.feed(EvalResult("before", [ev("0.png", "A", "A")], {}))           # cut short by a stop: still "before"
    assert run.phase == "before" and run.request_stop().startswith("Stopping the evaluation before training")


def test_background_hands_over_events_and_raises_the_streams_error():
    def stream():
        yield RunStart({}, 1, ["a"], 1, "all")
        yield StepEvent(1, 1, [], {})
        raise ValueError("boom")
    got = []
    with pytest.raises(ValueError, match="boom"):
        for batch in background.background(stream(), every_s=0.05):
            got += batch
    assert [type(e).__name__ for e in got] == ["RunStart", "StepEvent"]      # the events before the error too


# --------------------------------------------------------------------------- downloads

def test_downloads_zip_the_adapter_with_a_public_base_model_name(tmp_path):
    run = tmp_path / "out"
    (run / "adapter").mkdir(parents=True)
    (run / "adapter" / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": DEMO_MODEL}))
    (run / "adapter" / "README.md").write_text("card")
    (run / "events.jsonl").write_text("")                                   # empty: not offered
    (run / "results.csv").write_text("item\n")
    names = [Path(p).name for p in sessions.downloads(run)]
    assert names == [sessions.ALL, "results.csv", "adapter.zip"]
    with zipfile.ZipFile(run / "adapter.zip") as z:
        assert json.loads(z.read("adapter_config.json"))["base_model_name_or_path"] == "assets/demo_model"
        assert z.read("README.md") == b"card"
    assert sessions.downloads(None) == [] and sessions.downloads(tmp_path / "never") == []


def test_download_all_holds_every_file_and_the_adapter_as_a_folder(tmp_path):
    run = tmp_path / "out"
    (run / "adapter").mkdir(parents=True)
    (run / "adapter" / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": DEMO_MODEL}))
    (run / "adapter" / "README.md").write_text("card")
    for name in ("results.csv", "results.json", "events.jsonl", "config.json"):
        (run / name).write_text("x\n")
    first, *rest = sessions.downloads(run)
    assert Path(first).name == sessions.ALL                                 # listed first
    with zipfile.ZipFile(first) as z:
        assert sorted(z.namelist()) == ["adapter/README.md", "adapter/adapter_config.json", "config.json",
                                        "events.jsonl", "results.csv", "results.json"]
        assert json.loads(z.read("adapter/adapter_config.json"))["base_model_name_or_path"] == "assets/demo_model"
    assert sessions.contents(run) == ("all in one zip, or one by one: results (CSV, JSON), the LoRA adapter with "
                                      "its model card, the run log, the settings")
    (run / "problems.txt").write_text("a.png: unreadable\n")               # a file newer than the zip: made again
    with zipfile.ZipFile(sessions.downloads(run)[0]) as z:
        assert "problems.txt" in z.namelist()


def test_the_downloads_say_why_there_is_no_adapter(tmp_path):
    run = tmp_path / "out"
    run.mkdir()
    (run / "results.csv").write_text("x\n")
    (run / "events.jsonl").write_text('{"phase": "before"}\n' + json.dumps(
        {"stopped": True, "seconds": 1.0, "summary": {}, "guard": None, "problems": [], "type": "run_end"}) + "\n")
    said = sessions.contents(run)
    assert said == "all in one zip, or one by one: results (CSV), the run log; no adapter: the run stopped before training"
    (run / "error.log").write_text("Traceback\n")
    assert sessions.contents(run).endswith("no adapter: the run failed before training")
    assert sessions.contents(None) == "" and sessions.contents(tmp_path / "never") == ""

# --------------------------------------------------------------------------- what a preset needs, and the GPU default

def machine(monkeypatch, tmp_path, gpu=None, cached=(), offline=False):
    """This machine as the menu sees it, with no network: its GPU (a name, or None), the hub models whose
    weights are in the Hugging Face cache, HF_HUB_OFFLINE; any attempt to reach the hub fails the test."""
    import socket

    import huggingface_hub
    import torch

    def from_cache(repo_id, filename, **_):
        if repo_id not in cached:
            return None
        snap = tmp_path / repo_id.replace("/", "--") / "snapshots" / "abc"
        snap.mkdir(parents=True, exist_ok=True)
        (snap / "model.safetensors").write_bytes(b"")
        (snap / filename).write_text("{}")
        return str(snap / filename)

    def no_network(*a, **k):
        raise AssertionError("the menu reached for the network")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu is not None)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *_: gpu)
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", from_cache)
    monkeypatch.setattr(socket, "create_connection", no_network)
    if offline:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


def test_a_gpu_with_the_weights_opens_on_internvl3_2b_and_the_photos(monkeypatch, tmp_path):
    internvl = families.PRESETS["InternVL3 2B"].model_id
    assert model_menu.REAL_DEFAULT == internvl == "OpenGVLab/InternVL3-2B-hf"
    machine(monkeypatch, tmp_path, gpu="NVIDIA H100 80GB HBM3", cached=(internvl,), offline=True)
    assert model_menu.default_model() == internvl
    assert model_menu.opens_on(internvl) == ("photos", "choice")
    assert (ROOT / "assets" / "examples" / "photos" / "questions.csv").is_file()
    assert "**Before Run:**" not in model_menu.about(internvl)          # cached, and a GPU: nothing missing
    machine(monkeypatch, tmp_path, gpu="NVIDIA H100 80GB HBM3", offline=True)
    assert model_menu.default_model() == model_menu.default_demo().model   # not cached, offline: the demo
    machine(monkeypatch, tmp_path, gpu=None, cached=(internvl,))
    assert model_menu.default_model() == model_menu.default_demo().model   # no GPU: the demo
    demo = model_menu.default_demo()
    assert model_menu.opens_on(demo.model) == (demo.examples, demo.task) and model_menu.opens_on("x/y") is None


def test_the_internvl_expectation_quotes_the_authors_numbers_as_theirs():
    assert ("In the authors' logs (Singh et al. 2025) InternVL3-2B moves 0.679 -> 0.963 on ImageNet-A, with a "
            "third of its replies invalid before; not measured by us (needs a GPU and the Hub)"
            in model_menu.about(model_menu.REAL_DEFAULT))
    assert "0.964 -> 0.965" in model_menu.about("Qwen/Qwen2.5-VL-3B-Instruct")


def test_a_preset_says_before_run_that_it_needs_a_download_or_a_gpu(monkeypatch, tmp_path):
    qwen = "Qwen/Qwen2.5-VL-3B-Instruct"
    machine(monkeypatch, tmp_path, gpu=None, offline=True)            # offline on a CPU: it would fail after Run
    text = model_menu.about(qwen)
    assert "**Before Run:**" in text and "HF_HUB_OFFLINE is set" in text and "Run will fail" in text
    assert "**it needs a GPU**" in text and "on this CPU it would load in full precision" in text
    assert "on an H100" in text and "figures from an H100, not from this machine" in text
    machine(monkeypatch, tmp_path, gpu=None)                          # online: the download is said, not tried
    assert "**Run downloads them first**" in model_menu.about(qwen)
    assert "only known when Run tries" in model_menu.about(qwen)
    machine(monkeypatch, tmp_path, gpu="NVIDIA A10G", cached=(qwen,))  # another GPU: its figures are not ours
    text = model_menu.about(qwen)
    assert "**Before Run:**" not in text and "not from this machine (NVIDIA A10G)" in text
    machine(monkeypatch, tmp_path, gpu="NVIDIA H100 80GB HBM3", cached=(qwen,))
    assert "not from this machine" not in model_menu.about(qwen)
    machine(monkeypatch, tmp_path, gpu=None, offline=True)            # bundled demos and local folders need neither
    assert "Before Run" not in model_menu.about(DEMO_MODEL) and "Before Run" not in model_menu.about(str(tmp_path))
    typed = model_menu.about("someone/new-model")                     # a typed hub id: the download, not the GPU
    assert "HF_HUB_OFFLINE is set" in typed and "needs a GPU" not in typed


def test_a_model_brings_its_images_task_and_settings():
    """Picking a demo brings its own example set, task and settings; a real preset the bundled photos
    (multiple choice) and the paper's settings; either only while the images come from an example set;
    a typed model brings nothing."""
    from ttrv_core.app import form_fields
    from ttrv_core.config import TTRVConfig
    sets = ["digits", "digits_choice", "photos"]
    demo = demos.DEFAULT
    example, task, values = form_fields.brought(demo.model, form_fields.EXAMPLE_SET, sets)
    assert (example, task) == (demo.examples, demo.task) and values == form_fields.values(
        TTRVConfig().with_(**demo.settings))
    example, task, values = form_fields.brought(model_menu.REAL_DEFAULT, form_fields.EXAMPLE_SET, sets)
    assert (example, task, values) == ("photos", "choice", form_fields.values(TTRVConfig()))
    assert form_fields.brought(model_menu.REAL_DEFAULT, form_fields.MY_IMAGES, sets)[:2] == (None, None)
    assert form_fields.brought("someone/their-model", form_fields.EXAMPLE_SET, sets) == (None, None, None)
