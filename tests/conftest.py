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


@pytest.fixture(scope="module")
def one_thread():
    """Tiny matmuls: waking a second OpenMP thread costs more than it saves (bitsandbytes'
    CPU kernels most of all), and far more when another process holds the other core.
    Modules of tiny-model tests use it with pytestmark = pytest.mark.usefixtures("one_thread")."""
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def oom_in_step_2(monkeypatch):
    """engine._step raises CUDA's out-of-memory error in the run's second step (simulated)."""
    import torch

    import ttrv_core.engine as engine
    real_step, calls = engine._step, []

    def flaky_step(*a, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_step(*a, **kw)

    monkeypatch.setattr(engine, "_step", flaky_step)
