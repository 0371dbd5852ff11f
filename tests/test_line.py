"""The line of runs (ttrv_core/app/line.py): one at a time, in the order Run was pressed, each
waiting visitor told its place and a wait estimated from measured runs, Stop leaving the line."""
import threading
import time

from ttrv_core.app.line import Line


def test_runs_go_one_at_a_time_in_the_order_they_joined():
    line, order = Line(), []
    tickets = [line.join() for _ in range(3)]
    assert [line.position(t) for t in tickets] == [1, 2, 3]

    def run(t):
        while not line.turn(t, timeout=0.05):
            pass
        order.append(t.number)
        time.sleep(0.05)
        line.leave(t)

    threads = [threading.Thread(target=run, args=(t,)) for t in reversed(tickets)]   # asked in the other order
    for th in threads:
        th.start()
    for th in threads:
        th.join(5)
    assert order == [t.number for t in tickets]
    assert len(line.lengths) == 3 and all(s >= 0.04 for s in line.lengths)


def test_the_wait_is_unknown_until_measured_then_the_running_run_and_typical_runs():
    line = Line()
    first, second, third = line.join(), line.join(), line.join()
    assert line.turn(first, timeout=0) and not line.turn(second, timeout=0)
    assert line.wait_s(second) is None                      # nothing measured yet
    assert "You are 2nd in line" in line.waiting(second) and "known once" in line.waiting(second)
    first.left_s = lambda: (30.0, True)                     # the run under way says it has 30 s left
    assert line.wait_s(second) == 30.0
    assert line.wait_s(third) is None                       # a run not started has no measured length yet
    line.lengths.extend([100.0, 140.0])
    assert line.wait_s(third) == 30.0 + 120.0
    assert "You are 3rd in line, about 2 min 30 s" in line.waiting(third)
    assert third.told == [3]
    first.left_s = lambda: (None, False)                    # not measured yet: the typical run, less its time so far
    assert 119.0 <= line.wait_s(second) <= 120.0


def test_leaving_the_line_moves_the_others_up_and_is_marked():
    line = Line()
    first, second, third = line.join(), line.join(), line.join()
    line.leave(second)                                      # Stop while waiting
    assert second.gone and line.position(second) == 0 and not line.turn(second, timeout=0)
    assert line.position(third) == 2
    assert line.turn(first, timeout=0)
    line.leave(first)
    assert not first.gone and line.turn(third, timeout=0)


def test_a_visitor_behind_another_is_told_at_once():
    line = Line()
    first, second = line.join(), line.join()
    assert line.turn(first, timeout=0)
    t0 = time.time()
    words = next(line.waits(second))
    assert "You are 2nd in line" in words and time.time() - t0 < 0.5
    assert list(line.waits(first)) == []          # its turn: nothing to say
