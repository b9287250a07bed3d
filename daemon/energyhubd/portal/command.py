"""Commands from the portal (``energyhub/<id>/command``): parsing, before anything runs.

The portal asks for things that are not configuration, such as opening the support tunnel
for a few hours. A command is small JSON: ``{"id": "c-17", "method": "tunnel",
"args": {"action": "open", "hours": 2}}``; the answer goes to ``command/result`` with the same
``id``. Only the methods in ``PORTAL_METHODS`` may be called this way: the portal must not be
able to reach everything a local administrator can.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

MAX_COMMAND_BYTES = 65536  # room for an S3 eu-central-1 extract of ip-ranges.json
PORTAL_METHODS = ("tunnel", "diagnose", "ip_ranges")


class CommandError(ValueError):
    """A command that cannot be run; the message names the field and why."""


@dataclass(frozen=True)
class Command:
    id: str | int | None
    method: str
    args: dict[str, Any] = field(default_factory=dict)


def parse_command(payload: bytes) -> Command:
    """Decode and check one command; raises CommandError (never anything else)."""
    if len(payload) > MAX_COMMAND_BYTES:
        raise CommandError(f"command is {len(payload)} bytes, limit is {MAX_COMMAND_BYTES}")
    try:
        doc = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CommandError(f"command is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise CommandError("command must be a JSON object")
    ident = doc.get("id")
    if ident is not None and (isinstance(ident, bool) or not isinstance(ident, (str, int))):
        raise CommandError("id: must be a string or an integer")
    unknown = sorted(set(doc) - {"id", "method", "args"})
    if unknown:
        raise CommandError(f"{unknown[0]}: unknown key")
    method = doc.get("method")
    if not isinstance(method, str):
        raise CommandError("method: required, a string")
    if method not in PORTAL_METHODS:
        raise CommandError(f"method: {method!r} cannot be called from the portal "
                           f"(allowed: {', '.join(PORTAL_METHODS)})")  # fmt: skip
    args = doc.get("args", {})
    if not isinstance(args, dict):
        raise CommandError("args: must be an object")
    return Command(ident, method, args)


def command_id(payload: bytes) -> str | int | None:
    """The ``id`` of a command that failed to parse, if one can be read, for the answer."""
    try:
        ident = json.loads(payload.decode("utf-8")).get("id")
    except (UnicodeDecodeError, ValueError, RecursionError, AttributeError):
        return None
    return ident if isinstance(ident, (str, int)) and not isinstance(ident, bool) else None
