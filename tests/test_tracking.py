"""--report-to (runs/tracking.py): the tracker's files hold what events.jsonl holds, read back with
each library's own reader; the mirror passes the stream through untouched and always closes."""
import json
import struct
import sys

import pytest

from ttrv_core.cli import main
from ttrv_core.events import EvalResult, ItemVotes, Progress, RunEnd, RunStart, StepEvent
from ttrv_core.runs import tracking

SHORT = ["--votes", "4", "--train", "2", "--steps", "2", "--eval-votes", "2", "--limit", "8"]


def _steps(run_dir) -> dict[int, dict]:
    """step -> that StepEvent's metrics, from the run folder's events.jsonl (the record)."""
    lines = [json.loads(line) for line in open(run_dir / "events.jsonl", encoding="utf-8")]
    return {e["step"]: e["metrics"] for e in lines if e["type"] == "step"}


def test_tensorboard_scalars_are_the_steps_metrics(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    out = tmp_path / "run"
    assert main(SHORT + ["--out", str(out), "--report-to", "tensorboard"]) == 0
    steps = _steps(out)
    assert sorted(steps) == [1, 2]
    acc = EventAccumulator(str(out / "tensorboard"), size_guidance={"histograms": 0})   # 0: keep them all
    acc.Reload()
    for key in ("reward/mean", "reward/std", "answers/entropy", "answers/invalid", "loss/kl", "grad/norm", "lr"):
        got = {s.step: s.value for s in acc.Scalars(key)}
        assert got == {k: pytest.approx(m[key], rel=1e-6) for k, m in steps.items()}, key   # float32 in the file
    summary = json.load(open(out / "summary.json"))
    assert [s.step for s in acc.Scalars("before/greedy_acc")] == [0]
    assert acc.Scalars("after/greedy_acc")[0].value == pytest.approx(summary["after/greedy_acc"])
    assert acc.Scalars("gain/strict")[0].value == pytest.approx(summary["gain/strict"])
    assert [h.step for h in acc.Histograms("items/majority_share")] == [1, 2]
    table = acc.Tensors("before_after/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "| greedy_acc |" in table


def _wandb_records(path):
    """The records of an offline run's .wandb file, decoded with wandb's own protobuf classes
    (wandb 0.31 ships no Python reader: the framing, LevelDB's log format behind a ':W&B' header,
    is read here)."""
    from wandb.proto import wandb_internal_pb2 as pb
    data, block = path.read_bytes(), 32768
    assert data[:7] == b":W&B" + struct.pack("<H", 0xBEE1) + b"\0"
    pos, chunk = 7, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:   # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, n, kind = struct.unpack("<IHB", data[pos:pos + 7])   # crc32, length, full/first/middle/last
        chunk += data[pos + 7:pos + 7 + n]
        pos += 7 + n
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(chunk)
            chunk = b""
            yield record


def _key(item) -> str:
    """A history, summary or config item's key ('reward/mean'; a nested one as 'before_after.nrows')."""
    return item.key or ".".join(item.nested_key)


def test_wandb_offline_history_holds_the_steps_reward(tmp_path, monkeypatch):
    for name, value in (("WANDB_MODE", "offline"), ("WANDB_SILENT", "true"), ("WANDB_CONSOLE", "off"),
                        ("WANDB_DIR", tmp_path), ("WANDB_CONFIG_DIR", tmp_path / "config"),
                        ("WANDB_CACHE_DIR", tmp_path / "cache"), ("WANDB_DATA_DIR", tmp_path / "data")):
        monkeypatch.setenv(name, str(value))
    out = tmp_path / "run"
    assert main(SHORT + ["--out", str(out), "--report-to", "wandb"]) == 0
    files = list((out / "wandb").glob("offline-run-*/run-*.wandb"))   # dir=RUN_DIR
    assert len(files) == 1
    history, summary, config = {}, {}, {}
    for r in _wandb_records(files[0]):
        kind = r.WhichOneof("record_type")
        if kind == "history":
            row = {_key(i): json.loads(i.value_json) for i in r.history.item}
            history.setdefault(row["_step"], {}).update(row)
        elif kind == "summary":
            summary.update({_key(i): json.loads(i.value_json) for i in r.summary.update})
        elif kind == "run":   # wandb.init's config
            config.update({_key(i): json.loads(i.value_json) for i in r.run.config.update})
    steps, end = _steps(out), json.load(open(out / "summary.json"))
    assert sorted(steps) == [1, 2]
    assert {s: history[s]["reward/mean"] for s in steps} == {s: pytest.approx(m["reward/mean"])
                                                            for s, m in steps.items()}
    assert history[0]["before/greedy_acc"] == pytest.approx(end["before/greedy_acc"])
    assert summary["gain/strict"] == pytest.approx(end["gain/strict"])
    assert history[2]["before_after.nrows"] > 0   # the before/after wandb.Table
    assert config["config"]["n_votes"] == 4 and config["demo"] == "format"   # the config.json record


def test_wandb_missing_is_a_usage_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "wandb", None)   # `import wandb` raises ImportError
    with pytest.raises(SystemExit) as stop:   # argparse's exit, before anything loads
        main(SHORT + ["--out", str(tmp_path / "run"), "--report-to", "wandb"])
    assert stop.value.code == 2
    assert "--report-to wandb needs `pip install wandb`" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def _events():
    votes = [ItemVotes("a", {"x": 3, "y": 1}, "x", 0.75, 0.41, 0.2), ItemVotes("b", {"y": 4}, "y", 1.0, 0.0, 0.5)]
    return [RunStart({}, 2, ["a", "b"], 2, "all"), Progress("before", 1, 2),
            EvalResult("before", [], {"eval/greedy_acc": 0.5}),
            StepEvent(1, 2, votes, {"reward/mean": 0.25, "loss/kl": 0.01}),
            StepEvent(2, 2, votes, {"reward/mean": 0.5, "loss/kl": 0.02}),
            EvalResult("after", [], {"eval/greedy_acc": 1.0}),
            RunEnd(False, 1.0, {"before/greedy_acc": 0.5, "after/greedy_acc": 1.0, "gain/strict": 0.5})]


@pytest.fixture
def closes(monkeypatch):
    """The `ok` of each TensorBoard.close call (the real close runs)."""
    calls, close = [], tracking.TensorBoard.close

    def spy(self, ok):
        calls.append(ok)
        close(self, ok)
    monkeypatch.setattr(tracking.TensorBoard, "close", spy)
    return calls


@pytest.mark.parametrize("to", ["none", "tensorboard"])
def test_mirror_passes_events_through_unchanged(tmp_path, closes, to):
    events = _events()
    got = list(tracking.mirror(iter(events), to, tmp_path, {}))
    assert len(got) == len(events) and all(a is b for a, b in zip(got, events))
    assert got == _events()   # and none was changed in place
    assert closes == ([True] if to == "tensorboard" else [])


def test_mirror_closes_the_tracker_however_the_stream_ends(tmp_path, closes):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = _events()

    def failing():
        yield from events[:4]   # up to step 1
        raise RuntimeError("the engine failed")
    with pytest.raises(RuntimeError, match="the engine failed"):
        for _ in tracking.mirror(failing(), "tensorboard", tmp_path / "failed", {}):
            pass
    assert closes == [False]
    acc = EventAccumulator(str(tmp_path / "failed" / "tensorboard"))
    acc.Reload()
    assert [(s.step, s.value) for s in acc.Scalars("reward/mean")] == [(1, 0.25)]   # written out by the close

    stream = tracking.mirror(iter(events), "tensorboard", tmp_path / "stopped", {})
    next(stream)
    stream.close()   # the caller stops iterating
    assert closes == [False, False]
