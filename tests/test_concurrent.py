"""Two users at once against one launched app: both runs finish, the queue runs them one at a
time, and neither sees the other's images, questions, results or files."""
import csv
import json
import shutil
import threading
import time
from pathlib import Path

import pytest
from test_app import DIGITS, app_url, client, table_of, unpack  # noqa: F401 (fixture)

from ttrv_core.config import DEMO_MODEL

pytestmark = pytest.mark.skipif(not (Path(DEMO_MODEL) / "config.json").is_file() or not DIGITS.is_dir(),
                                reason="demo model / example set not built (python assets/build_demo_model.py)")

QUESTIONS = {"alice": "Which digit is this?", "bob": "What number is written here?"}


def user_upload(tmp_path, who: str, first: int) -> list[Path]:
    """3 digits renamed after the user, and the user's own question for them in a CSV."""
    d = tmp_path / who
    d.mkdir()
    names = [f"{who}_{i}.png" for i in range(3)]
    for i, name in enumerate(names):
        shutil.copy(DIGITS / f"digit_{first + i:04d}.png", d / name)
    with open(d / "questions.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "question"])
        w.writerows([n, QUESTIONS[who]] for n in names)
    return sorted(d.iterdir())


def test_two_users_at_once_get_their_own_results_one_run_at_a_time(app_url, tmp_path, monkeypatch):  # noqa: F811
    from gradio_client import handle_file

    import app

    spans, active, peak, lock = [], [0], [0], threading.Lock()
    real_adapt = app.gpu_job

    def counted(*a, **kw):  # the GPU work of one run: how many run at the same moment?
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        t0 = time.time()
        try:
            yield from real_adapt(*a, **kw)
        finally:
            with lock:
                active[0] -= 1
                spans.append((t0, time.time()))

    monkeypatch.setattr(app, "gpu_job", counted)
    users = {"alice": user_upload(tmp_path, "alice", 0), "bob": user_upload(tmp_path, "bob", 10)}
    clients = {who: client(app_url) for who in users}
    results, errors = {}, []

    def go(who):
        try:
            args = dict(source="My images", example=None, uploads=[handle_file(str(p)) for p in users[who]],
                        folder=None, question="", qfile=None, task="open", options="", custom="",
                        hist_choice="the first image step 1 trains on", model=DEMO_MODEL, precision="auto", single=False,
                        single_item=None, n_votes=4, n_train=2, temperature=1.0, max_steps=2, epochs=1, lr=2e-3,
                        lora_r=4, alpha=0.75, beta=0.001, reward="ttrv", eval_votes=2, prompts_per_step=2,
                        train_items=0, collapse_guard=True)
            results[who] = unpack(clients[who].predict(**args, api_name="/run"))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(f"{who}: {e!r}")

    threads = [threading.Thread(target=go, args=(who,)) for who in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors and set(results) == set(users)

    # both finished; the queue (default_concurrency_limit=1) ran them one after the other
    assert len(spans) == 2 and peak[0] == 1
    (s1, e1), (s2, e2) = sorted(spans)
    assert e1 <= s2

    for who, out in results.items():
        other = next(u for u in users if u != who)
        assert 'data-kind="done"' in out["status"] and "Done: 2 steps" in out["status"]
        assert "3 image(s) ready" in out["info"]
        headers, rows = table_of(out["table"])
        col = {h: i for i, h in enumerate(headers)}
        assert sorted(r[col["file"]] for r in rows) == [f"{who}_{i}.png" for i in range(3)]
        assert "question" not in col                       # one question for all: in the log, below
        files = {f.name: f for f in out["files"]}
        with open(files["results.csv"], newline="") as f:
            got = list(csv.DictReader(f))
        assert {r["item"] for r in got} == {f"{who}_{i}.png" for i in range(3)}
        assert {r["question"] for r in got} == {QUESTIONS[who]}
        logged = files["events.jsonl"].read_text() + files["config.json"].read_text()
        assert other not in logged and QUESTIONS[other] not in logged
        assert json.loads(files["config.json"].read_text())["source"] == "4 uploaded file(s)"

        # on the server: this session's folder holds this user's uploads only
        root = app.sessions.folder(app.SESSIONS, clients[who].session_hash)
        names = {p.name for p in root.rglob("*.png")}
        assert names == {f"{who}_{i}.png" for i in range(3)}

    # each session's histogram redraw shows its own images only
    fig = json.loads(clients["bob"].predict(choice="alice_0.png", api_name="/histogram")["plot"])
    assert fig["data"] == [] or "alice" not in json.dumps(fig)
