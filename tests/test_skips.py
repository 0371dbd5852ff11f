"""A skip fails the run unless tests/conftest.py ALLOWED_SKIPS allows it (a pytest run in a subprocess)."""
import subprocess
import sys
from pathlib import Path

TESTS = '''
import pytest

def test_allowed():
    pytest.skip("needs a CUDA GPU (H100)")

@pytest.mark.skipif(True, reason="demo model not built")
def test_marked():
    pass

def test_in_body():
    pytest.skip("transformers without the architecture")

def test_runs():
    assert True
'''
MODULE = '''
def f():
    """
    >>> f()  # doctest: +SKIP
    1
    """
'''


def run(tmp_path: Path, *paths: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "--doctest-modules",
                           *paths], cwd=tmp_path, capture_output=True, text=True, timeout=120)


def test_only_listed_skips_pass(tmp_path):
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "conftest.py").write_text((Path(__file__).parent / "conftest.py").read_text())
    (tmp_path / "tests" / "test_x.py").write_text(TESTS)
    r = run(tmp_path, "tests")
    assert r.returncode == 1, r.stdout
    assert r.stdout.splitlines()[-1].startswith("1 failed, 1 passed, 1 skipped, 1 error"), r.stdout
    assert "SKIPPED [1] tests/test_x.py:5: needs a CUDA GPU (H100)" in r.stdout     # listed: still a skip (-rs)
    assert "not allowed (tests/conftest.py ALLOWED_SKIPS): Skipped: demo model not built" in r.stdout  # at setup
    assert "not allowed (tests/conftest.py ALLOWED_SKIPS): Skipped: transformers without" in r.stdout  # in the test

    # a module that skips itself at import (say, to drop a family of tiny.py): a collection error
    (tmp_path / "tests" / "test_gone.py").write_text('import pytest\npytest.importorskip("no_such_module_here")\n')
    r = run(tmp_path, "tests/test_gone.py")
    assert r.returncode == 2 and "ERROR collecting tests/test_gone.py" in r.stdout, r.stdout

    # a skipped doctest outside tests/, where the conftest's report hooks do not reach
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "mod.py").write_text(MODULE)
    r = run(tmp_path, "tests/test_x.py::test_runs", "pkg")
    assert r.returncode == 1 and "1 skip(s) not allowed" in r.stdout, r.stdout
