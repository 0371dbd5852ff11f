"""The app's Push button (sessions.push, app.push): the shown run's adapter to the visitor's Hub repo.
The Hub is replaced (test_hub.FakeHub): nothing here reaches the network. On a public Space only the
visitor's own sign-in token pushes; the Space's token (the operator's) never does."""
from pathlib import Path

from test_hub import SHORT, FakeHub

from ttrv_core.app import sessions
from ttrv_core.app.live_run import LiveRun
from ttrv_core.cli import main
from ttrv_core.runs import hub


def run_folder(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    assert main(["--out", str(run), *SHORT]) == 0
    return run


def test_push_sends_the_shown_runs_adapter_with_the_visitors_token(tmp_path, monkeypatch):
    fake = FakeHub()
    monkeypatch.setattr(hub, "HfApi", lambda: fake)
    live = LiveRun([], run_folder(tmp_path))
    said = sessions.push(live, " me/x ", "visitor-token", public=True)
    assert said == "Pushed to https://huggingface.co/me/x"
    assert [c[0] for c in fake.calls] == ["create_repo", "upload_folder"]
    assert {c[2]["token"] for c in fake.calls} == {"visitor-token"}                  # the visitor's, every call
    assert set(fake.files) == set(hub.FILES)


def test_a_public_space_does_not_push_without_the_visitors_sign_in(tmp_path, monkeypatch):
    fake = FakeHub()
    monkeypatch.setattr(hub, "HfApi", lambda: fake)
    live = LiveRun([], run_folder(tmp_path))
    assert sessions.push(live, "me/x", None, public=True).startswith("Sign in with your Hugging Face account")
    assert fake.calls == []
    assert sessions.push(live, "me/x", None, public=False) == "Pushed to https://huggingface.co/me/x"  # own machine


def test_nothing_to_push_and_no_repo_are_said(tmp_path, monkeypatch):
    fake = FakeHub()
    monkeypatch.setattr(hub, "HfApi", lambda: fake)
    assert sessions.push(None, "me/x", "t", public=True).startswith("Nothing to push yet")
    assert sessions.push(LiveRun([], tmp_path / "none"), "me/x", "t", public=True).startswith("Nothing to push yet")
    (tmp_path / "run" / "adapter").mkdir(parents=True)
    assert sessions.push(LiveRun([], tmp_path / "run"), " ", "t", public=False).startswith("Name the Hub repo")
    assert fake.calls == []


def test_a_refused_push_is_said_on_the_page(tmp_path, monkeypatch):
    from huggingface_hub.errors import LocalTokenNotFoundError
    monkeypatch.setattr(hub, "HfApi", lambda: FakeHub(fail=LocalTokenNotFoundError("no token")))
    said = sessions.push(LiveRun([], run_folder(tmp_path)), "me/x", None, public=False)
    assert said.startswith("Not pushed: no Hugging Face token") and "hf auth login" in said


def test_the_page_has_the_push_button_and_pushes_with_the_visitors_sign_in_on_a_space(tmp_path, monkeypatch):
    """Off a Space the page builds with no Hub login (no sign-in button: gradio would demand the machine's
    login); on a Space the handler takes the visitor's OAuth token (gradio's OAuthToken, here a stand-in)."""
    import app
    comps = app.demo.config["components"]
    assert any(c.get("props", {}).get("elem_id") == "push" for c in comps)
    assert not any(c.get("type") == "loginbutton" for c in comps) and not app.ON_SPACE
    assert "push" in {d.get("api_name") for d in app.demo.config["dependencies"]}
    fake = FakeHub()
    monkeypatch.setattr(hub, "HfApi", lambda: fake)
    monkeypatch.setattr(app, "PUBLIC", True)
    sess = type("Sess", (), {"shown": LiveRun([], run_folder(tmp_path))})()
    assert app.push_signed_in(sess, "me/x", None).startswith("Sign in with your Hugging Face account")
    token = type("OAuthToken", (), {"token": "visitor-token"})()
    assert app.push_signed_in(sess, "me/x", token) == "Pushed to https://huggingface.co/me/x"
    assert {c[2]["token"] for c in fake.calls} == {"visitor-token"}


def test_a_failed_push_on_the_page_names_no_server_folder(tmp_path, monkeypatch):
    from huggingface_hub.errors import HTTPError
    run = run_folder(tmp_path)
    monkeypatch.setattr(hub, "HfApi", lambda: FakeHub(fail=HTTPError("offline")))
    said = sessions.push(LiveRun([], run), "me/x", None, public=False)
    assert said.startswith("Not pushed: the Hub could not be reached") and said.endswith("still in the downloads.")
    assert str(tmp_path) not in said
