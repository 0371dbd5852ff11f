"""Security settings of the app: custom model code, uploads, and the public-Space mode.

- trust_remote_code reaches load_policy only when TTRV_TRUST_REMOTE_CODE=1, never in public mode;
- uploads are read as images / zips / CSV-JSONL text: a pickle or a script, under any name, is
  neither unpickled nor run;
- TTRV_PUBLIC=1: the model box lists presets only, and a client that sends another model or
  oversized settings through the API is refused on the server; the caps hold.
"""
import pickle
import runpy
import shutil
from pathlib import Path

import pytest
from test_app import DIGITS, free_port, run_args, upload  # noqa: F401 (fixture)

from ttrv_core.config import DEMO_MODEL, TTRVConfig

ROOT = Path(__file__).resolve().parents[1]
needs_demo = pytest.mark.skipif(not (Path(DEMO_MODEL) / "config.json").is_file() or not DIGITS.is_dir(),
                                reason="demo model / example set not built (python assets/build_demo_model.py)")


# --------------------------------------------------------------------------- custom model code

@pytest.mark.parametrize("env, public, passed", [(None, False, False), ("0", False, False), ("true", False, False),
                                                 ("1", False, True), ("1", True, False)])
def test_trust_remote_code_only_when_the_operator_allows_it(monkeypatch, env, public, passed):
    import app

    class Loaded(Exception):
        pass

    seen = {}

    def fake_load(*a, **kw):
        seen.update(kw)
        raise Loaded

    if env is None:
        monkeypatch.delenv("TTRV_TRUST_REMOTE_CODE", raising=False)
    else:
        monkeypatch.setenv("TTRV_TRUST_REMOTE_CODE", env)
    monkeypatch.setattr(app, "PUBLIC", public)
    monkeypatch.setattr(app.loading, "load_policy", fake_load)
    with pytest.raises(Loaded):
        next(app.gpu_job(TTRVConfig(), [], None, None, {}, [], lambda: False))
    assert seen["trust_remote_code"] is passed


def test_the_refusal_says_how_to_allow_custom_code(tmp_path):
    import json

    from ttrv_core.errors import ModelLoadError
    from ttrv_core.model.loading import load_policy
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "internvl_chat", "auto_map": {"AutoModel": "x.Y"}}))
    with pytest.raises(ModelLoadError, match="TTRV_TRUST_REMOTE_CODE=1"):
        load_policy(str(tmp_path), "fp32", "cpu")


# --------------------------------------------------------------------------- uploads

class Payload:
    """Unpickling this touches a marker file: proof that something was unpickled."""
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def test_uploads_are_never_unpickled_or_run(tmp_path):
    import app
    marker = tmp_path / "was_executed"
    blob = pickle.dumps(Payload(marker))
    src = tmp_path / "up"
    src.mkdir()
    shutil.copy(DIGITS / "digit_0000.png", src / "ok.png")
    for name in ("evil.pkl", "evil.pt", "evil.npy", "model.bin", "evil.png", "evil.jpg"):
        (src / name).write_bytes(blob)
    (src / "evil.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    (src / "questions.csv").write_text("image,question\nok.png,What digit?\nevil.png,What digit?\n")
    files = [str(p) for p in sorted(src.iterdir())]
    sess = app.sessions.Session(tmp_path / "session")
    ds = app.form_fields.read(sess, app.EXAMPLES, tmp_path / "work", app.MY_IMAGES, None, files, "", None, "open", "").dataset
    assert [it.id for it in ds.items] == ["ok.png"]
    flagged = {p.file for p in ds.problems}
    assert {"evil.png", "evil.jpg", "evil.pkl", "evil.py"} <= flagged | {f.split(":")[0] for f in flagged}
    for it in ds.items:
        it.image()
    assert not marker.exists()


@pytest.mark.parametrize("module", ["app.py", "ttrv_core/inputs/dataset.py", "ttrv_core/inputs/questions.py", "ttrv_core/inputs/uploads.py",
                                    "ttrv_core/inputs/images.py",
                                    "ttrv_core/tasks/prompts.py", "ttrv_core/inputs/__init__.py", "ttrv_core/app/form_fields.py",
                                    "ttrv_core/app/sessions.py"])
def test_the_upload_path_has_no_code_that_runs_or_unpickles_data(module):
    import re
    text = (ROOT / module).read_text()
    for pattern in (r"\bpickle\b", r"torch\.load", r"\beval\(", r"\bexec\(", r"__import__", r"import_module",
                    r"subprocess", r"os\.system", r"np\.load", r"allow_pickle"):
        assert not re.search(pattern, text), f"{module}: {pattern}"


def test_launch_sets_the_upload_limit(monkeypatch):
    import gradio as gr

    from ttrv_core.inputs import questions, uploads
    seen = {}
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **kw: seen.update(kw))
    runpy.run_path(str(ROOT / "app.py"), run_name="__main__")      # `python app.py`
    assert seen["max_file_size"] == uploads.MAX_TOTAL_MB * questions.MB


# --------------------------------------------------------------------------- public Space

def test_public_refusal_names_what_is_over():
    from ttrv_core.app import model_menu
    from ttrv_core.app.sessions import CAPS, public_refusal

    def refusal(model, cfg, n, single):
        return public_refusal(model, cfg, n, single, model_menu.allowed())

    ok = TTRVConfig(n_votes=8, n_train=4, max_steps=2)
    assert refusal(DEMO_MODEL, ok, 10, None) is None
    assert "only runs its preset models" in refusal("/home/me/any-model", ok, 10, None)
    assert "n_votes up to 32, got 64" in refusal(DEMO_MODEL, ok.with_(n_votes=64, n_train=16), 10, None)
    assert "eval_votes up to 32" in refusal(DEMO_MODEL, ok.with_(eval_votes=33), 10, None)
    # steps in all: by epochs over the images adapted on (20 of 64 at 1 per step, 2 epochs = 40)
    assert CAPS["max_steps"] < 40
    by_epochs = ok.with_(max_steps=0, prompts_per_step=1)
    assert "these settings make 40" in refusal(DEMO_MODEL, by_epochs, 64, None)
    assert refusal(DEMO_MODEL, by_epochs.with_(train_items=5), 64, None) is None   # 10 steps
    assert CAPS["max_steps"] >= 10
    assert refusal(DEMO_MODEL, by_epochs, 64, "one.png") is None                    # 4 copies x 2


def test_public_page_offers_presets_only_and_caps_the_settings(monkeypatch):
    import app
    monkeypatch.setattr(app, "PUBLIC", True)
    blocks = app.build()
    model = next(b for b in blocks.blocks.values() if getattr(b, "elem_id", None) == "model")
    assert model.allow_custom_value is False
    assert sorted(v for _, v in model.choices) == sorted(app.model_menu.allowed())
    assert app.model_menu.OTHER not in app.model_menu.allowed()                   # nothing typed on a public Space
    maxima = {b.label: b.maximum for b in blocks.blocks.values() if type(b).__name__ == "Number"}
    assert maxima["Votes N per image"] == app.sessions.CAPS["n_votes"]
    assert maxima["Steps (0 = by epochs)"] == app.sessions.CAPS["max_steps"]
    monkeypatch.setattr(app, "PUBLIC", False)
    model = next(b for b in app.build().blocks.values() if getattr(b, "elem_id", None) == "model")
    assert app.model_menu.OTHER in [v for _, v in model.choices]


@pytest.fixture(scope="module")
def public_client():
    from gradio_client import Client

    import app
    mp = pytest.MonkeyPatch()
    mp.setattr(app, "PUBLIC", True)
    blocks = app.build()
    _, url, _ = blocks.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True,
                              quiet=True, max_file_size=app.MAX_FILE_SIZE)
    yield Client(url, verbose=False)
    blocks.close()
    mp.undo()


@needs_demo
def test_public_server_refuses_what_the_page_would_not_offer(public_client, upload):  # noqa: F811
    from gradio_client.exceptions import AppError

    import app
    small = dict(n_votes=8, n_train=4, eval_votes=4, max_steps=1)
    with pytest.raises(AppError, match="not in the list of choices"):          # a model outside the presets
        public_client.predict(**run_args(upload, **small, model="/tmp/some-model"), api_name="/run")
    with pytest.raises(AppError, match="not in the list of choices"):          # or typed as 'Other'
        public_client.predict(**run_args(upload, **small, model="other", custom="/tmp/some-model"), api_name="/run")
    with pytest.raises(AppError, match="greater than maximum value 32"):       # votes over the cap
        public_client.predict(**run_args(upload, **small | {"n_votes": 64}), api_name="/run")
    status = public_client.predict(**run_args(upload, **small | {"max_steps": 0, "epochs": 30}), api_name="/run")[0]
    assert 'data-kind="error"' in status and f"Refused: this public Space allows {app.sessions.CAPS['max_steps']} steps" \
        in status
    status = public_client.predict(**run_args(upload, **small), api_name="/run")[0]   # within the caps: runs
    assert 'data-kind="done"' in status


@needs_demo
def test_public_server_uses_at_most_the_capped_number_of_images(public_client):
    import app
    info = public_client.predict(source="Bundled example set", example="digits", uploads=None, folder=None,
                                 question="", qfile=None, task="open", options="", api_name="/preview")[0]
    caps = app.sessions.MAX_ITEMS
    assert f"{caps} image(s) ready" in info and f"the first {caps} images only" in info
