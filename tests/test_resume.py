"""A run folder survives kill -9 and resumes to the same result as a run never interrupted.

One real kill: `python -m ttrv_core` in a subprocess, SIGKILL once two steps are
logged. Then the folder is checked (every logged step whole, a checkpoint that
loads), copies of it are damaged in the ways a kill can leave it, and each is
resumed with `--resume` and compared with an uninterrupted run of the same seed.
"""
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ttrv_core.cli import main
from ttrv_core.config import DEMO_MODEL
from ttrv_core.runs.checkpoint import CHECKPOINTS, latest_checkpoint

ROOT = Path(__file__).resolve().parent.parent
STEPS = 10
ARGS = ["--limit", "8", "--train-items", "8", "--prompts-per-step", "2", "--votes", "8", "--train", "4",
        "--steps", str(STEPS), "--eval-votes", "4", "--seed", "5"]


def events(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "events.jsonl").read_text().splitlines()]


def trajectory(evs: list[dict]) -> list[dict]:
    """The before-evaluation, every step, the last after-evaluation; no wall-clock numbers."""
    def untimed(e):
        return dict({k: v for k, v in e.items() if k != "seconds"},
                    metrics={k: v for k, v in e["metrics"].items() if not k.startswith("time/")})
    evals = [e for e in evs if e["type"] == "eval"]
    return ([untimed(e) for e in evals if e["phase"] == "before"] + [untimed(e) for e in evs if e["type"] == "step"]
            + [untimed(e) for e in evals if e["phase"] == "after"][-1:])


def kill_after_steps(out: Path, n: int) -> None:
    """Start a CLI run and SIGKILL it once `n` step events are in its log."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    log = open(out.parent / "killed.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "ttrv_core", "--out", str(out), *ARGS], cwd=ROOT,
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    try:
        while time.time() < deadline:
            path = out / "events.jsonl"
            if path.exists() and path.read_text().count('"type": "step"') >= n:
                break
            assert proc.poll() is None, "the run ended before it could be killed: " + \
                (out.parent / "killed.log").read_text()[-2000:]
            time.sleep(0.01)
        else:
            pytest.fail("no step events within 120 s")
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
        log.close()
    assert proc.returncode == -signal.SIGKILL


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run with the same settings."""
    out = tmp_path_factory.mktemp("ref") / "run"
    assert main(["--out", str(out), *ARGS]) == 0
    return out


@pytest.fixture(scope="module")
def killed(tmp_path_factory):
    out = tmp_path_factory.mktemp("kill") / "run"
    kill_after_steps(out, 2)
    return out


def assert_same_as(folder: Path, ref: Path) -> None:
    assert (folder / "results.csv").read_bytes() == (ref / "results.csv").read_bytes()
    assert json.loads((folder / "summary.json").read_text()) == json.loads((ref / "summary.json").read_text())
    assert trajectory(events(folder)) == trajectory(events(ref))        # every step, bit for bit (CPU)
    assert not (folder / CHECKPOINTS).exists()                      # finished: checkpoints go
    assert (folder / "adapter" / "adapter_model.safetensors").read_bytes() == \
        (ref / "adapter" / "adapter_model.safetensors").read_bytes()


def test_killed_run_keeps_completed_steps(killed):
    lines = (killed / "events.jsonl").read_text().split("\n")
    evs = [json.loads(line) for line in lines[:-1]]               # whole lines all parse (the last may be cut)
    assert [e["type"] for e in evs][:1] == ["run_start"] and not any(e["type"] == "run_end" for e in evs)
    steps = [e["step"] for e in evs if e["type"] == "step"]
    assert len(steps) >= 2 and steps == list(range(1, len(steps) + 1))
    ck = latest_checkpoint(killed)                                 # at the last logged step, or one past it
    assert ck is not None and int(ck.name.split("-")[1]) in (steps[-1], steps[-1] + 1)

    state = torch.load(ck / "state.pt", weights_only=True)          # plain data, no pickled objects
    assert state["step"] == int(ck.name.split("-")[1]) and state["optimizer"]["state"]
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText
    model = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(DEMO_MODEL), str(ck / "adapter"))
    assert any("lora_B" in n and p.abs().sum() > 0 for n, p in model.named_parameters())  # trained weights


def test_resume_matches_uninterrupted(killed, reference, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(killed, run)
    assert main(["--resume", str(run)]) == 0
    starts = [e for e in events(run) if e["type"] == "run_start"]
    assert [s["resumed_from"] for s in starts] == [0, int(latest_checkpoint(killed).name.split("-")[1])]
    assert_same_as(run, reference)
    # a finished run says so
    assert main(["--resume", str(run)]) == 2
    assert "already finished" in capsys.readouterr().err


def test_resume_after_kill_between_checkpoint_and_event(killed, reference, tmp_path):
    """The narrowest window: checkpoint k renamed into place, its event not yet appended,
    and a later line half-written. The resume appends step k's event from state.pt."""
    run = tmp_path / "run"
    shutil.copytree(killed, run)
    k = int(latest_checkpoint(run).name.split("-")[1])
    lines = (run / "events.jsonl").read_text().splitlines(keepends=True)
    kept = [ln for ln in lines if not (json.loads(ln)["type"] == "step" and json.loads(ln)["step"] >= k)]
    (run / "events.jsonl").write_text("".join(kept) + '{"type": "step", "step": ')
    assert main(["--resume", str(run)]) == 0
    assert_same_as(run, reference)


def test_resume_refuses_damaged_or_missing_checkpoint(killed, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(killed, run)
    (latest_checkpoint(run) / "state.pt").write_bytes(b"half a file")
    assert main(["--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert "cannot be read" in err and "state.pt" in err
    shutil.rmtree(run / CHECKPOINTS)
    assert main(["--resume", str(run)]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert main(["--resume", str(tmp_path / "nothing")]) == 2
    assert "not a run folder" in capsys.readouterr().err


def test_stopped_run_resumes(reference, tmp_path, monkeypatch):
    """A stop (the app's Stop button) keeps the checkpoint; --resume continues to the same end."""
    import ttrv_core.method.engine as engine
    real_run, steps = engine.adapt, []

    def stopping_run(*a, **kw):
        for ev in real_run(*a, should_stop=lambda: len(steps) >= 3, **kw):
            if ev.type == "step":
                steps.append(ev)
            yield ev

    run = tmp_path / "run"
    monkeypatch.setattr(engine, "adapt", stopping_run)
    assert main(["--out", str(run), *ARGS]) == 0
    monkeypatch.setattr(engine, "adapt", real_run)
    evs = events(run)
    assert evs[-1]["stopped"] and [e["step"] for e in evs if e["type"] == "step"] == [1, 2, 3]
    assert latest_checkpoint(run).name == "step-000003"
    meta = json.loads((run / "config.json").read_text())    # the demo by its name, no path of this machine
    assert (meta["config"]["model"], meta["images"]) == ("demo:format", "assets:examples/digits_choice")
    monkeypatch.chdir(tmp_path)                              # the names resolve wherever the resume starts
    assert main(["--resume", str(run)]) == 0
    rows = list(csv.DictReader(open(run / "results.csv")))
    assert len(rows) == 8
    assert_same_as(run, reference)


def test_guard_state_survives_checkpoints(tiny_models, tmp_path):
    """The collapse guard's window and kept healthy weights come back from a checkpoint; a kept
    state is written once and hard-linked into later checkpoints, not rewritten each step."""
    from ttrv_core.method.engine import TrainState
    from ttrv_core.method.guard import CollapseGuard
    from ttrv_core.model.loading import load_policy
    from ttrv_core.runs.checkpoint import load_checkpoint
    from ttrv_core.runs.folder import RunDir

    policy = load_policy(str(tiny_models["qwen2_5_vl"]), "fp32", "cpu")
    opt = torch.optim.AdamW([p for p in policy.model.parameters() if p.requires_grad])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    guard = CollapseGuard(baseline=0.2)
    guard.keep(0, policy.model)
    rd = RunDir(tmp_path / "run")
    varied = {f"im{i}": str(i) for i in range(8)}

    def checkpoint(step):
        guard.check(step, varied, policy.model)                     # healthy: kept
        state = TrainState(step, opt.state_dict(), sched.state_dict(), torch.Generator().get_state(),
                           torch.get_rng_state(), guard.state_dict(), guard.kept)
        return rd.save_checkpoint(policy, state, {"type": "step", "step": step})

    first = checkpoint(1)
    inode = (first / "guard" / "step-000000.safetensors").stat().st_ino
    with torch.no_grad():
        for p in policy.model.parameters():
            if p.requires_grad:
                p.add_(1.0)
    second = checkpoint(2)
    assert not first.exists() and latest_checkpoint(rd.root) == second
    assert (second / "guard" / "step-000000.safetensors").stat().st_ino == inode
    state, event = load_checkpoint(second)
    assert event == {"type": "step", "step": 2}
    back = CollapseGuard()
    back.load_state_dict(state.guard, state.guard_kept)
    assert back.state_dict() == guard.state_dict()
    assert [s for s, _ in back.kept] == [0, 1, 2]
    for (_, a), (_, b) in zip(back.kept, guard.kept):
        assert a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)
    rd.close()
