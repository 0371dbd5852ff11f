"""The same seed gives the same run on CPU: every event apart from wall-clock times, and
results.csv byte for byte. A different seed gives a different run (so the check has teeth)."""
import json

from ttrv_core.cli import main

ARGS = ["--limit", "6", "--train-items", "6", "--prompts-per-step", "2", "--votes", "8", "--train", "4",
        "--steps", "4", "--eval-votes", "4"]


def untimed(folder) -> list[dict]:
    """Every event of the log without its wall-clock numbers (time/* metrics, run seconds)."""
    out = []
    for line in (folder / "events.jsonl").read_text().splitlines():
        e = json.loads(line)
        if "metrics" in e:
            e["metrics"] = {k: v for k, v in e["metrics"].items() if not k.startswith("time/")}
        e.pop("seconds", None)
        out.append(e)
    return out


def test_same_seed_same_run(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for out, seed in ((a, "7"), (b, "7"), (c, "8")):
        assert main(["--out", str(out), "--seed", seed, *ARGS]) == 0
    ea, eb = untimed(a), untimed(b)
    assert [e["type"] for e in ea].count("step") == 4
    assert ea == eb
    assert (a / "results.csv").read_bytes() == (b / "results.csv").read_bytes()
    assert (a / "summary.json").read_text() == (b / "summary.json").read_text()
    assert (a / "adapter" / "adapter_model.safetensors").read_bytes() == \
        (b / "adapter" / "adapter_model.safetensors").read_bytes()
    steps = [e for e in untimed(c) if e["type"] == "step"]
    assert steps != [e for e in ea if e["type"] == "step"]
