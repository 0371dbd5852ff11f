"""A real app process (`python app.py`) ended by SIGTERM (a container stop, systemd, a Space restart) or
SIGINT (Ctrl-C) removes its session folders, uploads included, as a normal exit does, and ends with
the signal's conventional status."""
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(tmp: Path, port: int) -> subprocess.Popen:
    """`python app.py` with its temp dir (sessions.APP_DIR, gradio's cache) under `tmp`; SIGINT as a
    terminal would deliver it (a shell that starts jobs in the background may have it ignored)."""
    env = dict(os.environ, TMPDIR=str(tmp), GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(port),
               GRADIO_ANALYTICS_ENABLED="False", PYTHONPATH=str(ROOT))
    env.pop("TTRV_PUBLIC", None)
    return subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for_port(proc: subprocess.Popen, port: int, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the app ended before it served: {proc.stdout.read()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.5)
    proc.kill()
    pytest.fail("the app did not serve within the time")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_removes_the_session_folders(tmp_path, sig):
    from gradio_client import Client, handle_file
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    png = tmp_path / "seven.png"
    Image.new("RGB", (28, 28), (200, 30, 30)).save(png)
    port = free_port()
    proc = start_app(tmp, port)
    try:
        wait_for_port(proc, port)
        roots = list(tmp.glob(f"ttrv-app-{proc.pid}-*"))
        assert len(roots) == 1, list(tmp.iterdir())
        info = Client(f"http://127.0.0.1:{port}/", verbose=False).predict(
            source="My images", example=None, uploads=[handle_file(str(png))], folder=None, question="Which digit?",
            qfile=None, task="open", options="", api_name="/preview")[0]
        assert "1 image(s) ready" in info, info
        uploads = [p for p in roots[0].rglob("seven.png")]
        assert uploads, "the upload was not copied into a session folder"
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert not roots[0].exists(), f"the session folders are still there after {sig.name}:\n{out[-3000:]}"
    assert not list(tmp.rglob("seven.png")), "a copy of the upload is still there"   # gradio's cache too
    assert proc.returncode == -sig, (proc.returncode, out[-3000:])


CHAINED = """
import os, signal, sys, time
from pathlib import Path
def mine(signum, frame):                    # a handler set before (parallel.init sets one for SIGTERM)
    print("previous ran", all(not r.exists() for r in roots), flush=True)
    sys.exit(7)
signal.signal(signal.SIGTERM, mine)
signal.signal(signal.SIGINT, signal.SIG_IGN)
from ttrv_core.app import sessions
roots = [sessions.make_root(Path(sys.argv[1])), sessions.make_root(Path(sys.argv[1]))]
sessions.clean_up_on_signals()
assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN    # ignored stays ignored
os.kill(os.getpid(), signal.SIGINT)
assert all(r.exists() for r in roots)
os.kill(os.getpid(), signal.SIGTERM)
time.sleep(30)
"""


def test_a_handler_set_before_runs_after_the_clean_up(tmp_path):
    r = subprocess.run([sys.executable, "-c", CHAINED, str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                       timeout=120, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert r.returncode == 7 and "previous ran True" in r.stdout, r.stdout + r.stderr[-2000:]
    assert list(tmp_path.iterdir()) == []
