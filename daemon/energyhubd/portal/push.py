"""Decide what to do with a document that arrived on ``config/desired``. Pure: no I/O.

Lessons built in (BRIEF §4): an error page or truncated body must never be applied as a
config (size limit before parsing, strict JSON, must be an object, full validation); the
``version`` is monotonic so replays and retained copies are harmless; the same version with
different content is a conflict, never a silent overwrite; and a version that already failed
(rejected, or rolled back because the portal became unreachable) is not retried when the broker
re-delivers the retained desired document after a reconnect - otherwise a bad push would loop
apply -> lose link -> rollback -> reconnect -> apply forever.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from energyhubd.config.errors import ConfigError, FieldError
from energyhubd.configfile import parse_document

from .topics import dumps

log = logging.getLogger(__name__)

IGNORE = "ignore"
EMPTY = "empty"  # no desired state: the portal has nothing for this device (not an error)
NOOP = "noop"
REJECT = "reject"
APPLY = "apply"

Validate = Callable[[dict[str, Any]], object]


@dataclass(frozen=True)
class Seen:
    """A version we know about, identified by content digest (applied or failed)."""

    version: int
    digest: str
    epoch: int = 0


@dataclass(frozen=True)
class Decision:
    """What the daemon should do with one push."""

    action: str
    version: int | None = None
    epoch: int = 0
    errors: tuple[FieldError, ...] = ()
    document: dict[str, Any] | None = None  # without the push-level "confirm"/"epoch" keys
    confirm: bool = True
    reason: str = ""
    digest: str | None = None
    config: object | None = field(default=None, compare=False)  # what validate() returned


def digest_of(document: dict[str, Any]) -> str:
    """Content identity of a document, independent of key order and whitespace."""
    return hashlib.sha256(dumps(document)).hexdigest()


def nesting_depth(text: str, limit: int) -> int:
    """Deepest ``[``/``{`` nesting outside strings, scanning iteratively (no recursion).

    Stops as soon as ``limit`` is exceeded, so 100000 opening brackets cost microseconds and
    never reach the recursive JSON parser.
    """
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    return deepest
        elif ch in "]}":
            depth -= 1
    return deepest


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_push(payload: bytes, max_bytes: int, max_depth: int) -> tuple[Any, FieldError | None]:
    """Size limit, UTF-8, depth limit, strict JSON (no duplicate keys, NaN or Infinity)."""
    if len(payload) > max_bytes:
        return None, FieldError("", f"push is {len(payload)} bytes, limit is {max_bytes}")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, FieldError("", f"push is not UTF-8 ({exc.reason} at byte {exc.start})")
    depth = nesting_depth(text, max_depth)
    if depth > max_depth:
        return None, FieldError("", f"push is nested deeper than {max_depth} levels")
    try:
        obj = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        return None, FieldError("", f"push is not valid JSON: {exc}")
    return obj, None


def default_validate(document: dict[str, Any]) -> object:
    """The daemon's full validation (``energyhubd.config.load.parse_document``)."""
    return parse_document(document)


def decide(
    payload: bytes,
    *,
    applied: Seen | None,
    failed: Seen | None = None,
    device_id: str | None = None,
    max_bytes: int = 131072,
    max_depth: int = 32,
    validate: Validate | None = None,
) -> Decision:
    """Classify one push as empty / ignore / noop / reject / apply (never raises on bad input).

    Order is (``epoch``, ``version``): a higher epoch (set by the portal, default 0) starts a
    new version sequence, so the portal can reset versions (e.g. after restoring its
    database); a lower epoch, or an older version in the same epoch, is ignored with a reason.
    """
    if not payload.strip():
        return Decision(EMPTY, reason="no desired state")
    obj, error = parse_push(payload, max_bytes, max_depth)
    if error is not None:
        return Decision(REJECT, errors=(error,), reason="unreadable push")
    if obj == {}:
        return Decision(EMPTY, reason="no desired state")
    if not isinstance(obj, dict):
        err = FieldError("", f"push must be a JSON object, not {type(obj).__name__}")
        return Decision(REJECT, errors=(err,), reason="unreadable push")
    document = dict(obj)
    confirm = document.pop("confirm", True)
    epoch = document.pop("epoch", 0)
    version = document.get("version")
    errors: list[FieldError] = []
    if not isinstance(confirm, bool):
        errors.append(FieldError("confirm", "must be true or false"))
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        errors.append(FieldError("epoch", "must be an integer >= 0"))
        epoch = 0
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        errors.append(FieldError("version", "a pushed document needs an integer version >= 0"))
    if errors:
        vers = version if isinstance(version, int) and not isinstance(version, bool) else None
        return Decision(REJECT, version=vers, errors=tuple(errors), reason="bad push envelope")
    assert isinstance(version, int) and isinstance(confirm, bool)
    digest = digest_of(document)
    common: dict[str, Any] = {
        "version": version,
        "epoch": epoch,
        "confirm": confirm,
        "digest": digest,
    }
    if applied is not None and epoch < applied.epoch:
        reason = f"epoch {epoch} is older than the applied epoch {applied.epoch}"
        return Decision(IGNORE, reason=reason, **common)
    if applied is not None and epoch == applied.epoch:
        if version < applied.version:
            reason = f"version {version} is older than applied {applied.version} (replay)"
            return Decision(IGNORE, reason=reason, **common)
        if version == applied.version:
            if digest == applied.digest:
                return Decision(NOOP, reason=f"version {version} is already applied", **common)
            err = FieldError(
                "version", f"{version} is already applied with different content; use a new version"
            )
            return Decision(REJECT, errors=(err,), reason="version conflict", **common)
    if failed is not None and version == failed.version and epoch == failed.epoch:
        if digest == failed.digest:
            reason = f"version {version} already failed here; push a new version"
            return Decision(IGNORE, reason=reason, **common)
        err = FieldError("version", f"{version} was already used by a failed push; use a new one")
        return Decision(REJECT, errors=(err,), reason="version conflict", **common)
    check = validate or default_validate
    try:
        config = check(document)
    except ConfigError as exc:
        return Decision(REJECT, errors=tuple(exc.errors), reason="invalid configuration", **common)
    except Exception as exc:  # a validator bug must not take the daemon down
        log.exception("validator failed on pushed version %s", version)
        err = FieldError("", f"validation failed internally: {type(exc).__name__}")
        return Decision(REJECT, errors=(err,), reason="validator error", **common)
    if device_id is not None:
        pushed_id = getattr(config, "device_id", document.get("device_id", "energyhub"))
        if pushed_id != device_id:
            err = FieldError(
                "device_id", f"push for {pushed_id!r} arrived at {device_id!r}; refusing it"
            )
            return Decision(REJECT, errors=(err,), reason="wrong device", **common)
    return Decision(APPLY, document=document, config=config, reason="valid", **common)
