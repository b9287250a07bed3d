"""The ``portal`` section: how the MQTT link to the Ferroamp broker runs.

Consumed only by the portal link (``energyhubd.portal``); parsed here with every other
section so that a user sees all problems at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from energyhubd.config import check as ck
from energyhubd.config.check import Checker, Option
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


def _mqtt_version(c: Checker, value: Any, path: str) -> str | None:
    # JSON writers often spell version 5 as the number 5; accept it as "5".
    if value == 5 and not isinstance(value, bool):
        return "5"
    return c.choice(value, path, MQTT_VERSIONS)


_D = PortalSettings()
# port and server_name default to None here: their defaults follow tls and host (below).
OPTIONS: dict[str, Option] = {
    "enabled": Option(ck.boolean(), _D.enabled),
    "host": Option(ck.host(), _D.host),
    "port": Option(ck.integer(1, 65535)),
    "tls": Option(ck.boolean(), _D.tls),
    "allow_plain": Option(ck.boolean(), _D.allow_plain),
    "ca_file": Option(ck.abspath(), _D.ca_file),
    "cert_file": Option(ck.abspath(), _D.cert_file),
    "key_file": Option(ck.abspath(), _D.key_file),
    "server_name": Option(ck.host()),
    "mqtt_version": Option(_mqtt_version, _D.mqtt_version),
    "keepalive": Option(ck.integer(5, 3600), _D.keepalive),
    "health_interval": Option(ck.number(10, 86400), _D.health_interval),
    "confirm_window": Option(ck.number(10, 3600), _D.confirm_window),
    "backoff_initial": Option(ck.number(0.1, 300), _D.backoff_initial),
    "backoff_max": Option(ck.number(1, 3600), _D.backoff_max),
    "backoff_reset_after": Option(ck.number(1, 3600), _D.backoff_reset_after),
    "will_delay": Option(ck.integer(0, 3600), _D.will_delay),
    "fresh_confirm_delay": Option(ck.number(0, 1800), _D.fresh_confirm_delay),
    "queue_size": Option(ck.integer(1, 100000), _D.queue_size),
    # 1 MiB: EMQX's default retained-message limit; larger pushes would not even be stored.
    "max_push_bytes": Option(ck.integer(256, 1024 * 1024), _D.max_push_bytes),
    "max_push_depth": Option(ck.integer(4, 256), _D.max_push_depth),
}


def check_portal(c: Checker, obj: Any, path: str = "portal") -> PortalSettings:
    """Read the ``portal`` object into ``c``; the defaults when anything is wrong."""
    mark = c.mark()
    values = c.options(obj, path, OPTIONS)
    if not values["tls"] and not values["allow_plain"]:
        c.fail(
            join_path(path, "tls"),
            "false needs allow_plain: true (the portal link is never plain by default)",
        )
    if values["port"] is None:
        values["port"] = TLS_PORT if values["tls"] else PLAIN_PORT
    if values["server_name"] is None:
        values["server_name"] = values["host"]
    if values["backoff_initial"] > values["backoff_max"]:
        c.fail(join_path(path, "backoff_initial"), "must not exceed backoff_max")
    return PortalSettings() if c.failed_since(mark) else PortalSettings(**values)


def parse_portal_section(
    obj: object, path: str = "portal"
) -> tuple[PortalSettings, list[FieldError]]:
    """Validate the ``portal`` object alone: the settings (defaults on error) and every error."""
    c = Checker()
    settings = check_portal(c, obj, path)
    return settings, c.errors
