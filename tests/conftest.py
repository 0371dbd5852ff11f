import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """model_type -> folder of a tiny random checkpoint (each built on first use, once per session)."""
    from tiny import TinyModels
    return TinyModels(tmp_path_factory.mktemp("tiny"))
