"""The ``outbound`` section: where the required outbound flows go, and the support tunnel.

Every target is configurable so that the lab and the tests can point the flows at hosts in
namespaces (never at the real broker, gateway, Google DNS or AWS). The DNS fallback is not
repeated here: it stays in ``dns.fallback`` and is passed to the diagnostics as a parameter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from energyhubd.config import check as ck
from energyhubd.config.check import Checker, Option
from energyhubd.config.errors import FieldError, join_path

TUNNEL_MODES = ("disabled", "on_demand", "always")
MAX_LIST = 8
_USER_RE = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")
# An OpenSSH public key line: "<type> <base64>" (an optional comment is dropped).
_HOST_KEY_RE = re.compile(
    r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp256|ecdsa-sha2-nistp384|ecdsa-sha2-nistp521)"
    r" ([A-Za-z0-9+/]{16,}={0,3})(?: .*)?$"
)


@dataclass(frozen=True)
class TunnelSettings:
    """The support tunnel to the service gateway (see docs/outbound.md).

    ``host_key`` None: no key pinned, which is only allowed while the tunnel is disabled.
    """

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
    """Targets and timing of the outbound-flow diagnostics, allowlist and tunnel.

    ``ca_file`` None: the system trust store.
    """

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


def normalise_host_key(text: str) -> str | None:
    """``"ssh-ed25519 AAAA... comment"`` -> ``"ssh-ed25519 AAAA..."``; None if not a key."""
    m = _HOST_KEY_RE.match(text.strip())
    return f"{m.group(1)} {m.group(2)}" if m else None


def _host_key(c: Checker, value: Any, path: str) -> str | None:
    key = normalise_host_key(value) if isinstance(value, str) else None
    if key is None:
        c.fail(path, "must be the gateway's public host key, e.g. 'ssh-ed25519 AAAA...'")
    return key


_T = TunnelSettings()
TUNNEL_OPTIONS: dict[str, Option] = {
    "mode": Option(ck.choice(*TUNNEL_MODES), _T.mode),
    "user": Option(ck.string(_USER_RE, "user name like energyhub"), _T.user),
    "key_file": Option(ck.abspath(), _T.key_file),
    "remote_port": Option(ck.integer(0, 65535), _T.remote_port),
    "host_key": Option(_host_key, _T.host_key, nullable=True),
    "expiry_hours": Option(ck.number(0.001, 168), _T.expiry_hours),
}


def check_tunnel(c: Checker, obj: Any, path: str = "outbound.tunnel") -> TunnelSettings:
    mark = c.mark()
    values = c.options(obj, path, TUNNEL_OPTIONS)
    given = obj if isinstance(obj, dict) else {}
    if values["mode"] != "disabled":
        if given.get("host_key") is None:
            c.fail(
                join_path(path, "host_key"),
                "required when the tunnel is enabled (the gateway's key is pinned, "
                "never trusted on first use)",
            )
        if given.get("remote_port") is None:
            c.fail(join_path(path, "remote_port"), "required when the tunnel is enabled")
        elif values["remote_port"] == 0 and given.get("remote_port") == 0:
            c.fail(join_path(path, "remote_port"), "must be 1-65535 when the tunnel is enabled")
    return TunnelSettings() if c.failed_since(mark) else TunnelSettings(**values)


_D = OutboundSettings()
OPTIONS: dict[str, Option] = {
    "broker_host": Option(ck.host(), _D.broker_host),
    "mqtt_ports": Option(ck.unique(ck.integer(1, 65535), 1, MAX_LIST), _D.mqtt_ports),
    "gateway_address": Option(ck.ipv4_text(), _D.gateway_address),
    "gateway_port": Option(ck.integer(1, 65535), _D.gateway_port),
    "ntp_servers": Option(ck.unique(ck.host(), 1, MAX_LIST), _D.ntp_servers),
    "update_host": Option(ck.host(), _D.update_host),
    "ca_file": Option(ck.abspath(), _D.ca_file, nullable=True),
    "diagnose_interval": Option(ck.seconds(300, 7 * 86400), _D.diagnose_interval),
    "timeout": Option(ck.seconds(0.5, 60), _D.timeout),
    "ip_ranges_file": Option(ck.abspath(), _D.ip_ranges_file),
    "tunnel": Option(check_tunnel, _D.tunnel),
}


def check_outbound(c: Checker, obj: Any, path: str = "outbound") -> OutboundSettings:
    """Read the ``outbound`` object into ``c``; the defaults when anything is wrong."""
    mark = c.mark()
    values = c.options(obj, path, OPTIONS)
    return OutboundSettings() if c.failed_since(mark) else OutboundSettings(**values)


def parse_outbound_section(
    obj: Any, path: str = "outbound"
) -> tuple[OutboundSettings, list[FieldError]]:
    """Validate the ``outbound`` object alone: the settings (defaults on error), every error."""
    c = Checker()
    settings = check_outbound(c, obj, path)
    return settings, c.errors
