"""`python -m ttrv_core` and the `ttrv` command: the CLI, then a quick exit.

Once a run has ended, its files are closed (runs/folder.py fsyncs them) and its last line is printed,
the interpreter would still tear down torch, transformers and peft module by module before the
shell prompt comes back: seconds on a small CPU (bench/RESULTS.md, "The interpreter's exit skipped").
So after main() returns, the streams are flushed, the atexit hooks run (logging's, the app's
temporary folders) and the process ends there. An exception leaves the normal way, traceback
and all."""
import atexit
import os
import sys

from ttrv_core.cli import main


def exit_now(code: int) -> None:
    """End the process with `code` after flushing the standard streams and running the atexit
    hooks, without the interpreter's module teardown."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken pipe: nothing more can be said on it
            pass
    atexit._run_exitfuncs()
    os._exit(code)


def run() -> None:
    exit_now(main())


if __name__ == "__main__":
    run()
