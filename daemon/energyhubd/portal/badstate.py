"""The state files found bad since the daemon started, kept across portal link restarts.

A reload that changes the ``portal`` section replaces the ``PortalRunner`` and its store.
What the first runner's start check found must not go with it: the operator reading status
after such a reload still has to see that a file was bad and where it went. So the fact has
one owner that lives as long as the process: ``service.Daemon`` holds the one instance, every
runner hands it what its check found, and the status snapshot reads it from here.

It is forgotten only when the daemon restarts, and on purpose: the moved copy stays on flash
for support, the event went to the portal, and the next start checks the files again and
finds nothing in the way. An "acknowledge" method would be a write method of its own (ubus
ACL, LuCI) for a line that a restart clears anyway.

Threading: used on the event loop only; ``status`` returns fresh plain values for the
immutable snapshot.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from energyhubd.inventory.events import Event, EventStream
from energyhubd.portal.statecheck import Quarantined

log = logging.getLogger("energyhubd.portal")


class BadStateFiles:
    def __init__(self, events: EventStream, wall: Callable[[], float] = time.time) -> None:
        self._events = events
        self._wall = wall
        self._found: list[tuple[str, Quarantined]] = []  # (directory, finding), oldest first

    def record(self, directory: str, found: Iterable[Quarantined]) -> None:
        """Log, publish one ``state_file_corrupt`` event and keep one status line per new
        finding. A file that could not be moved aside is found again by the next runner's
        check; that is the same finding, not a new one (the moved ones have unique names)."""
        for bad in found:
            if any(d == directory and _same(q, bad) for d, q in self._found):
                continue
            self._found.append((directory, bad))
            where = f"moved to {bad.moved_to}" if bad.moved_to else "ignored (could not move it)"
            log.error("state file %s/%s is bad (%s); %s", directory, bad.file, bad.reason, where)
            data = {**bad.as_dict(), "directory": directory}
            self._events.publish(Event("state_file_corrupt", self._wall(), "error", data))

    def status(self) -> list[dict[str, Any]]:
        """The status lines (``portal.state_files``), oldest first."""
        return [{**bad.as_dict(), "directory": directory} for directory, bad in self._found]


def _same(a: Quarantined, b: Quarantined) -> bool:
    return a.file == b.file and a.moved_to == b.moved_to
