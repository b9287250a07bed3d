"""The ``portal`` section of the configuration: how the MQTT link to the Ferroamp broker runs.

Kept apart from the network model because it is consumed only by the portal link; the lead's
config loader calls :func:`parse_portal_section` for the ``portal`` key and collects the
errors together with every other section's, so a user sees all problems at once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from energyhubd.config.errors import FieldError, join_path

DEFAULT_HOST = "data2.ferroamp.se"
DEFAULT_DIR = "/etc/energyhubd/portal"
TLS_PORT = 8883
PLAIN_PORT = 1883
MQTT_VERSIONS = ("5", "3.1.1")


@dataclass(frozen=True)
class PortalSettings:
    """Validated portal link settings; defaults are the production values."""

    enabled: bool = True
    host: str = DEFAULT_HOST
    port: int = TLS_PORT
    tls: bool = True
    allow_plain: bool = False
    ca_file: str = f"{DEFAULT_DIR}/ca.pem"
    cert_file: str = f"{DEFAULT_DIR}/client.pem"
    key_file: str = f"{DEFAULT_DIR}/client.key"
    server_name: str = DEFAULT_HOST
    mqtt_version: str = "5"
    keepalive: int = 60
    health_interval: float = 300.0
    confirm_window: float = 90.0
    # The first retry is spread over [0.5, backoff_initial] s: with 20 s a fleet returning
    # after a broker blip arrives at about 5 % per second (docs/fleet.md).
    backoff_initial: float = 20.0
    backoff_max: float = 120.0
    backoff_reset_after: float = 30.0  # the backoff resets only after a connection held this long
    will_delay: int = 30  # MQTT 5 Will Delay: a takeover or short blip shows no false offline
    # A fresh-connection confirm first waits a random time up to this, and never more than a
    # quarter of confirm_window, so a push to a whole fleet does not reconnect it in one second.
    fresh_confirm_delay: float = 20.0
    queue_size: int = 500  # events (and command results) kept while offline
    max_push_bytes: int = 131072  # AWS IoT Core's message limit is 128 KiB
    max_push_depth: int = 32


# key -> (kind, minimum, maximum); kinds: bool, int, num, str, path, version
_KEYS: dict[str, tuple[str, float | None, float | None]] = {
    "enabled": ("bool", None, None),
    "host": ("host", None, None),
    "port": ("int", 1, 65535),
    "tls": ("bool", None, None),
    "allow_plain": ("bool", None, None),
    "ca_file": ("path", None, None),
    "cert_file": ("path", None, None),
    "key_file": ("path", None, None),
    "server_name": ("host", None, None),
    "mqtt_version": ("version", None, None),
    "keepalive": ("int", 5, 3600),
    "health_interval": ("num", 10, 86400),
    "confirm_window": ("num", 10, 3600),
    "backoff_initial": ("num", 0.1, 300),
    "backoff_max": ("num", 1, 3600),
    "backoff_reset_after": ("num", 1, 3600),
    "will_delay": ("int", 0, 3600),
    "fresh_confirm_delay": ("num", 0, 1800),
    "queue_size": ("int", 1, 100000),
    # 1 MiB: EMQX's default retained-message limit; larger pushes would not even be stored.
    "max_push_bytes": ("int", 256, 1024 * 1024),
    "max_push_depth": ("int", 4, 256),
}

_HOST_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-")


def _check(kind: str, lo: float | None, hi: float | None, value: object) -> str | None:
    """Return the reason ``value`` is wrong for ``kind``, or None when it is fine."""
    if kind == "bool":
        return None if isinstance(value, bool) else "must be true or false"
    if kind in ("int", "num"):
        ok_type = (int,) if kind == "int" else (int, float)
        if isinstance(value, bool) or not isinstance(value, ok_type):
            return "must be an integer" if kind == "int" else "must be a number"
        if value != value or value in (float("inf"), float("-inf")):
            return "must be a finite number"
        if lo is not None and value < lo:
            return f"must be at least {lo:g}"
        if hi is not None and value > hi:
            return f"must be at most {hi:g}"
        return None
    if kind == "host":
        if not isinstance(value, str) or not value:
            return "must be a non-empty host name"
        if len(value) > 253 or not set(value) <= _HOST_CHARS or value.startswith(("-", ".")):
            return f"{value!r} is not a valid host name"
        return None
    if kind == "path":
        if not isinstance(value, str) or not os.path.isabs(value) or "\0" in value:
            return "must be an absolute path"
        return None
    if kind == "version":
        if value not in MQTT_VERSIONS:
            return 'must be "5" or "3.1.1"'
        return None
    raise AssertionError(kind)


def parse_portal_section(
    obj: object, path: str = "portal"
) -> tuple[PortalSettings, list[FieldError]]:
    """Validate the ``portal`` object; returns defaults plus every error (never raises).

    When there are errors the returned settings are the defaults, so a caller that ignores the
    error list can still not end up with a half-parsed link.
    """
    if obj is None:
        return PortalSettings(), []
    if not isinstance(obj, dict):
        return PortalSettings(), [FieldError(path, "must be an object")]
    errors: list[FieldError] = []
    values: dict[str, Any] = {}
    for key, value in obj.items():
        field_path = join_path(path, str(key))
        spec = _KEYS.get(key) if isinstance(key, str) else None
        if spec is None:
            errors.append(FieldError(field_path, "unknown key"))
            continue
        # mqtt_version may be written as the number 5 in JSON; accept it as "5".
        if key == "mqtt_version" and value == 5 and not isinstance(value, bool):
            value = "5"
        reason = _check(spec[0], spec[1], spec[2], value)
        if reason:
            errors.append(FieldError(field_path, reason))
        else:
            values[key] = float(value) if spec[0] == "num" else value
    tls = values.get("tls", True)
    if not tls and not values.get("allow_plain", False):
        errors.append(
            FieldError(
                join_path(path, "tls"),
                "false needs allow_plain: true (the portal link is never plain by default)",
            )
        )
    if "port" not in values:
        values["port"] = TLS_PORT if tls else PLAIN_PORT
    if "server_name" not in values:
        values["server_name"] = values.get("host", DEFAULT_HOST)
    initial = values.get("backoff_initial", PortalSettings.backoff_initial)
    if initial > values.get("backoff_max", PortalSettings.backoff_max):
        errors.append(FieldError(join_path(path, "backoff_initial"), "must not exceed backoff_max"))
    if errors:
        return PortalSettings(), errors
    return PortalSettings(**values), []
