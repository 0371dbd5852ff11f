"""`background`: the engine's event stream run in a thread, its events handed over a few times a
second, so that drawing the page never slows the run down, and the page can tick while the model
loads."""
from __future__ import annotations

import contextvars
import queue
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator

from ttrv_core.events import EvalResult, Progress, RunEnd, RunStart


def background(events: Iterator, every_s: float = 0.25, abandon: Callable[[], None] = lambda: None) -> Iterator[list]:
    """Iterate `events` in a thread (in a copy of this context); yield the events that arrived, at most
    every `every_s` (an empty list when none did), at once after a run's start, an evaluation's
    first image or result, and its end. An exception of the stream is raised here. If the caller
    stops early, `abandon()` (which should stop the run) is called and the thread waited for."""
    box: queue.Queue = queue.Queue()
    end = object()

    def pump() -> None:
        try:
            for ev in events:
                box.put(ev)
        except BaseException as e:  # noqa: BLE001 - handed to the caller, raised there
            box.put(_Raised(e))
        finally:
            box.put(end)

    thread = threading.Thread(target=contextvars.copy_context().run, args=(pump,), name="ttrv-run", daemon=True)
    thread.start()
    done, failed = False, None
    try:
        while not done:
            batch, deadline = [], time.time() + every_s
            while (wait := deadline - time.time()) > 0:
                try:
                    ev = box.get(timeout=wait)
                except queue.Empty:
                    break
                if ev is end or isinstance(ev, _Raised):
                    done, failed = True, ev if ev is not end else None
                    break
                batch.append(ev)
                if isinstance(ev, (RunStart, EvalResult, RunEnd)) or isinstance(ev, Progress) and ev.done == 1:
                    break
            if batch or not done:
                yield batch  # the events before an error too
            if failed is not None:
                raise failed.error
    finally:
        if not done:
            abandon()
            thread.join()


@dataclass
class _Raised:
    error: BaseException
