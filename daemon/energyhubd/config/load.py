"""Turn a configuration document (JSON form) into the validated model.

Validation collects *every* problem with its field path before anything is applied, so a
rejected push or file can be fixed in one round trip, and a half-valid document never reaches
the kernel.
"""

from __future__ import annotations

import importlib
import ipaddress
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from energyhubd.config import model
from energyhubd.config.errors import ConfigError, FieldError, join_path

OPENWRT_RELEASE = "/etc/openwrt_release"
IFNAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,15}$")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
DEVICE_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
MAC_RE = re.compile(r"^[0-9a-f]{2}([:-][0-9a-f]{2}){5}$", re.IGNORECASE)
DURATION_RE = re.compile(r"^(\d+)([smhdw]?)$")
DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
MIN_LEASE_SECONDS = 120

# Sections owned by other subsystems: key -> "module:function" returning (settings, errors).
SECTION_PARSERS = {
    "inventory": "energyhubd.inventory.settings:parse_inventory_section",
    "portal": "energyhubd.portal.settings:parse_portal_section",
    "outbound": "energyhubd.outbound.settings:parse_outbound_section",
}

TOP_KEYS = {
    "schema",
    "version",
    "device_id",
    "platform",
    "state_dir",
    "wan",
    "lan",
    "forwards",
    "egress",
    "dns",
    "control",
    *SECTION_PARSERS,
}


class _Checker:
    """Collects FieldErrors while reading typed values out of plain JSON data."""

    def __init__(self) -> None:
        self.errors: list[FieldError] = []

    def fail(self, path: str, reason: str) -> None:
        self.errors.append(FieldError(path, reason))

    def obj(self, value: Any, path: str, keys: set[str]) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.fail(path, f"must be an object, not {_kind(value)}")
            return {}
        for key in value:
            if key not in keys:
                self.fail(join_path(path, str(key)), "unknown key")
        return value

    def integer(self, value: Any, path: str, default: int, lo: int, hi: int) -> int:
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(path, f"must be an integer, not {_kind(value)}")
            return default
        if not lo <= value <= hi:
            self.fail(path, f"{value} is out of range {lo}..{hi}")
            return default
        return value

    def boolean(self, value: Any, path: str, default: bool) -> bool:
        if value is None:
            return default
        if not isinstance(value, bool):
            self.fail(path, f"must be true or false, not {_kind(value)}")
            return default
        return value

    def string(
        self,
        value: Any,
        path: str,
        default: str,
        pattern: re.Pattern[str] | None = None,
        what: str = "",
    ) -> str:
        if value is None:
            return default
        if not isinstance(value, str):
            self.fail(path, f"must be a string, not {_kind(value)}")
            return default
        if pattern is not None and not pattern.match(value):
            self.fail(path, f"{_show(value)} is not a valid {what or 'value'}")
            return default
        return value

    def choice(self, value: Any, path: str, default: str, choices: tuple[str, ...]) -> str:
        text = self.string(value, path, default)
        if text not in choices:
            self.fail(path, f"{_show(text)} is not one of {', '.join(choices)}")
            return default
        return text

    def lst(self, value: Any, path: str) -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list):
            self.fail(path, f"must be a list, not {_kind(value)}")
            return []
        return value

    def ipv4(self, value: Any, path: str) -> ipaddress.IPv4Address | None:
        if not isinstance(value, str):
            self.fail(path, f"must be an IPv4 address string, not {_kind(value)}")
            return None
        try:
            return ipaddress.IPv4Address(value)
        except ValueError:
            self.fail(path, f"{_show(value)} is not an IPv4 address")
            return None

    def interface(self, value: Any, path: str) -> ipaddress.IPv4Interface | None:
        if not isinstance(value, str) or "/" not in value:
            self.fail(
                path, f"{_show(value)} must be an IPv4 address with prefix, like 192.0.2.1/24"
            )
            return None
        try:
            iface = ipaddress.IPv4Interface(value)
        except ValueError:
            self.fail(path, f"{_show(value)} is not an IPv4 address with prefix")
            return None
        if iface.network.prefixlen > 30:
            self.fail(path, f"prefix /{iface.network.prefixlen} leaves no room for hosts")
            return None
        if iface.ip in (iface.network.network_address, iface.network.broadcast_address):
            self.fail(path, f"{iface.ip} is the network or broadcast address of {iface.network}")
            return None
        return iface

    def network(self, value: Any, path: str) -> ipaddress.IPv4Network | None:
        if not isinstance(value, str):
            self.fail(path, f"must be an IPv4 address or prefix string, not {_kind(value)}")
            return None
        try:
            iface = ipaddress.IPv4Interface(value)
        except ValueError:
            self.fail(path, f"{_show(value)} is not an IPv4 address or prefix")
            return None
        if iface.ip != iface.network.network_address:
            self.fail(path, f"{_show(value)} has host bits set (did you mean {iface.network}?)")
            return None
        return iface.network

    def mac(self, value: Any, path: str) -> str | None:
        if value is None or value == "":
            return None
        if not isinstance(value, str) or not MAC_RE.match(value):
            self.fail(path, f"{_show(value)} is not a MAC address like 02:00:5e:00:00:01")
            return None
        mac = value.lower().replace("-", ":")
        if int(mac[:2], 16) & 1:
            self.fail(path, f"{mac} is a multicast address")
            return None
        return mac

    def duration(self, value: Any, path: str, default: int, minimum: int) -> int:
        if value is None:
            return default
        if isinstance(value, bool):
            self.fail(path, "must be seconds or a duration like 24h")
            return default
        if isinstance(value, int):
            seconds = value
        elif isinstance(value, str) and (m := DURATION_RE.match(value.strip())):
            seconds = int(m.group(1)) * DURATION_UNITS[m.group(2)]
        else:
            self.fail(path, f"{_show(value)} is not a duration like 3600, 90m, 24h or 1d")
            return default
        if seconds < minimum:
            self.fail(path, f"{seconds} s is shorter than the minimum {minimum} s")
            return default
        return seconds


def _kind(value: Any) -> str:
    return {
        dict: "an object",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        type(None): "null",
    }.get(type(value), type(value).__name__)


def _show(value: Any) -> str:
    """Quote a user value for an error message, short and without control characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def detect_platform() -> str:
    return "openwrt" if os.path.exists(OPENWRT_RELEASE) else "linux"


def parse_document(obj: Any, source: str = "") -> model.Config:
    """Validate a JSON-form document completely; raise ConfigError listing every problem."""
    c = _Checker()
    if not isinstance(obj, dict):
        raise ConfigError(
            [FieldError("", f"the document must be a JSON object, not {_kind(obj)}")], source
        )
    doc = c.obj(obj, "", TOP_KEYS)
    schema = c.integer(doc.get("schema"), "schema", 1, 1, 1)
    version = c.integer(doc.get("version"), "version", 0, 0, 2**53)
    device_id = c.string(
        doc.get("device_id"),
        "device_id",
        "energyhub",
        DEVICE_ID_RE,
        "device id ([a-z0-9][a-z0-9_-]{0,63})",
    )
    platform = c.choice(doc.get("platform"), "platform", "auto", ("auto", "linux", "openwrt"))
    if platform == "auto":
        platform = detect_platform()
    default_state = "/etc/energyhubd" if platform == "openwrt" else "/var/lib/energyhubd"
    state_dir = c.string(doc.get("state_dir"), "state_dir", default_state)
    if not state_dir.startswith("/"):
        c.fail("state_dir", f"{_show(state_dir)} must be an absolute path")

    wan = _parse_wan(c, doc.get("wan"))
    lan = _parse_lan(c, doc.get("lan"))
    forwards = _parse_forwards(c, doc.get("forwards"), lan, wan)

    egress = c.obj(doc.get("egress"), "egress", {"mode"})
    egress_mode = c.choice(egress.get("mode"), "egress.mode", "open", ("open", "allowlist"))
    dns = c.obj(doc.get("dns"), "dns", {"fallback"})
    fallback: tuple[ipaddress.IPv4Address, ...] = model.DEFAULT_DNS_FALLBACK_ADDRS
    if "fallback" in dns:
        fallback = _unique_addresses(c, dns.get("fallback"), "dns.fallback")
    control = c.obj(doc.get("control"), "control", {"socket", "ubus_socket"})
    socket_path = c.string(control.get("socket"), "control.socket", model.DEFAULT_SOCKET)
    if not socket_path.startswith("/"):
        c.fail("control.socket", f"{_show(socket_path)} must be an absolute path")
    ubus_socket = c.string(control.get("ubus_socket"), "control.ubus_socket", "") or None
    if ubus_socket is not None and not ubus_socket.startswith("/"):
        c.fail("control.ubus_socket", f"{_show(ubus_socket)} must be an absolute path")

    sections: dict[str, Any] = {}
    for key, target in SECTION_PARSERS.items():
        parser = _section_parser(target)
        if parser is None:
            if doc.get(key) is not None:
                c.fail(key, "this build does not support the section yet")
            sections[key] = None
            continue
        settings, errors = parser(doc.get(key), key)
        c.errors.extend(errors)
        sections[key] = settings

    if c.errors:
        raise ConfigError(c.errors, source)
    config = model.Config(
        schema=schema,
        version=version,
        device_id=device_id,
        platform=platform,
        state_dir=state_dir,
        wan=wan,
        lan=lan,
        forwards=forwards,
        egress_mode=egress_mode,
        dns_fallback=fallback,
        control_socket=socket_path,
        ubus_socket=ubus_socket,
        inventory=sections["inventory"],
        portal=sections["portal"],
        outbound=sections["outbound"],
        document=json.loads(json.dumps(obj)),
    )
    return config


def _section_parser(target: str) -> Callable[[Any, str], tuple[Any, list[FieldError]]] | None:
    module_name, _, func = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    parser: Callable[[Any, str], tuple[Any, list[FieldError]]] = getattr(module, func)
    return parser


def _unique_addresses(c: _Checker, value: Any, path: str) -> tuple[ipaddress.IPv4Address, ...]:
    seen: list[ipaddress.IPv4Address] = []
    for i, item in enumerate(c.lst(value, path)):
        addr = c.ipv4(item, join_path(path, i))
        if addr is None:
            continue
        if addr in seen:
            c.fail(join_path(path, i), f"{addr} is listed twice")
            continue
        seen.append(addr)
    return tuple(seen)


def _parse_wan(c: _Checker, value: Any) -> model.Wan:
    wan = c.obj(value, "wan", {"device", "proto", "address", "gateway", "dns"})
    device = c.string(
        wan.get("device"), "wan.device", model.DEFAULT_WAN_DEVICE, IFNAME_RE, "interface name"
    )
    proto = c.choice(wan.get("proto"), "wan.proto", "dhcp", ("dhcp", "static"))
    if proto == "dhcp":
        for key in ("address", "gateway", "dns"):
            if wan.get(key) not in (None, []):
                c.fail(f"wan.{key}", "only used with proto static (proto is dhcp)")
        return model.Wan(device=device, proto=proto)
    address = gateway = None
    if wan.get("address") is None:
        c.fail("wan.address", "required when proto is static")
    else:
        address = c.interface(wan.get("address"), "wan.address")
    if wan.get("gateway") is None:
        c.fail("wan.gateway", "required when proto is static")
    else:
        gateway = c.ipv4(wan.get("gateway"), "wan.gateway")
    if address is not None and gateway is not None:
        if gateway not in address.network:
            c.fail("wan.gateway", f"{gateway} is not inside {address.network}")
        elif gateway == address.ip:
            c.fail("wan.gateway", f"{gateway} is the WAN address itself")
    dns = _unique_addresses(c, wan.get("dns"), "wan.dns")
    return model.Wan(device=device, proto=proto, address=address, gateway=gateway, dns=dns)


def _parse_lan(c: _Checker, value: Any) -> model.Lan:
    lan = c.obj(value, "lan", {"device", "address", "admin_access", "dhcp"})
    device = c.string(
        lan.get("device"), "lan.device", model.DEFAULT_LAN_DEVICE, IFNAME_RE, "interface name"
    )
    address = model.DEFAULT_LAN_IFACE
    if lan.get("address") is not None:
        address = c.interface(lan.get("address"), "lan.address") or model.DEFAULT_LAN_IFACE
    admin = c.boolean(lan.get("admin_access"), "lan.admin_access", True)
    dhcp = _parse_dhcp(c, lan.get("dhcp"), address)
    return model.Lan(device=device, address=address, admin_access=admin, dhcp=dhcp)


def _pool_address(
    c: _Checker, value: Any, path: str, default: str, lan: ipaddress.IPv4Interface
) -> ipaddress.IPv4Address | None:
    addr = ipaddress.IPv4Address(default) if value is None else c.ipv4(value, path)
    if addr is None:
        return None
    net = lan.network
    if addr not in net:
        c.fail(path, f"{addr} is outside the LAN network {net}")
        return None
    if addr in (net.network_address, net.broadcast_address, lan.ip):
        c.fail(path, f"{addr} is the network, broadcast or router address")
        return None
    return addr


def _parse_dhcp(c: _Checker, value: Any, lan: ipaddress.IPv4Interface) -> model.Dhcp:
    dhcp = c.obj(value, "lan.dhcp", {"start", "end", "lease_time", "reservations"})
    start = _pool_address(c, dhcp.get("start"), "lan.dhcp.start", model.DEFAULT_POOL_START, lan)
    end = _pool_address(c, dhcp.get("end"), "lan.dhcp.end", model.DEFAULT_POOL_END, lan)
    if start is not None and end is not None and end < start:
        c.fail("lan.dhcp.end", f"{end} is below the pool start {start}")
        end = None
    if start is not None and end is not None and start <= lan.ip <= end:
        c.fail("lan.dhcp.start", f"the pool {start}-{end} contains the router address {lan.ip}")
    lease = c.duration(
        dhcp.get("lease_time"),
        "lan.dhcp.lease_time",
        model.DEFAULT_LEASE_SECONDS,
        MIN_LEASE_SECONDS,
    )
    if "reservations" in dhcp:
        raw = c.lst(dhcp.get("reservations"), "lan.dhcp.reservations")
    else:
        raw = [{"name": "display", "ip": model.DEFAULT_DISPLAY_IP}]
    reservations: list[model.Reservation] = []
    names: dict[str, int] = {}
    macs: dict[str, int] = {}
    ips: dict[ipaddress.IPv4Address, int] = {}
    for i, item in enumerate(raw):
        path = f"lan.dhcp.reservations[{i}]"
        r = c.obj(item, path, {"name", "mac", "ip"})
        if not isinstance(item, dict):
            continue
        name = c.string(r.get("name"), f"{path}.name", "", NAME_RE, "name")
        if r.get("name") is None:
            c.fail(f"{path}.name", "required")
        mac = c.mac(r.get("mac"), f"{path}.mac")
        ip = None
        if r.get("ip") is None:
            c.fail(f"{path}.ip", "required")
        else:
            ip = c.ipv4(r.get("ip"), f"{path}.ip")
        if ip is not None and start is not None and end is not None and not start <= ip <= end:
            c.fail(f"{path}.ip", f"{ip} is outside the LAN pool {start}-{end}")
            ip = None
        if name and name in names:
            c.fail(f"{path}.name", f"{name!r} is already used by reservations[{names[name]}]")
        if mac and mac in macs:
            c.fail(f"{path}.mac", f"{mac} is already used by reservations[{macs[mac]}]")
        if ip is not None and ip in ips:
            c.fail(f"{path}.ip", f"{ip} is already reserved by reservations[{ips[ip]}]")
        if name:
            names.setdefault(name, i)
        if mac:
            macs.setdefault(mac, i)
        if ip is not None:
            ips.setdefault(ip, i)
        if name and ip is not None:
            reservations.append(model.Reservation(name=name, ip=ip, mac=mac))
    return model.Dhcp(
        start=start or ipaddress.IPv4Address(model.DEFAULT_POOL_START),
        end=end or ipaddress.IPv4Address(model.DEFAULT_POOL_END),
        lease_seconds=lease,
        reservations=tuple(reservations),
    )


def _parse_forwards(
    c: _Checker, value: Any, lan: model.Lan, wan: model.Wan
) -> tuple[model.Forward, ...]:
    forwards: list[model.Forward] = []
    names: dict[str, int] = {}
    ports: dict[tuple[str, int], int] = {}
    keys = {"name", "proto", "port", "target", "target_port", "allow_from", "allow_any_source"}
    for i, item in enumerate(c.lst(value, "forwards")):
        path = f"forwards[{i}]"
        f = c.obj(item, path, keys)
        if not isinstance(item, dict):
            continue
        name = c.string(f.get("name"), f"{path}.name", "", NAME_RE, "name")
        if f.get("name") is None:
            c.fail(f"{path}.name", "required")
        elif name and name in names:
            c.fail(f"{path}.name", f"{name!r} is already used by forwards[{names[name]}]")
        proto = c.choice(f.get("proto"), f"{path}.proto", "tcp", ("tcp", "udp"))
        if f.get("port") is None:
            c.fail(f"{path}.port", "required")
        port = c.integer(f.get("port"), f"{path}.port", 0, 1, 65535)
        target_port = c.integer(f.get("target_port"), f"{path}.target_port", port, 1, 65535)
        if port and (proto, port) in ports:
            c.fail(
                f"{path}.port",
                f"{proto}/{port} is already forwarded by forwards[{ports[(proto, port)]}]",
            )
        target = _parse_target(c, f.get("target"), f"{path}.target", lan)
        any_source = c.boolean(f.get("allow_any_source"), f"{path}.allow_any_source", False)
        allow = _parse_allow_from(c, f.get("allow_from"), f"{path}.allow_from")
        if any_source and allow:
            c.fail(f"{path}.allow_from", "must be empty when allow_any_source is true")
        if not any_source and not allow and f.get("allow_from") in (None, []):
            c.fail(f"{path}.allow_from", "required unless allow_any_source is true")
        if name:
            names.setdefault(name, i)
        if port:
            ports.setdefault((proto, port), i)
        if name and port and target:
            forwards.append(
                model.Forward(
                    name=name,
                    proto=proto,
                    port=port,
                    target=target,
                    target_port=target_port,
                    allow_from=allow,
                    allow_any_source=any_source,
                )
            )
    return tuple(forwards)


def _parse_target(c: _Checker, value: Any, path: str, lan: model.Lan) -> str:
    if value is None:
        c.fail(path, "required")
        return ""
    if not isinstance(value, str):
        c.fail(path, f"must be a reservation name, MAC or LAN IP, not {_kind(value)}")
        return ""
    if MAC_RE.match(value):
        return c.mac(value, path) or ""
    try:
        ip = ipaddress.IPv4Address(value)
    except ValueError:
        ip = None
    if ip is not None:
        net = lan.address.network
        if ip not in net:
            c.fail(path, f"{ip} is outside the LAN network {net}")
            return ""
        if ip in (net.network_address, net.broadcast_address, lan.address.ip):
            c.fail(path, f"{ip} is the network, broadcast or router address")
            return ""
        return str(ip)
    if lan.dhcp.reservation(value) is None:
        known = ", ".join(r.name for r in lan.dhcp.reservations) or "none"
        c.fail(
            path, f"{_show(value)} is not a reservation name, MAC or LAN IP (reservations: {known})"
        )
        return ""
    return value


def _parse_allow_from(c: _Checker, value: Any, path: str) -> tuple[ipaddress.IPv4Network, ...]:
    nets: list[tuple[int, ipaddress.IPv4Network]] = []
    for i, item in enumerate(c.lst(value, path)):
        net = c.network(item, join_path(path, i))
        if net is None:
            continue
        clash = next((j for j, other in nets if other.overlaps(net)), None)
        if clash is not None:
            other = dict(nets)[clash]
            what = "duplicates" if other == net else "overlaps"
            c.fail(
                join_path(path, i), f"{_net_text(net)} {what} {path}[{clash}] ({_net_text(other)})"
            )
            continue
        nets.append((i, net))
    return tuple(n for _, n in nets)


def _net_text(net: ipaddress.IPv4Network) -> str:
    return str(net.network_address) if net.prefixlen == 32 else str(net)


def parse_text(text: str | bytes, source: str = "") -> model.Config:
    """Parse a JSON document from text (a file or a push)."""
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ConfigError([FieldError("", f"not valid JSON: {exc}")], source) from None
    return parse_document(obj, source)


def load_file(path: str | os.PathLike[str]) -> model.Config:
    """Load a configuration file: JSON (``.json`` or text starting with ``{``) or UCI."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ConfigError([FieldError("", f"cannot read: {exc.strerror}")], str(p)) from None
    stripped = data.lstrip()
    if p.suffix == ".json" or stripped.startswith(b"{") or not stripped:
        return parse_text(data or b"{}", str(p))
    from energyhubd.openwrt import uci, uci_document  # UCI form; imported only when used

    package = uci.parse(data.decode("utf-8", errors="replace"), str(p))
    document = uci_document.uci_to_document(package, str(p))
    try:
        return parse_document(document, str(p))
    except ConfigError as exc:
        raise uci_document.annotate(exc, package) from None
