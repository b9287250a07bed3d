"""The daemon's ``EventLoop`` on a thread of its own, as ``energyhubd run`` runs it, for tests.

Threading contract: ``running(loop)`` starts one thread that runs ``loop.run()``; everything
that touches loop-owned objects goes through ``on_loop`` (posted to the loop, the test thread
waits for it). Leaving ``running`` stops the loop, joins its thread and closes the loop, also
when the test failed.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from energyhubd.loop import EventLoop

T = TypeVar("T")


@contextlib.contextmanager
def running(loop: EventLoop) -> Iterator[EventLoop]:
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    try:
        yield loop
    finally:
        loop.stop()
        thread.join(5)
        loop.close()


def on_loop(loop: EventLoop, func: Callable[[], T], timeout: float = 5) -> T:
    """``func()`` run on the loop's thread; its value, or its exception raised here."""
    done = threading.Event()
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = func()
        except Exception as exc:
            box["error"] = exc
        done.set()

    loop.post(run)
    assert done.wait(timeout)
    if "error" in box:
        raise box["error"]
    value: T = box["value"]
    return value
