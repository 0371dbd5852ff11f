"""`python -m ttrv_core` ends without the interpreter's module teardown (__main__.exit_now), and
loses nothing by it: the run folder is complete, the last lines are printed, the exit code is
main()'s, atexit hooks run."""
import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from ttrv_core.demos import by_key

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import atexit, sys
class Teardown:
    def __del__(self):
        print("module teardown ran", flush=True)
sys.modules["__main__"].kept = Teardown()   # freed only by the interpreter's teardown
atexit.register(lambda: print("atexit ran", flush=True))
from ttrv_core.__main__ import exit_now
print("last line", end="")                  # unflushed: exit_now must flush it
exit_now(int(sys.argv[1]))
"""


def test_exit_now_flushes_runs_atexit_and_skips_the_teardown():
    r = subprocess.run([sys.executable, "-c", CHILD, "3"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 3
    assert r.stdout.startswith("last line") and "atexit ran" in r.stdout
    assert "module teardown ran" not in r.stdout   # the normal exit prints it
    plain = subprocess.run([sys.executable, "-c", CHILD.replace("exit_now(int(sys.argv[1]))", "")], cwd=ROOT,
                           capture_output=True, text=True, timeout=60)
    assert "module teardown ran" in plain.stdout


def test_python_m_ttrv_core_writes_everything_before_it_exits(tmp_path):
    src = by_key("open").example_dir
    rows = list(csv.DictReader(open(src / "questions.csv")))[:3]
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for row in rows:
        shutil.copy(src / row["image"], imgs / row["image"])
    out = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "ttrv_core", "--model", by_key("open").model,
                        "--images", str(imgs), "--question", "Which digit is shown in the image?",
                        "--out", str(out), "--steps", "1", "--votes", "4", "--train", "2"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert "before/entropy" in summary and "after/entropy" in summary
    assert (out / "adapter" / "adapter_config.json").exists()
    events = (out / "events.jsonl").read_text().splitlines()
    assert json.loads(events[-1])["type"] == "run_end"
    assert str(out) in r.stdout + r.stderr                         # the closing lines were printed
