"""The ``outbound`` section of the configuration: where the required outbound flows go.

Every target is configurable so that the lab and the tests can point the flows at hosts in
namespaces (never at the real broker, gateway, Google DNS or AWS). ``parse_outbound_section``
collects every error with its full field path instead of raising; the DNS fallback is not
repeated here, it stays in ``dns.fallback`` and is passed to the diagnostics as a parameter.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field, fields
from typing import Any

from ..config.errors import FieldError, join_path

TUNNEL_MODES = ("disabled", "on_demand", "always")

_DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_HOST_LABEL_RE = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_USER_RE = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")
# An OpenSSH public key line: "<type> <base64>" (an optional comment is dropped).
_HOST_KEY_RE = re.compile(
    r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp256|ecdsa-sha2-nistp384|ecdsa-sha2-nistp521)"
    r" ([A-Za-z0-9+/]{16,}={0,3})(?: .*)?$"
)
MAX_LIST = 8


@dataclass(frozen=True)
class TunnelSettings:
    """The support tunnel to the service gateway (see docs/outbound.md)."""

    mode: str = "disabled"
    user: str = "energyhub"
    key_file: str = "/etc/energyhubd/tunnel/id_ed25519"
    remote_port: int = 0
    host_key: str | None = None
    expiry_hours: float = 4.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "user": self.user,
            "key_file": self.key_file,
            "remote_port": self.remote_port,
            "host_key": self.host_key,
            "expiry_hours": self.expiry_hours,
        }


@dataclass(frozen=True)
class OutboundSettings:
    """Targets and timing of the outbound-flow diagnostics, allowlist and tunnel."""

    broker_host: str = "data2.ferroamp.se"
    mqtt_ports: tuple[int, ...] = (8883, 1883)
    gateway_address: str = "52.29.33.74"
    gateway_port: int = 2443
    ntp_servers: tuple[str, ...] = ("0.openwrt.pool.ntp.org", "1.openwrt.pool.ntp.org")
    update_host: str = "s3.eu-central-1.amazonaws.com"
    ca_file: str | None = None
    diagnose_interval: float = 6 * 3600.0
    timeout: float = 5.0
    ip_ranges_file: str = "/etc/energyhubd/ip-ranges.json"
    tunnel: TunnelSettings = field(default_factory=TunnelSettings)

    def as_dict(self) -> dict[str, Any]:
        return {
            "broker_host": self.broker_host,
            "mqtt_ports": list(self.mqtt_ports),
            "gateway_address": self.gateway_address,
            "gateway_port": self.gateway_port,
            "ntp_servers": list(self.ntp_servers),
            "update_host": self.update_host,
            "ca_file": self.ca_file,
            "diagnose_interval": self.diagnose_interval,
            "timeout": self.timeout,
            "ip_ranges_file": self.ip_ranges_file,
            "tunnel": self.tunnel.as_dict(),
        }


KNOWN_KEYS = tuple(f.name for f in fields(OutboundSettings))
TUNNEL_KEYS = tuple(f.name for f in fields(TunnelSettings))


def is_host(text: str) -> bool:
    """A DNS name or an IPv4 address literal."""
    try:
        ipaddress.IPv4Address(text)
        return True
    except ValueError:
        pass
    if not text or len(text) > 253:
        return False
    labels = text.rstrip(".").split(".")
    return all(_HOST_LABEL_RE.match(label) for label in labels) and not labels[-1].isdigit()


def normalise_host_key(text: str) -> str | None:
    """``"ssh-ed25519 AAAA... comment"`` -> ``"ssh-ed25519 AAAA..."``; None if not a key."""
    m = _HOST_KEY_RE.match(text.strip())
    return f"{m.group(1)} {m.group(2)}" if m else None


class _Parser:
    def __init__(self) -> None:
        self.errors: list[FieldError] = []

    def fail(self, path: str, reason: str) -> None:
        self.errors.append(FieldError(path, reason))

    def obj(self, value: Any, path: str, known: tuple[str, ...]) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.fail(path, "must be an object")
            return {}
        for key in value:
            if key not in known:
                self.fail(join_path(path, str(key)), "unknown key")
        return {k: v for k, v in value.items() if k in known}

    def host(self, value: Any, path: str) -> str | None:
        if not isinstance(value, str) or not is_host(value):
            self.fail(path, "must be a host name or an IPv4 address")
            return None
        return value

    def ipv4(self, value: Any, path: str) -> str | None:
        try:
            if not isinstance(value, str):
                raise ValueError
            return str(ipaddress.IPv4Address(value))
        except ValueError:
            self.fail(path, f"{value!r} is not an IPv4 address")
            return None

    def port(self, value: Any, path: str, low: int = 1) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= 65535:
            self.fail(path, f"must be an integer from {low} to 65535")
            return None
        return value

    def hosts(self, value: Any, path: str) -> tuple[str, ...] | None:
        if not isinstance(value, list) or not 1 <= len(value) <= MAX_LIST:
            self.fail(path, f"must be a list of 1 to {MAX_LIST} host names or addresses")
            return None
        out = [self.host(item, join_path(path, i)) for i, item in enumerate(value)]
        if any(h is None for h in out):
            return None
        return tuple(h for h in out if h is not None)

    def ports(self, value: Any, path: str) -> tuple[int, ...] | None:
        if not isinstance(value, list) or not 1 <= len(value) <= MAX_LIST:
            self.fail(path, f"must be a list of 1 to {MAX_LIST} ports")
            return None
        out: list[int] = []
        for i, item in enumerate(value):
            p = self.port(item, join_path(path, i))
            if p is not None and p in out:
                self.fail(join_path(path, i), f"duplicate port {p}")
            elif p is not None:
                out.append(p)
        return tuple(out) if len(out) == len(value) else None

    def abspath(self, value: Any, path: str) -> str | None:
        if not isinstance(value, str) or not os.path.isabs(value) or "\0" in value:
            self.fail(path, "must be an absolute path")
            return None
        return value

    def seconds(self, value: Any, path: str, low: float, high: float) -> float | None:
        number: float | None = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str) and (m := _DURATION_RE.match(value.strip())):
            number = float(m.group(1)) * _UNITS[m.group(2)]
        if number is None or number != number:
            self.fail(path, f"{value!r} is not a duration like 30, 90m or 6h")
            return None
        if not low <= number <= high:
            self.fail(path, f"{value!r} is out of range {low:g}-{high:g} seconds")
            return None
        return number


def parse_outbound_section(
    obj: Any, path: str = "outbound"
) -> tuple[OutboundSettings, list[FieldError]]:
    """Validate the ``outbound`` object; None means every default.

    Returns the defaults together with the errors when something is wrong, so a caller can
    report every problem at once and apply nothing.
    """
    p = _Parser()
    data = p.obj(obj, path, KNOWN_KEYS)
    values: dict[str, Any] = {}

    def at(key: str) -> str:
        return join_path(path, key)

    if "broker_host" in data:
        values["broker_host"] = p.host(data["broker_host"], at("broker_host"))
    if "mqtt_ports" in data:
        values["mqtt_ports"] = p.ports(data["mqtt_ports"], at("mqtt_ports"))
    if "gateway_address" in data:
        values["gateway_address"] = p.ipv4(data["gateway_address"], at("gateway_address"))
    if "gateway_port" in data:
        values["gateway_port"] = p.port(data["gateway_port"], at("gateway_port"))
    if "ntp_servers" in data:
        values["ntp_servers"] = p.hosts(data["ntp_servers"], at("ntp_servers"))
    if "update_host" in data:
        values["update_host"] = p.host(data["update_host"], at("update_host"))
    if "ca_file" in data:
        ca = data["ca_file"]
        values["ca_file"] = None if ca is None else p.abspath(ca, at("ca_file"))
        if ca is not None and values["ca_file"] is None:
            values.pop("ca_file")
    if "diagnose_interval" in data:
        values["diagnose_interval"] = p.seconds(
            data["diagnose_interval"], at("diagnose_interval"), 300, 7 * 86400
        )
    if "timeout" in data:
        values["timeout"] = p.seconds(data["timeout"], at("timeout"), 0.5, 60)
    if "ip_ranges_file" in data:
        values["ip_ranges_file"] = p.abspath(data["ip_ranges_file"], at("ip_ranges_file"))
    if "tunnel" in data:
        values["tunnel"] = _parse_tunnel(p, data["tunnel"], at("tunnel"))
    clean = {k: v for k, v in values.items() if v is not None}
    if p.errors:
        return OutboundSettings(), p.errors
    return OutboundSettings(**clean), []


def _parse_tunnel(p: _Parser, value: Any, path: str) -> TunnelSettings | None:
    before = len(p.errors)
    data = p.obj(value, path, TUNNEL_KEYS)
    values: dict[str, Any] = {}
    mode = data.get("mode", "disabled")
    if mode not in TUNNEL_MODES:
        p.fail(join_path(path, "mode"), f"must be one of {', '.join(TUNNEL_MODES)}")
        mode = "disabled"
    values["mode"] = mode
    if "user" in data:
        user = data["user"]
        if not isinstance(user, str) or not _USER_RE.match(user):
            p.fail(join_path(path, "user"), "must be a user name like energyhub")
        else:
            values["user"] = user
    if "key_file" in data:
        values["key_file"] = p.abspath(data["key_file"], join_path(path, "key_file"))
    if "remote_port" in data:
        values["remote_port"] = p.port(data["remote_port"], join_path(path, "remote_port"), 0)
    if "host_key" in data and data["host_key"] is not None:
        key = data["host_key"]
        norm = normalise_host_key(key) if isinstance(key, str) else None
        if norm is None:
            p.fail(
                join_path(path, "host_key"),
                "must be the gateway's public host key, e.g. 'ssh-ed25519 AAAA...'",
            )
        values["host_key"] = norm
    if "expiry_hours" in data:
        hours = data["expiry_hours"]
        if (
            isinstance(hours, bool)
            or not isinstance(hours, (int, float))
            or not 0.001 <= hours <= 168
        ):
            p.fail(join_path(path, "expiry_hours"), "must be a number of hours from 0.001 to 168")
        else:
            values["expiry_hours"] = float(hours)
    if mode != "disabled":
        if values.get("host_key") is None and "host_key" not in data:
            p.fail(
                join_path(path, "host_key"),
                "required when the tunnel is enabled (the gateway's key is pinned, "
                "never trusted on first use)",
            )
        if not values.get("remote_port") and "remote_port" not in data:
            p.fail(join_path(path, "remote_port"), "required when the tunnel is enabled")
        elif "remote_port" in data and data["remote_port"] == 0:
            p.fail(join_path(path, "remote_port"), "must be 1-65535 when the tunnel is enabled")
    if len(p.errors) != before:
        return None
    return TunnelSettings(**{k: v for k, v in values.items() if v is not None})
