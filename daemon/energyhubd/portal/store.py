"""Persistent last-good / candidate configuration with a crash-safe confirm marker.

rpcd's rollback snapshot lives in RAM and is lost on reboot (BRIEF §3), so a config that cuts
the router off and then crashes or reboots it would stay forever. Here the marker
``pending.json`` is on flash: if the daemon starts and finds it, the candidate was never
confirmed and the daemon must roll back to ``last-good.json`` (netplan-style: re-apply the whole
last good config, not undo steps).

Every write is atomic (temp file in the same directory, fsync, rename, fsync directory) and is
skipped when the bytes on disk are already identical, to spare the flash. At start
:meth:`ConfigStore.check` moves every file that does not hold what it should aside
(``statecheck``), so a power cut or a full flash never turns into a crash loop; a write that
fails (ENOSPC) raises OSError to the caller, which reports it (``PushController``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass
from typing import Any

from energyhubd.config.atomic import write_if_changed

from . import statecheck
from .statecheck import CANDIDATE, FAILED, LAST_GOOD, PENDING, REPORTED, Quarantined
from .topics import dumps

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PendingMarker:
    """A candidate is applied but not confirmed; ``deadline`` is wall-clock epoch seconds."""

    version: int
    deadline: float


class StoreError(Exception):
    """A stored file exists but cannot be read back (corrupt flash, hand edit)."""


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ConfigStore:
    """Files under ``state_dir``; one instance per daemon, used from the daemon thread only."""

    def __init__(self, state_dir: str) -> None:
        self.state_dir = state_dir
        try:
            os.makedirs(state_dir, mode=0o700, exist_ok=True)
        except OSError as exc:  # full or read-only flash: every write then fails and is reported
            log.error("portal state directory %s not created: %s", state_dir, exc)
        self._ignored: set[str] = set()  # bad files that could not even be moved aside

    def check(self, wall: float) -> list[Quarantined]:
        """At start, before anything is read: move every bad state file aside."""
        found = statecheck.quarantine(self.state_dir, wall)
        self._ignored = {q.file for q in found if q.moved_to is None}
        return found

    def _path(self, name: str) -> str:
        return os.path.join(self.state_dir, name)

    def write_atomic(self, name: str, data: bytes) -> bool:
        """Replace ``name`` with ``data``; returns False (and writes nothing) if unchanged."""
        return write_if_changed(self._path(name), data, mode=0o600)

    def _remove(self, name: str) -> bool:
        try:
            os.unlink(self._path(name))
        except FileNotFoundError:
            return False
        _fsync_dir(self.state_dir)
        return True

    def _read_json(self, name: str) -> Any:
        if name in self._ignored:
            return None
        try:
            with open(self._path(name), "rb") as handle:
                raw = handle.read()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:  # EIO on worn flash: as bad as unreadable content
            raise StoreError(f"{self._path(name)}: unreadable ({exc.strerror or exc})") from exc
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise StoreError(f"{self._path(name)}: not valid JSON ({exc})") from exc

    def load_last_good(self) -> dict[str, Any] | None:
        """The last confirmed document, or None on a fresh device."""
        doc = self._read_json(LAST_GOOD)
        if doc is not None and not isinstance(doc, dict):
            raise StoreError(f"{self._path(LAST_GOOD)}: not a JSON object")
        return doc

    def last_good_or_none(self) -> dict[str, Any] | None:
        """Like ``load_last_good``, but a file gone bad since the start check is logged and
        treated as absent: the caller then runs the local configuration."""
        try:
            return self.load_last_good()
        except StoreError as exc:
            log.error("%s; using the local configuration", exc)
            return None

    def save_last_good(self, doc: dict[str, Any]) -> bool:
        """Seed last-good (e.g. from the local config at first start)."""
        return self.write_atomic(LAST_GOOD, dumps(doc))

    def load_candidate(self) -> dict[str, Any] | None:
        try:
            doc = self._read_json(CANDIDATE)
        except StoreError:
            return None
        return doc if isinstance(doc, dict) else None

    def save_candidate(self, doc: dict[str, Any], deadline: float) -> None:
        """Persist the candidate, THEN the marker: a crash in between leaves no marker, and a
        candidate without a marker is never used. Raises OSError (e.g. ENOSPC) with nothing
        left behind: a candidate whose marker could not be written is removed again."""
        version = doc.get("version", 0)
        self.write_atomic(CANDIDATE, dumps(doc))
        try:
            self.write_atomic(PENDING, dumps({"version": version, "deadline": deadline}))
        except OSError:
            with contextlib.suppress(OSError):  # a candidate without a marker is never used
                self._remove(CANDIDATE)
            raise

    def pending(self) -> PendingMarker | None:
        """The unconfirmed-candidate marker; a marker we cannot read still means 'roll back'."""
        try:
            raw = self._read_json(PENDING)
        except StoreError:
            return PendingMarker(version=-1, deadline=0.0)
        if raw is None:
            return None
        try:
            return PendingMarker(version=int(raw["version"]), deadline=float(raw["deadline"]))
        except (TypeError, KeyError, ValueError):
            return PendingMarker(version=-1, deadline=0.0)

    def confirm(self) -> bool:
        """Candidate becomes last-good; the marker goes last so a crash never loses both."""
        candidate = self.load_candidate()
        if candidate is None:
            return False
        self.write_atomic(LAST_GOOD, dumps(candidate))
        self._remove(PENDING)
        self._remove(CANDIDATE)
        return True

    def discard_candidate(self) -> None:
        """Rollback bookkeeping: marker first, so a crash mid-way still rolls back next time."""
        self._remove(PENDING)
        self._remove(CANDIDATE)

    def record_failed(self, version: int, digest: str) -> None:
        """Remember a rejected / rolled-back version so a re-delivered copy is not retried."""
        self.write_atomic(FAILED, dumps({"version": version, "digest": digest}))

    def failed(self) -> tuple[int, str] | None:
        """The last failed version; if failed.json is lost, the copy kept with ``reported``."""
        for name, pick in ((FAILED, lambda raw: raw), (REPORTED, lambda raw: raw["failed"])):
            try:
                raw = pick(self._read_json(name))
                return int(raw["version"]), str(raw["digest"])
            except (StoreError, TypeError, KeyError, ValueError):
                continue
        return None

    def save_reported(self, reported: dict[str, Any], failed: tuple[int, str] | None) -> None:
        """What the portal was last told (restored after a restart) and the failed version."""
        doc = {
            "reported": reported,
            "failed": None if failed is None else {"version": failed[0], "digest": failed[1]},
        }
        self.write_atomic(REPORTED, dumps(doc))

    def load_reported(self) -> dict[str, Any] | None:
        try:
            doc = self._read_json(REPORTED)
        except StoreError:
            return None
        if not isinstance(doc, dict) or not isinstance(doc.get("reported"), dict):
            return None
        reported: dict[str, Any] = doc["reported"]
        return reported
