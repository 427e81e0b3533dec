"""When a dead process is started again: Docker's restart policy, on a fake clock."""

from __future__ import annotations

from devmesh.runtime.supervision import FIRST_DELAY, MOST_DELAY, STABLE_AFTER, RestartSchedule


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_running_process_is_left_alone() -> None:
    schedule = RestartSchedule(Clock())
    assert schedule.observe("web", alive=True) == "running"
    assert schedule.due("web") is None


def test_the_first_restart_comes_at_once_and_each_next_waits_twice_as_long() -> None:
    clock = Clock()
    schedule = RestartSchedule(clock)
    waits = []
    for _ in range(12):
        assert schedule.observe("web", alive=False) in ("wait", "start")
        due = schedule.due("web")
        assert due is not None
        waits.append(round(due - clock.now, 3))
        clock.now = due
        assert schedule.observe("web", alive=False) == "start"
        schedule.started("web")
        clock.now += 1.0  # it dies again a second later
    assert waits[:4] == [FIRST_DELAY, FIRST_DELAY * 2, FIRST_DELAY * 4, FIRST_DELAY * 8]
    assert max(waits) == MOST_DELAY, "capped"


def test_it_waits_until_it_is_due() -> None:
    clock = Clock()
    schedule = RestartSchedule(clock)
    schedule.observe("web", alive=False)
    schedule.started("web")
    clock.now += 1.0
    assert schedule.observe("web", alive=False) == "wait"
    clock.now += FIRST_DELAY * 2 - 0.01
    assert schedule.observe("web", alive=False) == "wait"
    clock.now += 0.02
    assert schedule.observe("web", alive=False) == "start"


def test_a_process_that_stayed_up_long_enough_starts_the_count_again() -> None:
    clock = Clock()
    schedule = RestartSchedule(clock)
    for _ in range(5):  # five quick deaths: the delay has grown
        schedule.observe("web", alive=False)
        clock.now = schedule.due("web") or clock.now
        schedule.started("web")
    clock.now += STABLE_AFTER
    assert schedule.observe("web", alive=True) == "running"
    schedule.observe("web", alive=False)
    assert schedule.due("web") == clock.now + FIRST_DELAY


def test_one_that_comes_back_by_other_means_is_no_longer_due() -> None:
    clock = Clock()
    schedule = RestartSchedule(clock)
    schedule.observe("web", alive=False)
    assert schedule.observe("web", alive=True) == "running"  # `up` started it meanwhile
    assert schedule.due("web") is None


def test_forgetting_a_process_starts_its_count_afresh() -> None:
    clock = Clock()
    schedule = RestartSchedule(clock)
    for _ in range(4):
        schedule.observe("web", alive=False)
        clock.now = schedule.due("web") or clock.now
        schedule.started("web")
    schedule.forget("web")  # stopped on purpose, then restarted by hand
    schedule.observe("web", alive=False)
    assert schedule.due("web") == clock.now + FIRST_DELAY
