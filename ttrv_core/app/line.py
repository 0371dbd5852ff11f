"""The line of runs: visitors' runs go one at a time (one GPU), in the order Run was pressed, and
each waiting visitor is told where they stand and about how long it will take.

Gradio's own queue keeps its position out of sight when a handler streams its own status, so
the app keeps this line itself: the Run handler joins it, streams `waiting()` while others are
ahead, and runs once `turn()` says so; leaving (Stop, a closed tab, the end of the run) lets
the next one go. The wait is estimated from what is measured: the run under way says how long
it has left (LiveRun.left_s), and each run ahead not started yet counts as the mean length of
the runs finished so far. Before any run has finished the wait is not known, and the words say so.
Gradio-free.
"""
from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from statistics import mean
from typing import Callable, Iterator

from ttrv_core.app.live_run import duration


@dataclass(eq=False)
class Ticket:
    number: int
    joined: float = field(default_factory=time.time)
    started: float | None = None     # its turn came
    left_s: Callable | None = None    # () -> (seconds left, known) of its run, once started
    told: list = field(default_factory=list)   # the positions it was told, in order
    gone: bool = False               # it left the line before its turn (Stop, a closed tab)


class Line:
    def __init__(self, slots: int = 1, remember: int = 20):
        self.slots = slots
        self._cond = threading.Condition()
        self._tickets: list[Ticket] = []          # running first, then waiting, in order of joining
        self._numbers = itertools.count(1)
        self.lengths: deque[float] = deque(maxlen=remember)   # seconds of the last runs finished

    def join(self) -> Ticket:
        with self._cond:
            t = Ticket(next(self._numbers))
            self._tickets.append(t)
            return t

    def position(self, t: Ticket) -> int:
        """1-based place in the line, the runs under way counted: 1 = running (or about to)."""
        with self._cond:
            return self._tickets.index(t) + 1 if t in self._tickets else 0

    def turn(self, t: Ticket, timeout: float = 1.0) -> bool:
        """Wait up to `timeout` s for this ticket's turn; True once it may run (it then counts as running)."""
        with self._cond:
            self._cond.wait_for(lambda: t not in self._tickets or self._tickets.index(t) < self.slots, timeout)
            if t in self._tickets and self._tickets.index(t) < self.slots:
                t.started = t.started or time.time()
                return True
            return False

    def waits(self, t: Ticket) -> Iterator[str]:
        """The words to show while `t` waits, about every second; ends at its turn, or when it left the
        line (t.gone)."""
        wait = 0.0   # told at once when others are ahead, then every second
        while not self.turn(t, timeout=wait):
            if t.gone:
                return
            yield self.waiting(t)
            wait = 1.0

    def leave(self, t: Ticket) -> None:
        """The run ended (or the visitor left the line): the next one goes."""
        with self._cond:
            if t in self._tickets:
                self._tickets.remove(t)
                if t.started is not None:
                    self.lengths.append(time.time() - t.started)
                t.gone = t.started is None
            self._cond.notify_all()

    def wait_s(self, t: Ticket) -> float | None:
        """Seconds until this ticket's turn, estimated from measurements; None while not known."""
        with self._cond:
            ahead = self._tickets[:self._tickets.index(t)] if t in self._tickets else []
        if not ahead:
            return 0.0
        typical = mean(self.lengths) if self.lengths else None
        total = 0.0
        for a in ahead:
            if a.started is None:
                if typical is None:
                    return None
                total += typical
                continue
            left, known = a.left_s() if a.left_s else (None, False)
            if left is None or not known:
                if typical is None:
                    return None
                left = max(typical - (time.time() - a.started), left or 0.0)
            total += left
        return total / self.slots

    def waiting(self, t: Ticket) -> str:
        """The words for a visitor waiting in line (and records the position told)."""
        pos = self.position(t)
        t.told.append(pos)
        s = self.wait_s(t)
        when = ("the wait is known once the run ahead has measured its pace" if s is None else
                f"about {duration(s)}")
        ahead = pos - 1
        return (f"You are {ordinal(pos)} in line, {when}. {ahead} run{'s' * (ahead != 1)} "
                f"{'go' if ahead != 1 else 'goes'} before yours, one at a time on this machine's "
                "processor or GPU; yours starts by itself (keep this tab open). Stop leaves the line.")


def ordinal(n: int) -> str:
    """
    >>> [ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 101)]
    ['1st', '2nd', '3rd', '4th', '11th', '12th', '13th', '21st', '22nd', '101st']
    """
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"
