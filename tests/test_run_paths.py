"""A run folder names nothing of the filesystem of the machine that wrote it.

On a public Space the run folder is a download: config.json, the log, the results and the
adapter must not show where the app is installed or where a user's uploads were kept. A
bundled demo is named by its name ('demo:format', demos.public), a path the user typed as
they typed it; a CLI run of a demo still resumes from such a record.
"""
import csv
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

import ttrv_core
from ttrv_core.cli import main
from ttrv_core.demos import ASSETS, DEFAULT, by_key

pytestmark = pytest.mark.usefixtures("one_thread")
CHECKOUT = Path(ttrv_core.__file__).resolve().parent.parent   # the checkout, or site-packages when installed
SMALL = ["--votes", "4", "--train", "2", "--eval-votes", "2", "--prompts-per-step", "2"]
SHOWN = ("config.json", "summary.json", "results.csv", "results.json", "events.jsonl", "problems.txt")


def shown_files(run: Path) -> list[Path]:
    """What a person gets of a run folder: its records and the adapter's config and model card
    (checkpoints/ is the machine's own state for a resume, as the session's uploads are)."""
    adapter = run / "adapter"
    return [p for p in [*(run / n for n in SHOWN), *sorted(adapter.glob("*.json")), adapter / "README.md"]
            if p.is_file()]


def leaks(run: Path, *places: Path) -> list[str]:
    """'file: place' for each shown file that names one of the places (as given or resolved)."""
    names = {str(p) for place in places for p in (Path(place), Path(place).resolve())}
    return [f"{f.relative_to(run)}: {n}" for f in shown_files(run) for n in sorted(names)
            if n in f.read_text(encoding="utf-8")]


def test_public_names_the_bundled_files_and_local_reads_them_back(tmp_path):
    from ttrv_core.app.kept_runs import shown
    from ttrv_core.demos import local, public
    demo = by_key("clean")
    assert public(demo.model) == "demo:clean" and public(demo.model + "/") == "demo:clean"
    assert public(demo.example_dir / "questions.csv") == f"assets:examples/{demo.examples}/questions.csv"
    assert public("Qwen/Qwen2.5-VL-3B-Instruct") == "Qwen/Qwen2.5-VL-3B-Instruct"
    assert public("my_digits") == "my_digits" and public(tmp_path) == str(tmp_path)   # as given
    for path in (demo.model, str(demo.example_dir / "questions.csv")):
        assert Path(local(public(path))) == Path(path)
    assert local("my_digits") == "my_digits"
    assert shown(demo.model) == "demo:clean" and shown(str(tmp_path / "models" / "mine")) == "mine"   # the app's


def test_a_cli_run_of_a_demo_names_it_and_resumes_from_the_names(tmp_path, capsys, oom_in_step_2):
    """The default demo stopped by an error in step 2 (its checkpoint of step 1 kept), then resumed:
    config.json, the log, the results and every adapter name the demo, never the checkout."""
    run = tmp_path / "run"
    assert main(["--out", str(run), "--limit", "4", "--steps", "3", *SMALL]) == 2
    assert (run / "checkpoints" / "step-000001" / "adapter" / "adapter_config.json").is_file()
    assert (run / "adapter" / "adapter_config.json").is_file()                # saved after the error
    meta = json.loads((run / "config.json").read_text())
    assert (meta["config"]["model"], meta["images"], meta["questions"]) == (
        "demo:format", f"assets:examples/{DEFAULT.examples}", f"assets:examples/{DEFAULT.examples}/questions.csv")
    assert leaks(run, CHECKOUT, ASSETS) == []
    assert main(["--resume", str(run)]) == 0                                  # the names lead back to the files
    assert "model: demo 'format'" in capsys.readouterr().out
    assert not (run / "checkpoints").exists() and (run / "adapter" / "README.md").is_file()
    assert len(list(csv.DictReader(open(run / "results.csv")))) == 4
    assert leaks(run, CHECKOUT, ASSETS) == []
    adapter = json.loads((run / "adapter" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == f"assets/{DEFAULT.folder}"   # loadable from a checkout
    assert "bundled demo 'format'" in (run / "adapter" / "README.md").read_text()


def test_a_path_the_user_typed_is_recorded_as_typed(tmp_path, monkeypatch):
    """Relative paths stay relative: the record names the user's folders, not where they lie."""
    src = by_key("open").example_dir
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    rows = list(csv.DictReader(open(src / "questions.csv")))[:3]
    for r in rows:
        shutil.copy(src / r["image"], imgs / r["image"])
    with open(imgs / "questions.csv", "w", newline="") as f:
        csv.writer(f).writerows([("image", "question", "answer"), *((r["image"], r["question"], r["answer"])
                                                                     for r in rows)])
    monkeypatch.chdir(tmp_path)
    assert main(["--images", "imgs", "--out", "run", "--steps", "1", *SMALL]) == 0
    meta = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (meta["config"]["model"], meta["images"], meta["questions"]) == ("demo:open", "imgs", "imgs/questions.csv")
    assert leaks(tmp_path / "run", CHECKOUT, ASSETS, tmp_path) == []


def test_an_app_run_folder_names_no_path_of_the_server(tmp_path):
    """kept_runs.run (the app's runs) with the files a user uploaded: the upload folder, the session's
    work folder and the app's install never appear in what the user downloads."""
    from ttrv_core import inputs
    from ttrv_core.app import kept_runs
    from ttrv_core.config import TTRVConfig
    from ttrv_core.model.kept_base import KeptBase
    from ttrv_core.runs import model_card

    uploads = tmp_path / "gradio" / "3f9a1c"        # where a web framework keeps uploaded files
    uploads.mkdir(parents=True)
    src = DEFAULT.example_dir
    rows = list(csv.DictReader(open(src / "questions.csv")))[:3]
    for r in rows:
        shutil.copy(src / r["image"], uploads / r["image"])
    with open(uploads / "questions.csv", "w", newline="") as f:
        csv.writer(f).writerows([("image", "question", "options", "answer"),
                                 *((r["image"], r["question"], r["options"], r["answer"]) for r in rows)])
    Image.new("RGB", (4, 4)).save(uploads / "tiny.png")
    (uploads / "broken.png").write_bytes(b"not an image")          # a problem: problems.txt names it
    work = tmp_path / "app-123" / "5e1d" / "run-1-x"                 # the session's run folder (sessions.py)
    inp = inputs.load(inputs.collect(sorted(map(str, uploads.iterdir())), work), None, None, "choice")
    cfg = TTRVConfig(model=DEFAULT.model, n_votes=4, n_train=2, eval_votes=2, prompts_per_step=2, max_steps=1,
                     precision="fp32")
    meta = {"config": cfg.to_dict(), "model": model_card.model_name(cfg.model), "source": inp.where,   # as app.run
            "questions": inp.questions, "question": None, "task": "choice", "single": None}
    list(kept_runs.run(cfg, inp.dataset.items, None, work / "out", meta, inp.dataset.problems, lambda: 0, KeptBase()))
    out = work / "out"
    assert (out / "problems.txt").is_file() and (out / "adapter" / "adapter_config.json").is_file()
    assert leaks(out, CHECKOUT, ASSETS, uploads, work) == []
    assert json.loads((out / "config.json").read_text())["config"]["model"] == "demo:format"
