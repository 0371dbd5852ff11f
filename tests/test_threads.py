"""torch's thread count follows each run (threads.set_threads_for): one thread for a small model on a
CPU, the process's own count for any other, whatever the process's last run set. The app runs one
model after another in one process: a run on the small demo model must not leave every later run
on one thread."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import sys
from types import SimpleNamespace
import torch
torch.set_num_threads(3)                                 # the process's own count: above one on any machine
from ttrv_core.model import loading, threads
from ttrv_core.config import DEMO_MODEL

def threads_after(policy):
    threads.set_threads_for(policy)
    return torch.get_num_threads()

demo = loading.load_policy(DEMO_MODEL, "fp32", "cpu")      # the bundled demo model: small
# a model of 64M parameters, on the meta device: nothing is allocated, set_threads_for counts them
large = SimpleNamespace(device=torch.device("cpu"), base=torch.nn.Linear(8000, 8000, device="meta"))
on_gpu = SimpleNamespace(device=torch.device("cuda"), base=demo.base)
seen = [torch.get_num_threads(), threads_after(demo), threads_after(large), threads_after(demo),
        threads_after(on_gpu)]
torch.set_num_threads(2)                                 # the process sets a count of its own between runs
print(*seen, threads_after(demo), threads_after(large))
"""


def test_each_run_sets_its_own_thread_count():
    """One process, as in the app: the demo model's run, then a large model's, then the demo's again,
    then a small model on a GPU; then the process sets 2 threads itself: that is its own count from then on."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-c", CHILD], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    own, demo, large, demo_again, on_gpu, demo_3, large_3 = map(int, r.stdout.split()[-7:])
    assert own == 3
    assert demo == 1 and demo_again == 1          # tiny matmuls: one thread
    assert large == own                           # not the 1 the demo's run left
    assert on_gpu == own                          # a GPU run's CPU side: the process's own count too
    assert demo_3 == 1 and large_3 == 2
