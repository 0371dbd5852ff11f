"""The collapse guard: fires on a run driven to one answer, stays silent otherwise."""
import torch

from ttrv_core.guard import CollapseGuard, concentration


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(3))
        self.frozen = torch.nn.Parameter(torch.zeros(2), requires_grad=False)


def test_concentration():
    assert concentration(["1", "2", "3", "4"]) == 0.25
    assert concentration(["7"] * 8) == 1.0
    assert concentration([]) == 0.0


def test_fires_after_patience_and_rolls_back():
    m = Tiny()
    g = CollapseGuard(baseline=0.2)
    g.keep(m)
    varied = {f"im{i}": str(i % 4) for i in range(8)}        # concentration 0.25: healthy
    same = {f"im{i}": "3" for i in range(8)}                 # everything answers "3"
    m.w.data.fill_(1.0)
    assert g.check(1, varied, m) == 0.25 and g.fired_at is None and g.healthy_step == 1
    m.w.data.fill_(2.0)
    assert g.check(2, same, m) == 1.0 and g.fired_at is None  # one bad step is not enough
    m.w.data.fill_(3.0)
    g.check(3, same, m)
    assert g.fired_at == 3
    assert torch.equal(m.w.data, torch.ones(3))               # back to the weights after step 1
    assert "rolled back to step 1" in g.message()


def test_recovers_and_respects_baseline():
    m = Tiny()
    g = CollapseGuard(baseline=0.7)                          # a naturally concentrated set: threshold 0.95
    g.keep(m)
    mostly = {f"im{i}": "yes" if i < 7 else "no" for i in range(8)}  # 0.875 < 0.95
    for step in range(1, 5):
        g.check(step, mostly, m)
    assert g.fired_at is None and g.message() is None


def test_silent_on_single_example():
    m = Tiny()
    g = CollapseGuard(baseline=0.1)
    g.keep(m)
    for step in range(1, 5):
        g.check(step, {"one.png": "3"}, m)                   # one image repeated: not a signal
    assert g.fired_at is None
