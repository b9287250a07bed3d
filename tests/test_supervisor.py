"""The one child-process supervisor shape and the one backoff helper.

Real children (``sh``), a real event loop; the clock of the loop-free tests is a variable,
so the restart timing is checked exactly without waiting for it.
"""

from __future__ import annotations

import select
import subprocess
import time
from typing import Any

import pytest

from energyhubd.backoff import Backoff
from energyhubd.loop import EventLoop
from energyhubd.supervisor import ChildProcess, LoopWatch
from tests import loopthread
from tests.loopthread import on_loop


class Shell(ChildProcess):
    name = "sh"

    def __init__(self, script: str, **kwargs: Any) -> None:
        super().__init__(Backoff(1.0, 8.0, rand=lambda: 1.0), **kwargs)
        self.script = script
        self.exits: list[tuple[int | None, float]] = []

    def popen(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(["sh", "-c", self.script])

    def exited(self, code: int | None, ran: float) -> None:
        self.exits.append((code, ran))


def wait_exit(child: ChildProcess) -> None:
    fd = child.fileno()
    assert fd is not None
    assert select.select([fd], [], [], 5)[0], "the pidfd never became readable"
    child.on_exit()


def test_a_dying_child_is_restarted_after_a_growing_capped_backoff() -> None:
    now = [100.0]
    child = Shell("exit 3", clock=lambda: now[0], stable_after=30.0)
    child.start()
    delays = []
    for _ in range(5):
        wait_exit(child)
        assert child.exits[-1][0] == 3 and child.fileno() is None
        deadline = child.next_deadline()
        assert deadline is not None
        delays.append(deadline - now[0])
        now[0] = deadline - 0.01
        child.tick()  # not yet due: nothing starts
        assert child.proc is None
        now[0] = deadline
        child.tick()
        assert child.proc is not None
    assert delays == [1.0, 2.0, 4.0, 8.0, 8.0]  # rand 1.0: the top of each range, capped
    assert child.restarts == 5
    child.halt("test over")
    assert child.fileno() is None and child.next_deadline() is None


def test_a_child_that_ran_long_enough_restarts_quickly_again() -> None:
    now = [0.0]
    child = Shell("exit 0", clock=lambda: now[0], stable_after=30.0)
    child.start()
    wait_exit(child)  # ran 0 s: 1 s, then 2 s
    now[0] = child.next_deadline() or 0.0
    child.tick()
    wait_exit(child)
    assert child.next_deadline() == pytest.approx(now[0] + 2.0)
    now[0] = child.next_deadline() or 0.0
    child.tick()
    now[0] += 60.0  # this one "ran" a minute
    wait_exit(child)
    assert child.next_deadline() == pytest.approx(now[0] + 1.0)
    child.halt("test over")


def test_a_halted_child_is_not_restarted() -> None:
    child = Shell("sleep 30")
    child.start()
    pid = child.pid
    assert pid is not None
    child.halt("stopped")
    assert child.proc is None and child.next_deadline() is None
    assert child.last_exit == "stopped"


def test_a_child_that_cannot_start_is_retried_with_backoff() -> None:
    class Missing(Shell):
        def popen(self) -> subprocess.Popen[bytes]:
            return subprocess.Popen(["/nonexistent/energyhubd-test"])

    now = [5.0]
    child = Missing("", clock=lambda: now[0])
    child.start()
    assert child.proc is None and child.next_deadline() == 6.0
    assert child.last_exit is not None and "cannot start sh" in child.last_exit


def test_the_event_loop_restarts_the_child_without_polling() -> None:
    loop = EventLoop()
    child = Shell("exit 7")
    child.backoff = Backoff(0.05, 0.1, rand=lambda: 1.0)
    changes: list[int] = []
    watch = LoopWatch(loop, child, lambda: changes.append(1))
    with loopthread.running(loop):
        try:
            loop.post(lambda: watch.run(child.start))
            deadline = time.monotonic() + 10
            while child.restarts < 3 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert child.restarts >= 3
            assert all(code == 7 for code, _ran in child.exits)
            assert changes  # the owner heard of every exit and restart
        finally:
            on_loop(loop, lambda: watch.run(lambda: child.halt("test over"), False))
            watch.close()


def test_backoff_equal_and_full_jitter() -> None:
    equal = Backoff(2.0, 16.0, rand=lambda: 0.0)
    assert [equal.next_delay() for _ in range(5)] == [1.0, 2.0, 4.0, 8.0, 8.0]
    full = Backoff(2.0, 16.0, rand=lambda: 0.5, jitter="full")
    assert [full.next_delay() for _ in range(5)] == [1.25, 2.25, 4.25, 8.25, 8.25]
    low = Backoff(2.0, 16.0, rand=lambda: 0.0, jitter="full")
    assert low.next_delay() == 0.5  # full jitter retries soon, never in a hot loop
    with pytest.raises(ValueError, match="jitter"):
        Backoff(1.0, 2.0, jitter="none")
    full.reset()
    assert full.attempt == 0
