"""`pip install .` (pyproject.toml) gives the `ttrv` command and ships the demo models and example
sets as package data: the installed copy finds them inside itself, away from the checkout."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_pip_install_gives_the_ttrv_command_and_the_demo_models(tmp_path):
    target = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                        "-q", "--target", str(target), str(ROOT)], capture_output=True, text=True, timeout=300,
                       cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    env = {**os.environ, "PYTHONPATH": str(target)}
    where = subprocess.run([sys.executable, "-c", "import ttrv_core.demos as d, ttrv_core.config as c; "
                            "print(d.__file__); print(c.DEMO_MODEL); print(*(x.model for x in d.DEMOS)); "
                            "print(*(len([f for f in x.example_dir.iterdir() if f.suffix in ('.png', '.gif')]) "
                            "for x in d.DEMOS))"],
                           capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert where.returncode == 0, where.stderr[-2000:]
    module, demo_model, models, files = where.stdout.split("\n")[:4]   # files: images or clips
    assert Path(module).is_relative_to(target)   # the installed copy, not the checkout
    assert Path(demo_model).is_relative_to(target) and (Path(demo_model) / "model.safetensors").is_file()
    assert all(Path(m).is_relative_to(target) and (Path(m) / "config.json").is_file() for m in models.split())
    assert all(int(n) > 0 for n in files.split())
    cmd = subprocess.run([str(target / "bin" / "ttrv"), "--help"], capture_output=True, text=True, env=env,
                         cwd=tmp_path, timeout=120)
    assert cmd.returncode == 0 and "--demo" in cmd.stdout, cmd.stderr[-2000:]
