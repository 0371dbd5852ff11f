import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """family -> folder of a tiny random checkpoint (built once per session)."""
    from tiny import build_qwen
    root = tmp_path_factory.mktemp("tiny")
    return {fam: build_qwen(root / fam, fam) for fam in ("qwen2_5_vl", "qwen2_vl")}
