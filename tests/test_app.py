"""The app over real HTTP: launch `demo` on a local port, drive it with gradio_client.

Uploads a handful of digit PNGs (plus one broken file) with a questions CSV,
runs a few steps on the bundled demo model, and checks the returned table,
plot data and downloads; then the stop path, a failing model (and a good run
after it), out of memory mid-run, per-session state and its clean-up.
"""
import csv
import json
import os
import shutil
import socket
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace

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
                qmode="A questions file", question="", qfile=None, task="open", options="",
                hist_choice="(each step's first image)") | SHORT | over


def unpack(result):
    status, hist, ent, rew, acc, table, files, info = result
    table = table.get("value", table)  # an update carries the value inside
    return dict(status=status, hist=json.loads(hist["plot"]), entropy=json.loads(ent["plot"]),
                reward=json.loads(rew["plot"]), accuracy=acc, table=table, files=[Path(f) for f in files],
                info=info)


def test_settings_reach_the_run(app_url, upload, monkeypatch):
    """The app's gradient-checkpointing choice and image-size limit are the run's (config.json),
    the LoRA alpha is the config's rule (2 x rank), both reach the model, and the run completes."""
    import app
    seen, real = {}, app.models.load_policy

    def load(*a, **kw):
        pol = real(*a, **kw)
        seen.update(lora_alpha=a[4], max_pixels=pol.max_pixels)
        return pol

    monkeypatch.setattr(app.models, "load_policy", load)
    args = run_args(upload, max_steps=1, checkpointing="mlp", max_pixels=32 * 32)
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

    rows, headers = out["table"]["data"], out["table"]["headers"]
    assert len(rows) == 6
    col = {h: i for i, h in enumerate(headers)}
    assert {"image", "question", "before", "after", "changed", "majority share before",
            "majority share after", "correct before", "correct after"} <= set(col)
    assert all(r[col["image"]].startswith("<img src=\"data:image/") for r in rows)
    assert all(r[col["before"]] != "" and r[col["after"]] != "" for r in rows)
    assert all(0 < float(r[col["majority share after"]]) <= 1 for r in rows)
    assert all(r[col["correct after"]] in ("✓", "✗") for r in rows)
    assert all(r[col["adapted on"]] == "●" for r in rows)             # 6 images: all adapted on
    assert "Accuracy" in out["accuracy"] and "→" in out["accuracy"]

    # the histogram: a slider over before, steps 1-2, after; the latest shown; shares sum to 1
    hist = out["hist"]
    labels = [s["label"] for s in hist["layout"]["sliders"][0]["steps"]]
    assert labels[0] == "before" and labels[-1] == "after" and "step 1" in labels
    shown = [t for t in hist["data"] if t["visible"]]
    assert len(shown) == 1 and sum(shown[0]["y"]) == pytest.approx(1.0)
    # entropy: the mean line has one point per step; reward: accuracy per step (answers were given)
    mean = next(t for t in out["entropy"]["data"] if t["name"] == "mean")
    assert mean["x"] == [1, 2] and all(0 <= y <= 1 for y in mean["y"])
    names = [t["name"] for t in out["reward"]["data"]]
    assert "reward (mean)" in names and "majority share" in names and "accuracy: majority of the votes" in names

    names = {f.name: f for f in out["files"]}
    assert {"results.csv", "results.json", "adapter.zip", "events.jsonl"} <= set(names)
    with open(names["results.csv"], newline="") as f:
        assert len(list(csv.DictReader(f))) == 6
    assert "adapter_config.json" in zipfile.ZipFile(names["adapter.zip"]).namelist()

    # the histogram of one chosen image, redrawn from this session's run
    fig = json.loads(c.predict(choice="digit_0003.png", api_name="/histogram")["plot"])
    assert "digit_0003.png" in fig["layout"]["title"]["text"]


def test_stop_keeps_partial_results_and_downloads(app_url, upload):
    c = client(app_url)
    job = c.submit(**run_args(upload, max_steps=500), api_name="/run")
    deadline = time.time() + 120
    while not any("Step 1/500" in o[0] for o in job.outputs() if isinstance(o[0], str)):
        assert time.time() < deadline and not job.done(), "no step reported"
        time.sleep(0.05)
    assert "Stopping" in c.predict(api_name="/stop")
    out = unpack(job.result(timeout=120))

    assert 'data-kind="stopped"' in out["status"]
    steps = int(out["status"].split("Stopped after step ")[1].split(" of ")[0])
    assert 1 <= steps < 500
    rows = out["table"]["data"]
    col = {h: i for i, h in enumerate(out["table"]["headers"])}
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
    rows, col = out["table"]["data"], out["table"]["headers"].index("adapted on")
    assert len(rows) == 6                                               # evaluated on all
    assert [r[1] for r in rows if r[col]] == ["digit_0002.png"]


def test_a_failing_model_gives_a_clear_error(app_url, upload):
    out = client(app_url).predict(**run_args(upload, model="/nowhere/no-such-model"), api_name="/run")
    status = out[0]
    assert 'data-kind="error"' in status and "Run failed" in status and "/nowhere/no-such-model" in status
    assert "Traceback" not in status


def test_a_model_that_fails_to_load_leaves_the_session_usable(app_url, upload):
    c = client(app_url)
    status = c.predict(**run_args(upload, model="/nowhere/no-such-model"), api_name="/run")[0]
    assert 'data-kind="error"' in status and "no model folder" in status
    out = unpack(c.predict(**run_args(upload, max_steps=1), api_name="/run"))   # same session, next run
    assert 'data-kind="done"' in out["status"] and len(out["table"]["data"]) == 6


def test_out_of_memory_mid_run_ends_with_a_message_and_keeps_the_results(app_url, upload, oom_in_step_2):
    """A (simulated) GPU OOM in step 2: what to lower, the before-evaluation in the table, step 1
    and the adapter in the downloads; the app then runs the next job normally."""
    c = client(app_url)
    out = unpack(c.predict(**run_args(upload, max_steps=3), api_name="/run"))
    assert 'data-kind="error"' in out["status"] and "Out of GPU memory while TTRV step 2" in out["status"]
    assert "votes per image N (n_votes) (now 8)" in out["status"] and "results so far (1 step(s))" in out["status"]
    assert "Traceback" not in out["status"]
    rows, col = out["table"]["data"], out["table"]["headers"].index("before")
    assert len(rows) == 6 and all(r[col] != "" for r in rows)             # the before-evaluation is shown
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
    status = c.predict(**run_args([upload[0]], qmode="One question for all images", question=""),
                       api_name="/run")[0]
    assert 'data-kind="error"' in status and "No usable images" in status


def test_sessions_keep_their_own_results(app_url, upload):
    a, b = client(app_url), client(app_url)
    a.predict(**run_args(upload, max_steps=1), api_name="/run")
    fig_a = json.loads(a.predict(choice="(each step's first image)", api_name="/histogram")["plot"])
    fig_b = json.loads(b.predict(choice="(each step's first image)", api_name="/histogram")["plot"])
    assert len(fig_a["data"]) >= 2 and fig_b["data"] == []


def test_example_set_preview(app_url):
    info = client(app_url).predict(source="Bundled example set", example="digits", uploads=None, folder=None,
                                   qmode="A questions file", question="", qfile=None, task="open", options="",
                                   api_name="/preview")[0]
    assert "240 image(s) ready" in info and "used for evaluation only" in info


def test_a_zip_of_a_folder_or_a_folder_upload_is_read_with_its_questions_file(app_url, upload, tmp_path):
    from gradio_client import handle_file
    zpath = tmp_path / "set.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        for p in upload:
            z.write(p, f"my_set/{p.name}")           # one top folder, as zipping a folder makes it
    c = client(app_url)
    common = dict(source="My images", example=None, qmode="A questions file", question="", qfile=None,
                  task="open", options="", api_name="/preview")
    info, single_item, _ = c.predict(uploads=[handle_file(str(zpath))], folder=None, **common)
    assert "6 image(s) ready" in info and "broken.png" in info
    info = c.predict(uploads=None, folder=[handle_file(str(p)) for p in upload], **common)[0]
    assert "6 image(s) ready" in info
    info = c.predict(uploads=[handle_file(str(p)) for p in upload if p.suffix == ".png"], folder=None,
                     **common | {"qmode": "One question for all images", "question": "Which digit?"})[0]
    assert "6 image(s) ready" in info and "evaluation only" not in info   # no answers without the file


def _root(c):
    import app
    return app.session_root(SimpleNamespace(session_hash=c.session_hash))


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

    import app
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale, live = tmp_path / f"ttrv-app-{dead.pid}-x", tmp_path / f"ttrv-app-{os.getpid()}-y"
    for d in (stale, live):
        (d / "session" / "run-1").mkdir(parents=True)
    assert app.sweep_stale(tmp_path) == [stale]
    assert not stale.exists() and live.exists()


def test_several_questions_files_are_named(tmp_path):
    """Images with two questions files and no questions.csv: the message names both and
    says what to do, instead of 'no questions file'."""
    from PIL import Image

    import app
    for name in ("a.png", "b.png"):
        Image.new("RGB", (16, 16)).save(tmp_path / name)
    (tmp_path / "train.csv").write_text("image,question\na.png,Which digit?\n")
    (tmp_path / "test.jsonl").write_text('{"image": "b.png", "question": "Which digit?"}\n')
    ds, _ = app.load_data(tmp_path / "work", app.MY_IMAGES, None, [str(p) for p in tmp_path.iterdir()], None,
                          app.QUESTIONS_FILE, "", None, "open", "")
    msg = " ".join(map(str, ds.problems))
    assert not ds.items and "several questions files" in msg and "test.jsonl" in msg and "train.csv" in msg
