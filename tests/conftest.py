import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

# peft with its 4-bit layers, imported before any test runs the CLI in-process (whose only_model load
# imports peft without bitsandbytes when it comes first): as the app does at start (loading.import_peft).
# Otherwise a 4-bit test after such a test fails in a subset of the suite and passes in the whole.
import peft  # noqa: E402,F401

# A skip hides whatever the test would have found (a transformers upgrade that drops a family, a
# missing demo model, an uninstalled browser): every skip fails the run unless its reason matches
# one of these, where the skip is expected. (pattern in the skip reason, applies here, why allowed)
ALLOWED_SKIPS = (
    ("needs a CUDA GPU", True, "GPU-only checks; CI runs on CPU"),
    ("could not import 'bitsandbytes'", sys.platform != "linux",
     "requirements.txt installs bitsandbytes on Linux only"),
)


def skip_allowed(reason: str) -> bool:
    return any(pattern in reason and applies for pattern, applies, _ in ALLOWED_SKIPS)


def _fail_unlisted_skip(report) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        if not skip_allowed(reason):
            report.outcome = "failed"
            report.longrepr = f"skipped, and the skip is not allowed (tests/conftest.py ALLOWED_SKIPS): {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _fail_unlisted_skip(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    _fail_unlisted_skip(outcome.get_result())


def pytest_sessionfinish(session, exitstatus):
    """The hooks above see tests/ only; a skip elsewhere (a doctest in ttrv_core) fails the run here."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    bad = [r for r in skipped if not hasattr(r, "wasxfail") and not skip_allowed(str(r.longrepr))]
    if bad and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        reporter.write_line(f"{len(bad)} skip(s) not allowed (tests/conftest.py ALLOWED_SKIPS): "
                            + "; ".join(f"{r.nodeid}: {r.longrepr}" for r in bad), red=True)


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
    """engine.train_step raises CUDA's out-of-memory error in the run's second step (simulated)."""
    import torch

    import ttrv_core.method.engine as engine
    real_step, calls = engine.train_step, []

    def flaky_step(*a, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_step(*a, **kw)

    monkeypatch.setattr(engine, "train_step", flaky_step)
