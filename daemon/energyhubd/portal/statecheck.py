"""Validate the portal's state files at start; move a bad one aside instead of crashing.

A power cut during a write on flash, a full disk or a hand edit can leave ``last-good.json``
empty, half-written or holding something that is not a configuration. Refusing to start on
that would be a crash loop under procd with no way to repair remotely, so every file is
checked once, before the first apply; a bad one is renamed to ``<name>.corrupt-<UTC time>``
(kept for support) and the daemon carries on from the next good source it has. The checks
are pure (bytes in, reason out); :func:`quarantine` is the thin shell that renames.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

LAST_GOOD = "last-good.json"
CANDIDATE = "candidate.json"
PENDING = "pending.json"
FAILED = "failed.json"
REPORTED = "reported.json"

MAX_STATE_BYTES = 1 << 20  # far above any push (64 KiB limit); a larger file is not ours


@dataclass(frozen=True)
class Quarantined:
    """One state file found bad at start and moved aside."""

    file: str  # name inside the store directory
    reason: str
    moved_to: str | None  # None if even the rename failed (the file is then ignored)

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "reason": self.reason, "moved_to": self.moved_to}


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _object(raw: bytes) -> tuple[dict[str, Any] | None, str | None]:
    if not raw.strip():
        return None, "empty file"
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        return None, f"not valid JSON ({exc})"
    if not isinstance(value, dict):
        return None, f"a JSON {type(value).__name__}, not an object"
    return value, None


def _document(raw: bytes) -> str | None:
    doc, reason = _object(raw)
    if doc is None:
        return reason
    version = doc.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        return "has no integer version >= 0"
    return None


def _pending(raw: bytes) -> str | None:
    doc, reason = _object(raw)
    if doc is None:
        return reason
    if not _is_int(doc.get("version")):
        return "version is not an integer"
    if not isinstance(doc.get("deadline"), int | float) or isinstance(doc["deadline"], bool):
        return "deadline is not a number"
    return None


def _failed(raw: bytes) -> str | None:
    doc, reason = _object(raw)
    if doc is None:
        return reason
    if not _is_int(doc.get("version")) or not isinstance(doc.get("digest"), str):
        return "needs an integer version and a digest string"
    return None


def _reported(raw: bytes) -> str | None:
    doc, reason = _object(raw)
    if doc is None:
        return reason
    if not isinstance(doc.get("reported"), dict):
        return "has no reported object"
    failed = doc.get("failed")
    if failed is not None and (
        not isinstance(failed, dict)
        or not _is_int(failed.get("version"))
        or not isinstance(failed.get("digest"), str)
    ):
        return "failed must be null or an object with version and digest"
    return None


CHECKS: dict[str, Callable[[bytes], str | None]] = {
    LAST_GOOD: _document,
    CANDIDATE: _document,
    PENDING: _pending,
    FAILED: _failed,
    REPORTED: _reported,
}


def problem(name: str, raw: bytes) -> str | None:
    """Why the content of state file ``name`` is unusable, or None if it is fine."""
    if len(raw) > MAX_STATE_BYTES:
        return f"{len(raw)} bytes, more than a state file can be"
    return CHECKS[name](raw)


def corrupt_name(name: str, wall: float) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(wall))
    return f"{name}.corrupt-{stamp}"


def quarantine(directory: str, wall: float) -> list[Quarantined]:
    """Check every known state file in ``directory``; rename the bad ones. Never raises."""
    found: list[Quarantined] = []
    for name in CHECKS:
        path = os.path.join(directory, name)
        try:
            with open(path, "rb") as handle:
                raw = handle.read(MAX_STATE_BYTES + 1)
        except (FileNotFoundError, NotADirectoryError):
            continue  # absent (or no directory at all): nothing to check
        except OSError as exc:
            reason: str | None = f"unreadable ({exc.strerror or exc})"
        else:
            reason = problem(name, raw)
        if reason is None:
            continue
        target: str | None = corrupt_name(name, wall)
        assert target is not None
        # Two bad starts within one second must not overwrite the first copy.
        suffix = 1
        while os.path.exists(os.path.join(directory, target)):
            suffix += 1
            target = f"{corrupt_name(name, wall)}.{suffix}"
        try:
            os.rename(path, os.path.join(directory, target))
            _fsync_dir(directory)
        except OSError:
            target = None  # read-only flash? The store then ignores the file (never reads it)
        found.append(Quarantined(name, reason, target))
    return found


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
