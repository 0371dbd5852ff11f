"""The app over real HTTP: launch `demo` on a local port, drive it with gradio_client.

Uploads a handful of digit PNGs (plus one broken file) with a questions CSV,
runs a few steps on the bundled demo model, and checks the returned table,
plot data and downloads (the adapter's model card too); then the stop path, a
failing model and bad settings after a good run (the page keeps the good one),
own images with a typed question, out of memory mid-run, per-session state and
its clean-up, and the Spaces decorator.
"""
import csv
import html
import json
import os
import re
import shutil
import socket
import time
import zipfile
from pathlib import Path

import pytest

from ttrv_core.config import DEMO_MODEL

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "assets" / "examples" / "digits"
pytestmark = pytest.mark.skipif(not (Path(DEMO_MODEL) / "config.json").is_file() or not DIGITS.is_dir(),
                                reason="demo model / example set not built (python assets/build_demo_model.py)")

SHORT = dict(model=DEMO_MODEL, precision="auto", single=False, single_item=None, n_votes=8, n_train=4,
             temperature=1.0, max_steps=2, epochs=1, lr=2e-3, lora_r=4, alpha=0.75, beta=0.001, reward="ttrv",
             eval_votes=4, prompts_per_step=4)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_url():
    import app
    _, url, _ = app.demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True,
                                quiet=True, max_file_size=app.MAX_FILE_SIZE)   # as `python app.py` does
    yield url
    app.demo.close()


@pytest.fixture(scope="module")
def upload(tmp_path_factory) -> list[Path]:
    """6 example digits, their questions (with answers), and a broken image."""
    d = tmp_path_factory.mktemp("upload")
    with open(DIGITS / "questions.csv", newline="") as f:
        rows = list(csv.DictReader(f))[:6]
    for r in rows:
        shutil.copy(DIGITS / r["image"], d / r["image"])
    with open(d / "questions.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["image", "question", "answer"])
        w.writeheader()
        w.writerows(rows)
    (d / "broken.png").write_bytes(b"not a png")
    return sorted(d.iterdir())


def client(url):
    from gradio_client import Client
    return Client(url, verbose=False)


def run_args(files, **over):
    from gradio_client import handle_file
    return dict(source="My images", example=None, uploads=[handle_file(str(p)) for p in files], folder=None,
                question="", qfile=None, task="open", options="", custom="",
                hist_choice="the first image step 1 trains on") | SHORT | over


KEPT = {"__type__": "update"}   # an output the server left as it was (gr.skip)
KEPT_HTML = {"props": KEPT, **KEPT}   # the same, of an HTML output (the table)


def table_of(page: str) -> tuple[list[str], list[list[str]]]:
    """The comparison table's headers and rows of cells, read from its HTML (image_table.table_html)."""
    heads = re.findall(r'<th class="[^"]*">(.*?)</th>', page)
    body = page.split("<tbody>")[1] if "<tbody>" in page else ""
    return heads, [re.findall(r'<td class="[^"]*">(.*?)</td>', r, re.S) for r in body.split("<tr>")[1:]]


def files_of(result) -> list[Path]:
    """The downloads of a /run result (the File output, or its update with a label)."""
    files = result[6].get("value", result[6]) if isinstance(result[6], dict) else result[6]
    return [Path(f) for f in files or []]


def unpack(result):
    status, hist, ent, rew, acc, table, files, info, amplified, shares, confusion = result
    table = table.get("value", table) if isinstance(table, dict) else table  # an update carries the value inside
    files = files.get("value", files) if isinstance(files, dict) else files
    return dict(status=status, hist=json.loads(hist["plot"]), entropy=json.loads(ent["plot"]),
                reward=json.loads(rew["plot"]), accuracy=acc, table=table, files=[Path(f) for f in files],
                info=info, amplified=amplified, shares=json.loads(shares["plot"]),
                confusion=json.loads(confusion["plot"]))


def test_settings_reach_the_run(app_url, upload, monkeypatch):
    """The app's gradient-checkpointing choice and image-size limit are the run's (config.json),
    the LoRA alpha is the config's rule (2 x rank), both reach the model, and the run completes."""
    import app
    seen, real = {}, app.loading.load_policy

    def load(*a, **kw):
        pol = real(*a, **kw)
        seen.update(lora_alpha=a[4], max_pixels=pol.max_pixels)
        return pol

    monkeypatch.setattr(app.loading, "load_policy", load)
    args = run_args(upload, max_steps=1, gradient_checkpointing="mlp", max_pixels=32 * 32)
    out = unpack(client(app_url).predict(**args, api_name="/run"))
    assert 'data-kind="done"' in out["status"]
    config = json.loads(next(f for f in out["files"] if f.name == "config.json").read_text())["config"]
    assert config["gradient_checkpointing"] == "mlp"
    assert config["lora_alpha"] == 2 * SHORT["lora_r"] and config["max_pixels"] == 32 * 32
    assert seen == {"lora_alpha": 2 * SHORT["lora_r"], "max_pixels": 32 * 32}


def test_full_run_over_http(app_url, upload):
    c = client(app_url)
    out = unpack(c.predict(**run_args(upload), api_name="/run"))

    assert 'data-kind="done"' in out["status"] and "Done: 2 steps" in out["status"]
    assert "6 image(s) ready" in out["info"] and "used for evaluation only" in out["info"]
    assert "broken.png" in out["info"] and "cannot read image" in out["info"]   # shown, and the rest still ran
    assert "Skipped" in out["info"] and "the other images still run" in out["info"]

    headers, rows = table_of(out["table"])
    assert len(rows) == 6
    col = {h: i for i, h in enumerate(headers)}
    assert {"image", "file", "adapted on", "answer (evaluation only)", "before", "after", "majority share",
            "changed"} <= set(col)
    assert "question" not in col                                      # one question for all: said once
    assert all(r[col["image"]].startswith("<img src=\"data:image/") for r in rows)
    assert all(r[col["before"]] != "" and r[col["after"]] != "" for r in rows)
    assert all(("✓" in r[col["after"]]) != ("✗" in r[col["after"]]) for r in rows)   # correct or not, shown
    assert all(" → " in r[col["majority share"]] for r in rows)
    assert all(r[col["adapted on"]] == "●" for r in rows)             # 6 images: all adapted on
    assert "What changed:" in out["accuracy"] and "| strict accuracy (greedy) |" in out["accuracy"]
    assert "| content accuracy (greedy) |" in out["accuracy"] and "| invalid greedy replies |" in out["accuracy"]
    split = re.search(r"answer changed \*\*(\d+)\*\* \(\d+%\) · format only \*\*(\d+)\*\* \(\d+%\) · "
                      r"unchanged \*\*(\d+)\*\*", out["accuracy"])           # the label-free split, counted
    assert split and sum(map(int, split.groups())) == 6
    assert sum(r[col["changed"]] not in ("", "format only") for r in rows) == int(split[1])   # better, worse, other
    assert sum(r[col["changed"]] == "format only" for r in rows) == int(split[2])
    # the answer shares: before, after and the base model's votes; open answers: no confusion heatmap
    bars = [t for t in out["shares"]["data"] if t["type"] == "bar"]
    assert [t["name"] for t in bars] == ["before", "after", "base model's valid votes"]
    assert all(abs(sum(t["y"]) - 1) < 1e-6 for t in bars)
    assert "needs answers to multiple-choice" in out["confusion"]["layout"]["annotations"][0]["text"]
    assert out["amplified"].count("⚠️") == out["amplified"].count("is the answer on")
    # one click shows only the images whose answer changed; "all" brings the rest back
    only = table_of(c.predict(rows="answer_changed", api_name="/rows"))[1]
    assert len(only) == int(split[1]) and all(r[col["changed"]] != "" for r in only)
    assert len(table_of(c.predict(rows="all", api_name="/rows"))[1]) == 6

    # the histogram follows one image: before, the steps that sampled it, after; the latest shown
    hist = out["hist"]
    labels = [s["label"] for s in hist["layout"]["sliders"][0]["steps"]]
    assert labels[0] == "before" and labels[-1] == "after" and "step 1" in labels
    titles = [s["args"][1]["title.text"] for s in hist["layout"]["sliders"][0]["steps"]]
    assert len({t.split(": ")[1].split(",")[0] for t in titles}) == 1        # one image throughout
    shown = [t for t in hist["data"] if t["visible"]]
    assert len(shown) == 1 and sum(shown[0]["x"]) == pytest.approx(1.0)      # sideways bars: shares on x
    assert "green: the reference answer" in hist["layout"]["title"]["text"]   # the colours, explained
    # entropy: the mean line has one point per step; reward: accuracy and validity per step
    mean = next(t for t in out["entropy"]["data"] if t["name"] == "mean")
    assert mean["x"] == [1, 2] and all(0 <= y <= 1 for y in mean["y"])
    names = [t["name"] for t in out["reward"]["data"]]
    assert {"reward (mean)", "majority share", "votes with no valid answer", "accuracy: majority of the votes"} \
        <= set(names)

    names = {f.name: f for f in out["files"]}
    assert {"results.csv", "results.json", "adapter.zip", "events.jsonl"} <= set(names)
    with open(names["results.csv"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and all(r["adapted_on"] == "True" for r in rows)
    with zipfile.ZipFile(names["adapter.zip"]) as z:
        assert {"adapter_config.json", "adapter_model.safetensors", "README.md"} <= set(z.namelist())
        config = json.loads(z.read("adapter_config.json"))
        readme = z.read("README.md").decode()
    assert config["base_model_name_or_path"] == "assets/demo_model"        # not a path on the server
    assert str(ROOT) not in readme and "Base model: `assets/demo_model`" in readme
    assert "Which digit is shown in the image?" in readme and "Answer the question using a single word" in readme
    assert "| n_votes | 8 |" in readme and "| accuracy, greedy answer |" in readme

    # the histogram of one chosen image, redrawn from this session's run
    fig = json.loads(c.predict(choice="digit_0003.png", api_name="/histogram")["plot"])
    assert "digit_0003.png" in fig["layout"]["title"]["text"]


def test_stop_during_training_keeps_the_steps_and_evaluates(app_url, upload):
    c = client(app_url)
    job = c.submit(**run_args(upload, max_steps=500), api_name="/run")
    deadline = time.time() + 120
    while not any("1 of 500 steps done" in o[0] for o in job.outputs() if isinstance(o[0], str)):
        assert time.time() < deadline and not job.done(), "no step reported"
        time.sleep(0.05)
    said = c.predict(api_name="/stop")
    assert "Stopping training within one image" in said and "evaluated on all 6 images" in said
    out = unpack(job.result(timeout=120))

    assert 'data-kind="stopped"' in out["status"]
    steps = int(out["status"].split("Stopped after step ")[1].split(" of ")[0])
    assert 1 <= steps < 500 and "the adapted model was evaluated on all 6 images" in out["status"]
    headers, rows = table_of(out["table"])
    col = {h: i for i, h in enumerate(headers)}
    assert len(rows) == 6 and all(r[col["after"]] != "" for r in rows)   # the after-eval still ran
    names = {f.name: f for f in out["files"]}
    assert {"results.csv", "results.json", "adapter.zip", "events.jsonl"} <= set(names)
    assert "adapter_model.safetensors" in zipfile.ZipFile(names["adapter.zip"]).namelist()
    logged = [json.loads(line)["type"] for line in names["events.jsonl"].read_text().splitlines()]
    assert logged.count("step") == steps and logged[-1] == "run_end"


def test_single_example_mode_trains_on_one_image(app_url, upload):
    out = unpack(client(app_url).predict(**run_args(upload, single=True, single_item="digit_0002.png"),
                                         api_name="/run"))
    assert 'data-kind="done"' in out["status"]
    dots = next(t for t in out["entropy"]["data"] if t["name"] == "each image")
    assert set(dots["text"]) == {"digit_0002.png"}
    headers, rows = table_of(out["table"])
    col = headers.index("adapted on")
    assert len(rows) == 6                                               # evaluated on all
    assert [r[headers.index("file")] for r in rows if r[col]] == ["digit_0002.png"]


def test_a_failed_run_after_a_good_one_leaves_its_results(app_url, upload):
    """Bad settings, a model that does not load: an error, and every other output left as it was
    (the good run's plots, table and downloads stay on the page and in the session)."""
    c = client(app_url)
    good = unpack(c.predict(**run_args(upload, max_steps=1), api_name="/run"))
    assert 'data-kind="done"' in good["status"]
    for bad in (dict(n_votes=8, n_train=64), dict(model="other", custom="/nowhere/no-such-model"),
                dict(model="other", custom=""), dict(uploads=[], question="")):
        out = c.predict(**run_args(upload, max_steps=1, **bad), api_name="/run")
        status = out[0]
        assert 'data-kind="error"' in status and "the results below are still the last run" in status, bad
        assert "Traceback" not in status and "ttrv-app-" not in status
        assert all(o in (KEPT, KEPT_HTML) for o in out[1:7]), bad         # plots, summary, table, downloads kept
    # the session still draws the good run
    fig = json.loads(c.predict(choice="digit_0003.png", api_name="/histogram")["plot"])
    assert "digit_0003.png" in fig["layout"]["title"]["text"]
    assert 'data-kind="done"' in c.predict(**run_args(upload, max_steps=1), api_name="/run")[0]   # and runs on


def test_a_failing_model_gives_a_clear_error(app_url, upload):
    status = client(app_url).predict(**run_args(upload, model="other", custom="/nowhere/no-such-model"),
                                     api_name="/run")[0]
    assert 'data-kind="error"' in status and "Run failed" in status and "/nowhere/no-such-model" in status
    assert "no model folder" in status and "Traceback" not in status


def test_own_images_with_one_typed_question_run(app_url, upload):
    """No questions file, a question typed: that is enough (no mode to switch)."""
    pngs = [p for p in upload if p.suffix == ".png" and p.name != "broken.png"]
    c = client(app_url)
    info = c.predict(**{k: v for k, v in run_args(pngs, question="Which digit is this?").items()
                        if k in PREVIEW}, api_name="/preview")[0]
    assert "6 image(s) ready" in info and "your question, for every image" in info and "Nothing" not in info
    out = unpack(c.predict(**run_args(pngs, question="Which digit is this?"), api_name="/run"))
    assert 'data-kind="done"' in out["status"] and len(table_of(out["table"])[1]) == 6
    assert "accuracy is not available" in out["accuracy"] or "accuracy is unknown" in out["accuracy"]
    # with no question at all, the page says what to do, in one consistent message
    info = c.predict(**{k: v for k, v in run_args(pngs).items() if k in PREVIEW}, api_name="/preview")[0]
    assert "Nothing to run yet" in info and "type a question for all images" in info
    assert "still run" not in info and "preview" not in info


PREVIEW = ("source", "example", "uploads", "folder", "question", "qfile", "task", "options")


def test_messages_name_the_upload_or_the_setting_not_the_session_folder(app_url, upload, tmp_path):
    from gradio_client import handle_file
    empty = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty, "w") as z:
        z.writestr("notes.txt", "nothing here")
    c = client(app_url)
    pngs = [handle_file(str(p)) for p in upload if p.name != "broken.png" and p.suffix == ".png"]
    base = dict(source="My images", example=None, folder=None, question="Which digit?", qfile=None, options="")
    info = c.predict(uploads=[handle_file(str(empty))], task="open", **base, api_name="/preview")[0]
    assert "`empty.zip`: no images found" in info and "/tmp" not in info and "input" not in info
    info = c.predict(uploads=pngs, task="choice", **base, api_name="/preview")[0]
    assert "`options`: task 'choice' needs options" in info and "/tmp" not in info


def test_out_of_memory_mid_run_ends_with_a_message_and_keeps_the_results(app_url, upload, oom_in_step_2):
    """A (simulated) GPU OOM in step 2: what to lower, the before-evaluation in the table, step 1
    and the adapter in the downloads; the app then runs the next job normally."""
    c = client(app_url)
    out = unpack(c.predict(**run_args(upload, max_steps=3), api_name="/run"))
    assert 'data-kind="error"' in out["status"] and "Out of GPU memory while TTRV step 2" in out["status"]
    assert "votes per image N (n_votes) (now 8)" in out["status"] and "results so far (1 step(s))" in out["status"]
    assert "Traceback" not in out["status"]
    headers, rows = table_of(out["table"])
    assert len(rows) == 6 and all(r[headers.index("before")] != "" for r in rows)   # the before-evaluation is shown
    names = {f.name: f for f in out["files"]}
    assert {"results.csv", "adapter.zip", "events.jsonl", "error.log"} <= set(names)
    logged = [json.loads(line)["type"] for line in names["events.jsonl"].read_text().splitlines()]
    assert logged.count("step") == 1
    # the fixture fails the second step only: the next job runs normally
    assert 'data-kind="done"' in c.predict(**run_args(upload, max_steps=1), api_name="/run")[0]


def test_bad_settings_and_no_images_are_reported(app_url, upload):
    c = client(app_url)
    status = c.predict(**run_args(upload, n_train=16, n_votes=8), api_name="/run")[0]
    assert 'data-kind="error"' in status and "n_train" in status
    status = c.predict(**run_args([upload[0]], question=""), api_name="/run")[0]
    assert 'data-kind="error"' in status and "Nothing to run: questions: type a question" in status


def test_nothing_to_run_names_the_real_cause_not_the_images(app_url, upload, tmp_path):
    """Good images with the task on multiple choice and no options, or a questions file with a wrong
    column: the refusal (and the plan line's reason) names that, not 'no usable images'."""
    from gradio_client import handle_file
    c, images = client(app_url), [p for p in upload if p.suffix == ".png" and p.name != "broken.png"]
    status = html.unescape(c.predict(**run_args(images, question="Which digit?", task="choice"), api_name="/run")[0])
    assert "task 'choice' needs options" in status and "usable" not in status
    bad = tmp_path / "q.csv"
    bad.write_text("image,questn\n" + "".join(f"{p.name},Which digit?\n" for p in images))
    status = html.unescape(c.predict(**run_args(images, qfile=handle_file(str(bad))), api_name="/run")[0])
    assert "q.csv: no column 'question'" in status and "usable" not in status
    import app
    sess = app.sessions.Session(tmp_path / "s")
    app.preview(sess, "My images", None, [str(p) for p in images], None, "Which digit?", None, "choice", "", "", "")
    line = app.plan(dict(state=sess, model=app.DEMO.model, custom="", single=False, single_item=None))[0]
    assert "nothing to run yet: options: task 'choice' needs options" in line and "usable" not in line


def test_a_questions_file_left_from_my_images_does_not_break_an_example_set(app_url, tmp_path):
    """Switching back to the bundled set with one's own questions file still in its field: the set runs on
    its own questions, all its images (the file names none of them)."""
    from gradio_client import handle_file
    mine = tmp_path / "questions.csv"
    mine.write_text("image,question\nmy_cat.jpg,What animal is this?\nmy_dog.jpg,What animal is this?\n")
    out = client(app_url).predict(**run_args([], source="Bundled example set", example=app_example(),
                                             qfile=handle_file(str(mine)), max_steps=1), api_name="/run")
    assert 'data-kind="done"' in out[0], out[0]
    assert "240 image(s) ready" in unpack(out)["info"]


def app_example():
    import app
    return app.DEMO.examples


def test_sessions_keep_their_own_results(app_url, upload):
    a, b = client(app_url), client(app_url)
    a.predict(**run_args(upload, max_steps=1), api_name="/run")
    fig_a = json.loads(a.predict(choice="the first image step 1 trains on", api_name="/histogram")["plot"])
    fig_b = json.loads(b.predict(choice="the first image step 1 trains on", api_name="/histogram")["plot"])
    assert len(fig_a["data"]) >= 2 and fig_b["data"] == []


def test_example_set_preview(app_url):
    info = client(app_url).predict(source="Bundled example set", example="digits", uploads=None, folder=None,
                                   question="", qfile=None, task="open", options="", api_name="/preview")[0]
    assert "240 image(s) ready" in info and "used for evaluation only" in info and "questions.csv" in info


def test_a_zip_of_a_folder_or_a_folder_upload_is_read_with_its_questions_file(app_url, upload, tmp_path):
    from gradio_client import handle_file
    zpath = tmp_path / "set.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        for p in upload:
            z.write(p, f"my_set/{p.name}")           # one top folder, as zipping a folder makes it
    c = client(app_url)
    common = dict(source="My images", example=None, question="", qfile=None, task="open", options="",
                  api_name="/preview")
    info, single_item, _, gallery = c.predict(uploads=[handle_file(str(zpath))], folder=None, **common)
    assert len(gallery.get("value", gallery) if isinstance(gallery, dict) else gallery) == 6   # shown before Run
    assert "6 image(s) ready" in info and "broken.png" in info
    info = c.predict(uploads=None, folder=[handle_file(str(p)) for p in upload], **common)[0]
    assert "6 image(s) ready" in info
    info = c.predict(uploads=[handle_file(str(p)) for p in upload if p.suffix == ".png"], folder=None,
                     **common | {"question": "Which digit?"})[0]
    assert "6 image(s) ready" in info and "evaluation only" not in info   # no answers without the file


def test_videos_upload_beside_images(app_url, tmp_path):
    """The upload box takes .mp4 / .mkv / animated .gif; a broken video is named, the others run."""
    import video_files
    from gradio_client import handle_file
    from PIL import Image
    files = [video_files.clip(tmp_path / "a.mp4", n=4), video_files.clip(tmp_path / "b.mkv", n=4),
             tmp_path / "c.gif", tmp_path / "d.png", tmp_path / "bad.mov"]
    files[2].write_bytes(video_files.gif_bytes())
    Image.new("RGB", (16, 16), "red").save(files[3])
    files[4].write_bytes(b"not a video")
    info = client(app_url).predict(source="My images", example=None, uploads=[handle_file(str(p)) for p in files],
                                   folder=None, question="What happens?", qfile=None, task="open", options="",
                                   api_name="/preview")[0]
    assert "4 image(s) ready** (3 of them video" in info and "bad.mov`: cannot read video: not a video file" in info


def test_the_spaces_gpu_decorator_wraps_the_gpu_work():
    """With the `spaces` package installed (tests/requirements.txt), the model load and the run go
    through spaces.GPU; off a Space it returns the function itself, and the runs above went through it."""
    import spaces
    from spaces.zero.decorator import _GPU

    import app
    assert app.gpu.func is _GPU and app.gpu.keywords["duration"] == 600
    def work():
        yield 1
    assert app.gpu(work) is work                                   # a no-op off Spaces (no ZeroGPU here)
    assert spaces.GPU is not None and app.gpu_job.__name__ == "gpu_job"


def _root(c):
    import app
    return app.sessions.folder(app.SESSIONS, c.session_hash)


def test_session_files_go_when_the_session_ends(app_url, upload, monkeypatch):
    """Each session writes under its own folder; gradio deleting the state (expiry, or an hour after
    the tab closed) removes it through delete_callback, and closing the tab (unload) at once."""
    import httpx

    import app
    monkeypatch.setenv("GRADIO_HEARTBEAT_INTERVAL", "0.2")   # notice a closed tab quickly
    a, b = client(app_url), client(app_url)
    for c in (a, b):
        assert 'data-kind="done"' in c.predict(**run_args(upload, max_steps=1), api_name="/run")[0]
    ra, rb = _root(a), _root(b)
    assert ra != rb and ra.parent == rb.parent == app.SESSIONS
    assert any(ra.rglob("results.csv")) and any(rb.rglob("results.csv"))
    app.demo.state_holder.delete_state(a.session_hash)          # what gradio does when the state expires
    assert not ra.exists() and rb.exists()
    # a browser tab holds a heartbeat stream open; closing the tab ends it and fires demo.unload
    with httpx.stream("GET", f"{app_url}gradio_api/heartbeat/{b.session_hash}", timeout=10) as r:
        next(r.iter_lines())
    deadline = time.time() + 10
    while rb.exists() and time.time() < deadline:
        time.sleep(0.1)
    assert not rb.exists()


def test_start_up_sweeps_folders_of_dead_app_processes(tmp_path):
    import subprocess
    import sys

    from ttrv_core.app import sessions
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale, live = tmp_path / f"ttrv-app-{dead.pid}-x", tmp_path / f"ttrv-app-{os.getpid()}-y"
    for d in (stale, live):
        (d / "session" / "run-1").mkdir(parents=True)
    assert sessions.sweep_stale(tmp_path) == [stale]
    assert not stale.exists() and live.exists()


def test_several_questions_files_are_named(tmp_path):
    """Images with two questions files and no questions.csv: the message names both and says what
    to do; a typed question is then asked of every image, and the files are said to be unused."""
    from PIL import Image

    from ttrv_core import inputs
    for name in ("a.png", "b.png"):
        Image.new("RGB", (16, 16)).save(tmp_path / name)
    (tmp_path / "train.csv").write_text("image,question\na.png,Which digit?\n")
    (tmp_path / "test.jsonl").write_text('{"image": "b.png", "question": "Which digit?"}\n')
    got = inputs.collect([str(p) for p in tmp_path.iterdir()], tmp_path / "work")
    ds = inputs.load(got).dataset
    msg = " ".join(map(str, ds.problems))
    assert not ds.items and "several questions files" in msg and "test.jsonl" in msg and "train.csv" in msg
    ds = inputs.load(got, question="Which digit?").dataset
    assert len(ds.items) == 2 and "not used: one question for all images" in " ".join(map(str, ds.problems))
