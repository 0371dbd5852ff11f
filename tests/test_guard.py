"""The collapse guard: fires on a run driven to one answer, stays silent otherwise."""
import torch

from ttrv_core.method.guard import PATIENCE, WINDOW, CollapseGuard, concentration


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


def test_chance_level_of_few_options_is_not_collapse():
    """With 4 options a quarter of the items share an answer by chance; 0.44 of a 32-item window on
    one letter is no collapse (the floor of 0.4 alone would fire on it), 0.9 is. Open answers keep the floor."""
    assert CollapseGuard(baseline=0.1).threshold() == 0.4
    four = CollapseGuard(baseline=0.1, n_answers=4)
    assert four.threshold() == 0.5
    assert CollapseGuard(baseline=0.1, n_answers=10).threshold() == 0.4

    def step_items(step, share):   # 8 items; about `share` of them answer "A", the rest B, C, D in turn
        k = 3 + step % 2 if share < 0.5 else round(8 * share)   # 3 and 4 in turn: 0.44 of a window
        return {f"s{step}_{i}": "A" if i < k else "BCD"[i % 3] for i in range(8)}

    for guard, fires in ((CollapseGuard(baseline=0.1), True), (CollapseGuard(baseline=0.1, n_answers=4), False)):
        m = Tiny()
        guard.keep(0, m)
        for step in range(1, 4 * WINDOW):
            guard.check(step, step_items(step, 0.45), m)
        assert (guard.fired_at is not None) == fires
    m = Tiny()
    four.keep(0, m)
    for step in range(1, 4 * WINDOW):
        four.check(step, step_items(step, 0.9), m)
    assert four.fired_at is not None


def test_guard_state_keeps_its_number_of_answers():
    g = CollapseGuard(baseline=0.2, n_answers=4)
    h = CollapseGuard()
    h.load_state_dict(g.state_dict(), [])
    assert h.n_answers == 4 and h.threshold() == g.threshold()
    old = {k: v for k, v in g.state_dict().items() if k != "n_answers"}   # a checkpoint from before
    h.load_state_dict(old, [])
    assert h.n_answers == 0


def test_judged_from_min_items_and_at_the_threshold_itself():
    """A window of exactly MIN_ITEMS items is judged, one item fewer is not; a concentration equal to the
    threshold is unhealthy (the rule is c >= threshold): baseline 0.25 puts it at 0.5, and 4 of 8 items
    on one answer is 0.5 exactly."""
    from ttrv_core.method.guard import MIN_ITEMS
    m = Tiny()
    g = CollapseGuard(baseline=0.25)
    assert g.threshold() == 0.5 and MIN_ITEMS == 8
    g.check(1, {f"i{i}": "3" for i in range(MIN_ITEMS - 1)}, m)            # 7 items: not judged
    assert g.unhealthy == 0
    g = CollapseGuard(baseline=0.25)
    assert g.check(1, {f"i{i}": "A" if i < 4 else str(i) for i in range(MIN_ITEMS)}, m) == 0.5
    assert g.unhealthy == 1                                                 # 8 items, at the threshold


def test_unhealthy_windows_must_come_in_a_row():
    """The same 8 items every step, so each window reads the latest step's answers: collapsed and
    varied steps in turn never make PATIENCE unhealthy windows in a row, and a healthy one resets the count."""
    m = Tiny()
    g = CollapseGuard(baseline=0.15)
    g.keep(0, m)
    for step in range(1, 4 * PATIENCE + 2):
        answers = {f"i{i}": "3" if step % 2 else str(i) for i in range(8)}
        g.check(step, answers, m)
        assert g.unhealthy == step % 2
    assert g.fired_at is None
