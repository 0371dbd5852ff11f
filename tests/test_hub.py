"""--push-to-hub and runs/hub.push_adapter, offline: the Hub is replaced.

No test here reaches huggingface.co. HfApi is replaced by FakeHub, which records each create_repo
and upload_folder call and the files in the uploaded folder at the moment of the call (they live in
a temporary folder that is gone afterwards); a failing FakeHub raises huggingface_hub's own errors.
What is checked: what would go up (the adapter's weights, config and model card, nothing else, no
path of this machine), the card's before/after numbers and command, and the messages and exit
status of a push that cannot happen, with the run folder unchanged.
"""
import contextlib
import io
import json
import re
from pathlib import Path

import httpx2
import pytest
from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError

import ttrv_core
from ttrv_core.cli import main
from ttrv_core.demos import ASSETS, DEFAULT
from ttrv_core.runs import hub, model_card

pytestmark = pytest.mark.usefixtures("one_thread")
CHECKOUT = Path(ttrv_core.__file__).resolve().parent.parent
SHORT = ["--limit", "8", "--votes", "4", "--train", "2", "--steps", "2", "--eval-votes", "2"]
RUN_FILES = {"config.json", "events.jsonl", "results.csv", "results.json", "summary.json",
             *(f"adapter/{name}" for name in hub.FILES)}
"""What a finished run of the default demo leaves in its folder, and nothing a push adds."""


class FakeHub:
    """Stands in for huggingface_hub.HfApi: records the calls, and the uploaded folder's files
    (name -> bytes) as they were when upload_folder was called. fail: raised by create_repo,
    or by upload_folder with fail_on="upload". watch: a folder whose files create_repo records (seen)."""

    def __init__(self, fail: BaseException | None = None, fail_on: str = "create", watch: Path | None = None):
        self.calls: list[tuple[str, str, dict]] = []
        self.files: dict[str, bytes] = {}
        self.fail, self.fail_on, self.watch, self.seen = fail, fail_on, watch, None

    def create_repo(self, repo_id, **kw):
        self.calls.append(("create_repo", repo_id, kw))
        self.seen = snapshot(self.watch) if self.watch else None
        if self.fail is not None and self.fail_on == "create":
            raise self.fail
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, *, repo_id, folder_path, **kw):
        self.calls.append(("upload_folder", repo_id, kw))
        if self.fail is not None and self.fail_on == "upload":
            raise self.fail
        self.files = {p.name: p.read_bytes() for p in Path(folder_path).iterdir()}


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def pushed(tmp_path_factory):
    """One short run of the default demo with --push-to-hub me/x, the Hub replaced: (run folder,
    the fake, exit status, stdout)."""
    run = tmp_path_factory.mktemp("hub") / "run"
    fake = FakeHub()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(hub, "HfApi", lambda: fake)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            rc = main(["--out", str(run), *SHORT, "--push-to-hub", "me/x"])
    return run, fake, rc, out.getvalue()


def test_the_cli_pushes_the_adapter_weights_config_and_card(pushed):
    run, fake, rc, out = pushed
    assert rc == 0
    assert [(c[0], c[1]) for c in fake.calls] == [("create_repo", "me/x"), ("upload_folder", "me/x")]
    assert fake.calls[0][2]["exist_ok"] is True and fake.calls[0][2]["private"] is False
    assert "adapter pushed: https://huggingface.co/me/x" in out
    assert set(snapshot(run)) == RUN_FILES
    assert sorted(fake.files) == sorted(hub.FILES)          # exactly the adapter: weights, config, card
    kept = {name: (run / "adapter" / name).read_bytes() for name in hub.FILES}
    assert fake.files["adapter_model.safetensors"] == kept["adapter_model.safetensors"]
    assert fake.files["adapter_config.json"] == kept["adapter_config.json"]   # named already (name_base)
    # the card as the run wrote it, its loading code reading the adapter from the repo
    assert fake.files["README.md"].decode() == kept["README.md"].decode().replace(
        '"path/to/this/folder"', '"me/x"')
    assert 'PeftModel.from_pretrained(base, "me/x")' in fake.files["README.md"].decode()


def test_the_pushed_files_name_no_path_of_this_machine(pushed, tmp_path_factory):
    run, fake, _, _ = pushed
    config = json.loads(fake.files["adapter_config.json"])
    assert config["base_model_name_or_path"] == model_card.model_name(DEFAULT.model) == f"assets/{DEFAULT.folder}"
    places = {str(p) for place in (CHECKOUT, ASSETS, run) for p in (place, place.resolve())}
    for name in ("adapter_config.json", "README.md"):
        text = fake.files[name].decode()
        assert [p for p in places if p in text] == [], name


def test_the_card_has_the_before_after_numbers_and_the_command(pushed):
    run, fake, _, _ = pushed
    card = fake.files["README.md"].decode()
    results = json.loads((run / "results.json").read_text())
    before, after = results["before"]["eval/greedy_acc"], results["after"]["eval/greedy_acc"]
    assert f"| accuracy, greedy answer | {before:.3f} | {after:.3f} |" in card
    assert f"Base model: `assets/{DEFAULT.folder}`" in card and "## Settings" in card and "## Prompt" in card
    command = json.loads((run / "config.json").read_text())["command"]
    assert command.startswith("python -m ttrv_core --out ") and command.endswith("--push-to-hub me/x")
    assert re.search(r"## Command\n\n.*\n\n```sh\n" + re.escape(command) + "\n```", card)


def test_a_run_that_trained_nothing_exits_2_and_pushes_nothing(tmp_path, monkeypatch, capsys):
    """Stopped before its first step (as a stop during the evaluation does): no adapter to push."""
    from ttrv_core.method import engine
    real, fake = engine.adapt, FakeHub()
    monkeypatch.setattr(engine, "adapt", lambda *a, **kw: real(*a, should_stop=lambda: True, **kw))
    monkeypatch.setattr(hub, "HfApi", lambda: fake)
    run = tmp_path / "run"
    assert main(["--out", str(run), *SHORT, "--push-to-hub", "me/x"]) == 2
    err = capsys.readouterr().err
    assert "nothing was trained" in err and "nothing to push" in err and str(run / "adapter") in err
    assert fake.calls == [] and not (run / "adapter").exists()


def test_no_token_exits_2_says_how_to_log_in_and_keeps_the_adapter(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    fake = FakeHub(LocalTokenNotFoundError("Token is required but no token found."), watch=run)
    monkeypatch.setattr(hub, "HfApi", lambda: fake)
    assert main(["--out", str(run), *SHORT, "--push-to-hub", "me/x"]) == 2
    err = capsys.readouterr().err
    assert "hf auth login" in err and "HF_TOKEN" in err and f"the adapter stays in {run / 'adapter'}" in err
    assert [c[0] for c in fake.calls] == ["create_repo"]
    assert sorted(p.name for p in (run / "adapter").iterdir()) == sorted(hub.FILES)
    assert snapshot(run) == fake.seen and set(fake.seen) == RUN_FILES   # the folder as the run left it


def _http_error(status: int) -> HfHubHTTPError:
    request = httpx2.Request("POST", "https://huggingface.co/api/repos/create")
    return HfHubHTTPError(f"{status} Client Error", response=httpx2.Response(status, request=request))


@pytest.mark.parametrize("error, fail_on, said", [
    (LocalTokenNotFoundError("no token"), "create", ["hf auth login", "HF_TOKEN"]),
    (_http_error(401), "create", ["HTTP 401", "hf auth login", "HF_TOKEN"]),
    (_http_error(403), "upload", ["HTTP 403", "hf auth login"]),
    (httpx2.ConnectError("[Errno -3] Temporary failure in name resolution"), "create",
     ["could not be reached", "name resolution", "python -m ttrv_core.runs.hub"]),
    (ConnectionError("Network is unreachable"), "upload", ["could not be reached", "Network is unreachable"]),
    (_http_error(409), "upload", ["refused the push to 'me/x'", "409"]),
])
def test_a_failed_push_says_what_to_do_and_changes_nothing(pushed, tmp_path, error, fail_on, said):
    run = tmp_path / "run"
    for name in RUN_FILES:   # a copy of the run folder as the run left it
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_bytes((pushed[0] / name).read_bytes())
    before = snapshot(run)
    with pytest.raises(hub.PushError) as e:
        hub.push_adapter(run, "me/x", api=FakeHub(error, fail_on))
    message = str(e.value)
    assert all(s in message for s in said), message
    assert f"the adapter stays in {run / 'adapter'}" in message
    assert snapshot(run) == before


def test_push_adapter_names_the_base_of_an_adapter_that_holds_a_path(pushed, tmp_path):
    """A run folder whose adapter_config.json names a local folder (written before name_base):
    the uploaded config names it as model_card.model_name does; the folder keeps its own."""
    run = tmp_path / "old"
    (run / "adapter").mkdir(parents=True)
    for name in hub.FILES:
        (run / "adapter" / name).write_bytes((pushed[0] / "adapter" / name).read_bytes())
    config = run / "adapter" / "adapter_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "base_model_name_or_path": DEFAULT.model}))
    kept, fake = config.read_bytes(), FakeHub()
    assert hub.push_adapter(run, "me/y", api=fake, private=True) == "https://huggingface.co/me/y"
    assert fake.calls[0][2]["private"] is True
    assert json.loads(fake.files["adapter_config.json"])["base_model_name_or_path"] == f"assets/{DEFAULT.folder}"
    assert config.read_bytes() == kept
