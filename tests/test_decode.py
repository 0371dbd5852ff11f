"""The kept static decoder (decode.py) does not outlive its model.

Run in a fresh interpreter: pytest's own bookkeeping can hold a frame of
load_policy (and so the model) alive, which would hide or fake the answer."""
import subprocess
import sys
from pathlib import Path

SCRIPT = """
import gc, weakref
from PIL import Image
from ttrv_core import decode
from ttrv_core.config import DEMO_MODEL
from ttrv_core.models import load_policy
from ttrv_core.rollout import prepare_prompt, sample

pol = load_policy(DEMO_MODEL, "fp32", "cpu")
prompt = prepare_prompt(pol, Image.new("RGB", (32, 32)), "Which digit is shown in the image?")
a = sample(pol, prompt, 4, max_new_tokens=3, decode="static")
b = sample(pol, prompt, 4, max_new_tokens=3, decode="static")  # the same buffers, loaded again
assert len(decode._live) == 1 and a.tokens.shape[0] == b.tokens.shape[0] == 4
model = weakref.ref(pol.model)
del pol
gc.collect()
assert model() is None, "the kept decoder keeps the model alive"
assert not decode._live, "the model's end did not release its decoder"
print("ok")
"""


def test_kept_decoder_is_freed_with_its_model():
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "-c", SCRIPT], cwd=root, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-2000:]
