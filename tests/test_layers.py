"""The layers hold (docs/ARCHITECTURE.md): import-linter's contracts in pyproject.toml, every import
running down the layers, no import circles at any depth, gradio only in app/. A wrong-way import fails
here, not in a review."""
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def lint(root: Path = ROOT) -> subprocess.CompletedProcess:
    """lint-imports on the ttrv_core under `root` (with its pyproject.toml), no cache written."""
    return subprocess.run([sys.executable, "-c", "from importlinter.cli import lint_imports_command; "
                           "lint_imports_command()", "--no-cache"], cwd=root, capture_output=True, text=True)


def test_every_import_runs_down_the_layers_with_no_circles():
    got = lint()
    assert got.returncode == 0, got.stdout[-3000:] + got.stderr[-2000:]
    assert got.stdout.count("KEPT") == 3 and "BROKEN" not in got.stdout


def test_a_wrong_way_import_breaks_the_contract(tmp_path):
    """The check can fail: config.py importing the engine (a layer above it) is reported (on a copy)."""
    shutil.copytree(ROOT / "ttrv_core", tmp_path / "ttrv_core", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    config = tmp_path / "ttrv_core" / "config.py"
    config.write_text(config.read_text(encoding="utf-8") + "\nfrom ttrv_core.method import engine  # noqa\n",
                      encoding="utf-8")
    got = lint(tmp_path)
    assert got.returncode != 0 and "ttrv_core.config is not allowed to import ttrv_core.method" in got.stdout
