"""The experiment runner on a tiny grid (--quick), one per demo: table, figures and schema, the
summary across demos; corruptions are deterministic."""
import csv
import json

import pytest
from PIL import Image

from ttrv_core.config import TTRVConfig
from ttrv_core.demos import by_key
from ttrv_core.research import experiments as X
from ttrv_core.research.corruptions import CORRUPTIONS, corrupt
from ttrv_core.research.report import ACCS, sci


@pytest.fixture(scope="module")
def grids(tmp_path_factory):
    out = tmp_path_factory.mktemp("exp")
    rc = X.main(["--quick", "--seeds", "0", "--out", str(out), "--no-png"])
    assert rc == 0
    return out


@pytest.fixture(scope="module")
def quick(grids):
    return grids / "format"


def test_each_demo_has_its_grid_and_the_summary_has_both(grids):
    assert X.DEFAULT_DEMOS == ("format", "clean")
    summary = (grids / "summary.md").read_text()
    for demo in X.DEFAULT_DEMOS:
        res = json.loads((grids / demo / "results.json").read_text())
        assert res["demo"] == demo and res["config_base"]["model"] == by_key(demo).model
        assert res["config_base"]["lr"] == by_key(demo).settings.get("lr", TTRVConfig.lr)
        assert f"| {demo} | reward ttrv | 1 |" in summary
        for r in res["runs"]:   # label-free: the share of greedy replies that name no option
            assert 0.0 <= r["before_greedy_invalid"] <= 1.0 and 0.0 <= r["after_greedy_invalid"] <= 1.0
            assert all(0.0 <= s["answers/invalid"] <= 1.0 for s in r["steps"])


FIGURE_TITLES = {"change": "Accuracy change after TTRV", "steps": "Accuracy per step on the adapted items",
                 "lr_sweep": "Learning-rate sweep", "shift": "Corrupted inputs: greedy accuracy",
                 "guard": "Collapse guard: greedy change", "single": "Single-example mode: change on all items",
                 "valid_votes": "Share of the votes that are a valid answer"}


def test_quick_grid_writes_table_and_figures(quick):
    for name, title in FIGURE_TITLES.items():  # each page holds its own figure
        html = (quick / "figures" / f"{name}.html").read_text()
        assert title in html and "Plotly.newPlot" in html, name

    res = json.loads((quick / "results.json").read_text())
    with open(quick / "runs.csv") as f:
        assert [r["setting"] for r in csv.DictReader(f)] == [r["setting"] for r in res["runs"]]
    logged = [json.loads(line) for line in (quick / "runs.jsonl").read_text().splitlines()]
    assert [d["row"]["setting"] for d in logged] == [r["setting"] for r in res["runs"]]
    groups = {r["group"] for r in res["runs"]}
    assert groups == set(X.GROUPS)
    for r in res["runs"]:
        for k in (*ACCS, "concentration"):
            assert 0.0 <= r[f"before_{k}"] <= 1.0 and 0.0 <= r[f"after_{k}"] <= 1.0
            assert r[f"d_{k}"] == pytest.approx(100 * (r[f"after_{k}"] - r[f"before_{k}"]))
        assert r["steps_done"] == len(r["steps"]) <= r["total_steps"]
        assert all("acc/single" in s and "acc/majority" in s for s in r["steps"])
    assert res["png"].startswith("PNG export not asked for")

    with open(quick / "table.csv") as f:
        table = list(csv.DictReader(f))
    assert {"group", "setting", "runs", "d_greedy_acc_mean", "d_greedy_acc_std", "guard_fired"} <= set(table[0])
    assert "single example, all 1 images" in {t["setting"] for t in table}
    assert (quick / "table.md").read_text().startswith("| group | setting |")


def test_cached_before_eval_matches_and_rewards_agree(quick):
    res = json.loads((quick / "results.json").read_text())
    runs = res["runs"]
    # the guard-off and single-example runs reuse the base evaluation; runs with the guard measure it again
    assert {r["before_source"] for r in runs if not r["guard"] or r["single"]} == {"cached"}
    assert res["checks"]["before_evals_measured_again"] >= 1
    assert res["checks"]["before_check_max_abs_diff"] == 0.0
    # ttrv = frequency + a per-group constant: z-scored advantages agree to float32 rounding
    (ident,) = res["ttrv_vs_frequency"]
    assert ident["advantage_gap"] < 1e-5 and ident["max_loss_pg_diff"] < 1e-5
    # a run whose guard did not fire trains exactly as with the guard off
    by = {r["setting"]: r for r in runs}
    assert by["reward ttrv"]["guard_fired_step"] == ""
    lr = sci(res["config_base"]["lr"])
    assert by["reward ttrv"]["after_greedy_acc"] == by[f"lr {lr}, guard off"]["after_greedy_acc"]


def test_report_only_rebuilds_from_runs_jsonl(quick):
    before = (quick / "table.csv").read_text()
    (quick / "table.csv").unlink()
    assert X.main(["--quick", "--demos", "format", "--out", str(quick.parent), "--no-png", "--report-only"]) == 0
    assert (quick / "table.csv").read_text() == before


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_corruptions_are_deterministic_and_change_the_image(name):
    im = Image.open(by_key("open").example_dir / "digit_0000.png").convert("RGB")
    a, b = corrupt(im, name, "digit_0000.png"), corrupt(im, name, "digit_0000.png")
    assert a.size == im.size and a.mode == "RGB"
    assert a.tobytes() == b.tobytes() != im.tobytes()


def test_own_images_go_through_the_one_data_path(tmp_path, monkeypatch, capsys):
    """--images takes what the CLI and the app take (inputs.collect / inputs.load): a .zip of
    labelled images with its questions file, and a bad file in it reported, the good items run."""
    import zipfile
    digits = by_key("open").example_dir
    rows = (digits / "questions.csv").read_text().splitlines()[:4]           # header + 3 labelled images
    zpath = tmp_path / "mine.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        z.writestr("questions.csv", "\n".join(rows) + "\n")
        for row in rows[1:]:
            z.write(digits / row.split(",")[0], row.split(",")[0])
        z.writestr("broken.png", b"not an image")
    seen = {}
    monkeypatch.setattr(X, "_grid_outputs", lambda a, name, items, base, command: seen.setdefault(name, items) and [])
    monkeypatch.setattr(X, "summary_markdown", lambda tables: "")
    assert X.main(["--images", str(zpath), "--task", "open", "--out", str(tmp_path / "out"), "--no-png"]) == 0
    assert [it.id for it in seen["custom"]] == [r.split(",")[0] for r in rows[1:]]
    assert all(it.reference is not None for it in seen["custom"])
    assert "broken.png" in capsys.readouterr().err
