"""The collapse guard: fires on a run driven to one answer, stays silent otherwise."""
import torch

from ttrv_core.guard import PATIENCE, WINDOW, CollapseGuard, concentration


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(3))
        self.frozen = torch.nn.Parameter(torch.zeros(2), requires_grad=False)


def varied(step):  # 8 new items per step, 10 different answers: healthy
    return {f"s{step}_{i}": str((step * 8 + i) % 10) for i in range(8)}


def same(step):    # every item answers "3"
    return {f"s{step}_{i}": "3" for i in range(8)}


def test_concentration():
    assert concentration(["1", "2", "3", "4"]) == 0.25
    assert concentration(["7"] * 8) == 1.0
    assert concentration([]) == 0.0


def test_fires_after_patience_and_rolls_back():
    m = Tiny()
    g = CollapseGuard(baseline=0.15)
    g.keep(0, m)
    for step in range(1, 5):                                  # healthy steps 1..4, weights = step
        m.w.data.fill_(float(step))
        assert g.check(step, varied(step), m) < g.threshold()
    assert g.fired_at is None
    step = 5
    while g.fired_at is None:                                 # now the run collapses
        m.w.data.fill_(float(step))
        g.check(step, same(step), m)
        step += 1
        assert step < 5 + WINDOW + PATIENCE + 1, "guard never fired"
    # step 5's window (one collapsed step, three varied) still read healthy, so the WINDOW
    # healthy states kept are steps 2..5 and the guard goes back to the oldest: step 2
    assert g.fired_at == 7
    assert g.restored_step == 2 and torch.equal(m.w.data, torch.full((3,), 2.0))
    assert "rolled back to step 2" in g.message()


def test_silent_on_a_healthy_run_and_respects_baseline():
    m = Tiny()
    g = CollapseGuard(baseline=0.15)
    g.keep(0, m)
    for step in range(1, 30):
        g.check(step, varied(step), m)
    assert g.fired_at is None and g.message() is None
    # a naturally concentrated set (yes/no, 70% yes) sets a higher threshold
    g = CollapseGuard(baseline=0.7)
    for step in range(1, 30):
        g.check(step, {f"s{step}_{i}": "yes" if i < 7 else "no" for i in range(8)}, m)
    assert g.fired_at is None


def test_silent_on_single_example():
    m = Tiny()
    g = CollapseGuard(baseline=0.1)
    g.keep(0, m)
    for step in range(1, 10):
        g.check(step, {"one.png": "3"}, m)                    # one image repeated: not a signal
    assert g.fired_at is None
