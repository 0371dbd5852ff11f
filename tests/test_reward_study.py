"""The reward study's report: its table reads run folders, its figures are the answer shares and recall."""
import json

from ttrv_core.cli import main
from ttrv_core.research.reward_study import figures, report


def test_report_reads_run_folders_and_draws_each_groups_answer_shares(tmp_path):
    out = tmp_path / "study"
    for variant, reward in (("ttrv", "ttrv"), ("cal1", "calibrated")):
        assert main(["--demo", "format", "--limit", "12", "--steps", "1", "--votes", "4", "--train", "2",
                     "--eval-votes", "4", "--reward", reward, "--seed", "0",
                     "--out", str(out / "held" / variant / "s0")]) == 0
    table = report(out)
    rows = [line for line in table.splitlines() if line.startswith("| held |")]
    assert [r.split(" | ")[1] for r in rows] == ["cal1", "ttrv"]
    s = json.loads((out / "held" / "ttrv" / "s0" / "summary.json").read_text())
    assert f"{s['before/content_acc']:.3f} → {s['after/content_acc']:.3f}" in rows[1]
    written = figures(out)
    assert sorted(p.name for p in written) == ["held_cal1_recall.html", "held_cal1_shares.html",
                                               "held_ttrv_recall.html", "held_ttrv_shares.html"]
    assert "base model" in (out / "figures" / "held_ttrv_shares.html").read_text()
