"""The persisted MQTT session counter and the applied desired-state epoch.

Threading contract: a ``SessionCounter`` belongs to the link thread (it is read for the Will
before connecting and advanced after CONNACK); ``EpochFile`` belongs to the daemon thread (the
push controller). They use different files, so nothing is shared.

The session counter numbers the birth (``online``) and the Last Will of every connection,
across restarts (Sparkplug's bdSeq): a Will that arrives after a newer birth names an older
session and the portal can ignore it. It is written only after a CONNACK (failed attempts
register a Will the broker never publishes), so an outage does not wear the flash.

A file we cannot read (corrupt flash, hand edit) counts as absent: the counter restarts from a
value derived from the clock, which is still above any value a previous run could have used
unless the clock went backwards; the epoch restarts at 0, which only means the next push with
any epoch is judged by its version again.
"""

from __future__ import annotations

import json
import os
import time

from energyhubd.config.atomic import write_if_changed

SESSION_FILE = "session.json"
EPOCH_FILE = "epoch.json"


def _read_int(path: str, key: str) -> int | None:
    try:
        with open(path, "rb") as handle:
            value = json.loads(handle.read()).get(key)
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


class SessionCounter:
    """``next`` is the number the coming connection uses; ``commit`` persists it after CONNACK."""

    def __init__(self, directory: str | None) -> None:
        self.path = None if directory is None else os.path.join(directory, SESSION_FILE)
        last = None if self.path is None else _read_int(self.path, "session")
        if last is None and self.path is not None and os.path.exists(self.path):
            last = int(time.time())  # unreadable: jump above anything a past run used
        self.last = last or 0

    @property
    def next(self) -> int:
        return self.last + 1

    def commit(self) -> int:
        """The connection with number ``next`` got its CONNACK; returns that number."""
        self.last += 1
        if self.path is not None:
            try:
                os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
                write_if_changed(self.path, json.dumps({"session": self.last}).encode(), mode=0o600)
            except OSError:
                pass  # a full or read-only flash must not take the link down
        return self.last


class EpochFile:
    """The portal-set generation (see ``push.decide``) of the applied and of the last failed
    desired state; the versions themselves live in the documents (``store``)."""

    def __init__(self, directory: str) -> None:
        self.path = os.path.join(directory, EPOCH_FILE)

    def load(self, which: str = "applied") -> int:
        return _read_int(self.path, which) or 0

    def save(self, which: str, epoch: int) -> None:
        values = {k: self.load(k) for k in ("applied", "failed")}
        values[which] = epoch
        write_if_changed(self.path, json.dumps(values, sort_keys=True).encode(), mode=0o600)
