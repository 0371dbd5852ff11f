"""End to end through the CLI on the bundled demo model: files written, bad input named."""
import csv
import json
import shutil

import pytest

from ttrv_core.cli import main
from ttrv_core.config import DEMO_MODEL
from ttrv_core.demos import by_key

EXAMPLES = by_key("open").example_dir  # the open-answer digits


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    rows = list(csv.DictReader(open(EXAMPLES / "questions.csv")))[:4]
    for r in rows:
        shutil.copy(EXAMPLES / r["image"], d / r["image"])
    (d / "broken.png").write_bytes(b"not a png at all")
    q = d / "questions.csv"
    with open(q, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "question", "answer"])
        for r in rows:
            w.writerow([r["image"], r["question"], r["answer"]])
        w.writerow(["gone.png", "Which digit is shown in the image?", "3"])
        w.writerow(["broken.png", "Which digit is shown in the image?", "3"])
    return d


def test_cli_run_writes_run_folder(folder, tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["--images", str(folder), "--questions", str(folder / "questions.csv"), "--out", str(out),
               "--steps", "2", "--votes", "6", "--train", "4", "--prompts-per-step", "2"])
    assert rc == 0
    err = capsys.readouterr().err
    assert "questions.csv: line 6: image 'gone.png' not found in the folder" in err
    assert "broken.png: cannot read image" in err
    for name in ("config.json", "events.jsonl", "results.csv", "results.json", "summary.json", "problems.txt"):
        assert (out / name).exists(), name
    events = [json.loads(line) for line in open(out / "events.jsonl")]
    assert [e["type"] for e in events if e["type"] != "progress"] == [
        "run_start", "eval", "step", "step", "eval", "run_end"]
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert len(rows) == 4
    assert all(r["before_greedy"] != "" and r["after_greedy"] != "" for r in rows)
    summary = json.load(open(out / "summary.json"))
    assert 0.0 <= summary["after/greedy_acc"] <= 1.0 and summary["after/labeled"] == 4.0
    assert not (out / "checkpoints").exists()                        # finished: nothing to resume

    # the adapter loads onto the base model with plain peft
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText
    base = AutoModelForImageTextToText.from_pretrained(DEMO_MODEL)
    model = PeftModel.from_pretrained(base, str(out / "adapter"))
    assert any("lora_A" in n for n, _ in model.named_parameters())


def test_cli_no_images(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    rc = main(["--images", str(tmp_path / "empty"), "--question", "What?", "--out", str(tmp_path / "r")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "no images found" in err and str(tmp_path / "empty") in err


def test_cli_bad_config(tmp_path, capsys):
    rc = main(["--votes", "4", "--train", "8", "--out", str(tmp_path / "r")])
    assert rc == 2 and "n_train (G=8) must be <= n_votes (N=4)" in capsys.readouterr().err


def test_cli_zip_with_questions_inside(folder, tmp_path, capsys):
    import zipfile
    z = tmp_path / "upload.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for p in folder.iterdir():
            zf.write(p, f"set/{p.name}")
    out = tmp_path / "run"
    rc = main(["--images", str(z), "--out", str(out), "--steps", "1", "--votes", "4", "--train", "2",
               "--eval-votes", "4"])
    assert rc == 0
    assert "gone.png' not found" in capsys.readouterr().err       # the questions.csv inside the zip was used
    assert len(json.load(open(out / "results.json"))["items"]) == 4
    assert (out / "input" / "set" / "questions.csv").exists()      # extracted inside the run folder only


def test_cli_out_of_memory_mid_run_keeps_results(folder, tmp_path, capsys, oom_in_step_2):
    """A (simulated) GPU OOM in step 2: one sentence naming what to lower; step 1 and the
    before-evaluation stay in the run folder, and the adapter is saved."""
    out = tmp_path / "run"
    rc = main(["--images", str(folder), "--questions", str(folder / "questions.csv"), "--out", str(out),
               "--steps", "3", "--votes", "4", "--train", "2", "--prompts-per-step", "2", "--eval-votes", "4"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "Out of GPU memory while TTRV step 2" in err and "votes per image N (n_votes) (now 4)" in err
    assert "Traceback" not in err
    kinds = [json.loads(line)["type"] for line in open(out / "events.jsonl")]
    assert kinds.count("step") == 1 and "eval" in kinds
    assert (out / "adapter" / "adapter_config.json").exists()
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert len(rows) == 4 and all(r["before_greedy"] != "" for r in rows)
    assert (out / "checkpoints" / "step-000001" / "state.pt").exists()   # --resume can go on from step 1


def test_checkpointing_flag_and_older_configs():
    """--checkpointing alone means whole layers, 'mlp' the MLPs only; a run folder's config.json
    that holds True / False reads as 'layers' / 'off'."""
    from ttrv_core.cli import parser
    from ttrv_core.config import TTRVConfig
    p = parser()
    assert p.parse_args([]).checkpointing == "off"
    assert p.parse_args(["--checkpointing"]).checkpointing == "layers"
    assert p.parse_args(["--checkpointing", "mlp"]).checkpointing == "mlp"
    with pytest.raises(SystemExit):
        p.parse_args(["--checkpointing", "attention"])
    assert TTRVConfig(gradient_checkpointing=True).gradient_checkpointing == "layers"
    assert TTRVConfig(gradient_checkpointing=False).gradient_checkpointing == "off"
    with pytest.raises(ValueError, match="gradient_checkpointing"):
        TTRVConfig(gradient_checkpointing="sometimes")


def test_cli_defaults_run_the_format_demo_and_report_invalid_replies(tmp_path):
    """`python -m ttrv_core --out DIR` runs the default demo (demos.DEFAULT: the multiple-choice digits
    model with the half-learned reply format) with its settings; a flag given wins over them. The
    summary holds the label-free share of invalid greedy replies before and after, and results.csv
    the raw greedy replies."""
    from ttrv_core.demos import DEFAULT
    out = tmp_path / "run"
    assert main(["--out", str(out), "--limit", "16", "--steps", "2", "--eval-votes", "4", "--votes", "8",
                 "--train", "4"]) == 0
    meta = json.load(open(out / "config.json"))
    assert meta["demo"] == DEFAULT.key == "format" and meta["task"] == "choice"
    assert meta["config"]["model"] == "demo:format" and meta["config"]["lr"] == DEFAULT.settings["lr"]
    assert meta["config"]["max_steps"] == 2 and meta["config"]["n_votes"] == 8    # the flags given
    summary = json.load(open(out / "summary.json"))
    for key in ("before/greedy_invalid", "after/greedy_invalid", "before/invalid", "after/valid_acc"):
        assert 0.0 <= summary[key] <= 1.0, key
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert len(rows) == 16 and {"before_reply", "after_reply", "adapted_on"} <= set(rows[0])
    # the validity column says what the authors' extraction makes of each raw reply
    from ttrv_core.tasks.answers import extract_answer, is_valid
    options = [str(d) for d in range(10)]
    for r in rows:
        assert r["before_valid"] == str(is_valid("choice", extract_answer("choice", r["before_reply"], options),
                                                 options))
    assert summary["before/greedy_invalid"] == pytest.approx(
        sum(r["before_valid"] == "False" for r in rows) / 16)
    # read for content: the five keys, content >= strict, and the split of the strict gain adds up
    for key in ("before/content_acc", "after/content_acc", "before/top_answer_share", "after/top_answer_share",
                "votes/top_answer_share"):
        assert 0.0 <= summary[key] <= 1.0, key
    for phase in ("before", "after"):
        assert summary[f"{phase}/content_acc"] >= summary[f"{phase}/greedy_acc"]
        assert summary[f"{phase}/content_acc"] == pytest.approx(
            sum(r[f"{phase}_content_correct"] == "True" for r in rows) / 16)
    assert summary["gain/format"] + summary["gain/answers"] == pytest.approx(summary["gain/strict"])
    assert sum(summary[f"changed/{k}"] for k in ("unchanged", "format_only", "answer_changed")) == pytest.approx(1)
    assert {r["change"] for r in rows} <= {"unchanged", "format_only", "answer_changed"}


def test_cli_finds_the_questions_file_among_the_images(folder, tmp_path, capsys):
    """--images DIR with a questions.csv inside needs no --questions (the app's rule, inputs.load)."""
    out = tmp_path / "run"
    assert main(["--images", str(folder), "--out", str(out), "--steps", "1", "--votes", "4", "--train", "2",
                 "--eval-votes", "4"]) == 0
    assert "gone.png' not found" in capsys.readouterr().err          # its rows were read
    meta = json.load(open(out / "config.json"))
    assert meta["questions"] == str(folder / "questions.csv") and meta["task"] == "open"
    assert len(json.load(open(out / "results.json"))["items"]) == 4


def plan_of(out: str) -> tuple[str, str]:
    """The two plan lines a run prints first: the model, then the settings."""
    lines = out.splitlines()
    return next(x for x in lines if x.startswith("model: ")), next(x for x in lines if x.startswith("settings: "))


def test_images_for_choice_without_a_model_run_the_format_demo_and_say_so(folder, tmp_path, capsys):
    """--images DIR --task choice with no --model: the bundled multiple-choice model (the default
    demo's) with its settings, not the open-answer model at the paper's; both plan lines say it."""
    out = tmp_path / "run"
    assert main(["--images", str(folder), "--task", "choice", "--options", "|".join("0123456789"), "--out",
                 str(out), "--steps", "1", "--votes", "4", "--train", "2", "--eval-votes", "2"]) == 0
    model, settings = plan_of(capsys.readouterr().out)
    assert "demo 'format' (assets/demo_choice)" in model and "no --model given" in model
    assert "lr 0.001 (demo 'format')" in settings and "epochs 3 (demo 'format')" in settings
    assert "max_steps 1 (--steps)" in settings and "n_votes 4 (--votes)" in settings
    cfg = json.load(open(out / "config.json"))["config"]
    assert cfg["model"] == "demo:format" and cfg["lr"] == 1e-3 and cfg["epochs"] == 3


def test_images_for_open_answers_run_the_open_demo_at_the_paper_settings(folder, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["--images", str(folder), "--out", str(out), "--steps", "1", "--votes", "4", "--train", "2",
                 "--eval-votes", "2"]) == 0
    model, settings = plan_of(capsys.readouterr().out)
    assert "demo 'open' (assets/demo_model)" in model and "task 'open'" in model
    assert " lr " not in settings and "epochs" not in settings and "every other setting at its default" in settings
    assert json.load(open(out / "config.json"))["config"]["model"] == "demo:open"


def test_a_demo_folder_as_model_brings_its_settings_and_a_flag_wins(folder, tmp_path, capsys):
    """--model naming a bundled demo's folder, however written, runs with that demo's settings;
    a flag given wins over one of them; the plan line says where each comes from."""
    out = tmp_path / "run"
    model_dir = by_key("format").model + "/"
    assert main(["--model", model_dir, "--images", str(folder), "--task", "choice", "--options",
                 "|".join("0123456789"), "--out", str(out), "--lr", "3e-4", "--steps", "1", "--votes", "4",
                 "--train", "2", "--eval-votes", "2"]) == 0
    model, settings = plan_of(capsys.readouterr().out)
    assert "demo 'format'" in model and "--model" in model and "its settings apply" in model
    assert "lr 0.0003 (--lr)" in settings and "epochs 3 (demo 'format')" in settings
    cfg = json.load(open(out / "config.json"))["config"]
    assert cfg["model"] == "demo:format" and (cfg["lr"], cfg["epochs"]) == (3e-4, 3)


def test_settings_follow_the_model_not_the_example_set(tmp_path, capsys):
    """The default demo's example set on another model (here a copy of the demo's folder, not a
    bundled one): the paper's settings, the model named as it was given."""
    copy = tmp_path / "my_model"
    shutil.copytree(by_key("format").model, copy)
    out = tmp_path / "run"
    assert main(["--model", str(copy), "--out", str(out), "--limit", "4", "--steps", "1", "--votes", "4",
                 "--train", "2", "--eval-votes", "2"]) == 0
    model, settings = plan_of(capsys.readouterr().out)
    assert model == f"model: {copy}: --model" and "lr" not in settings and "epochs" not in settings
    meta = json.load(open(out / "config.json"))
    assert meta["config"]["model"] == str(copy) and (meta["config"]["lr"], meta["config"]["epochs"]) == (1e-4, 2)
    assert meta["demo"] == "format" and meta["task"] == "choice"                 # the example set's
