"""Turn a configuration document (JSON form) into the validated model.

Validation collects *every* problem with its field path before anything is applied, so a
rejected push or file can be fixed in one round trip, and a half-valid document never reaches
the kernel. Every section is read through the one :class:`~energyhubd.config.check.Checker`
and its option tables; checks that relate options run after the table on typed values.

The parser does not look at the machine it runs on: ``platform: auto`` in a document becomes
``host_platform``, which the caller passes in (``energyhubd.paths`` detects it).
"""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Any

from energyhubd.config import check as ck
from energyhubd.config import model
from energyhubd.config.check import Checker, Option, show
from energyhubd.config.errors import ConfigError, FieldError, join_path
from energyhubd.config.overlap import first_overlaps
from energyhubd.config.sections.inventory import check_inventory
from energyhubd.config.sections.outbound import check_outbound
from energyhubd.config.sections.portal import check_portal

IFNAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,15}$")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
DEVICE_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
MIN_LEASE_SECONDS = 120
MAX_LEASE_SECONDS = 2**31 - 1
PLATFORMS = ("linux", "openwrt")
DEFAULT_HOST_PLATFORM = "linux"

# Bounds on allow_from (docs/config.md, "Size bounds"). A forward serves the few Modbus or
# ExtAPI clients of one site; 256 sources (a /24 written out address by address) is far
# beyond that. 4,096 in total is 16 such forwards, and more than a default-sized push
# (portal.max_push_bytes, 64 KiB, about 3,400 entries) can carry. The bounds keep the overlap
# check, the nft sets and the push small; the check itself is O(n log n) in any case.
MAX_ALLOW_FROM_PER_FORWARD = 256
MAX_ALLOW_FROM_PER_CONFIG = 4096

SUBSECTIONS: tuple[str, ...] = (
    "wan",
    "lan",
    "forwards",
    "egress",
    "dns",
    "control",
    "portal",
    "outbound",
    "inventory",
)


def _raw(c: Checker, value: Any, path: str) -> Any:
    """For options read by the caller's own code after the table."""
    return value


TOP_OPTIONS: dict[str, Option] = {
    "schema": Option(ck.integer(1, 1), 1),
    "version": Option(ck.integer(0, 2**53), 0),
    "device_id": Option(
        ck.string(DEVICE_ID_RE, "device id ([a-z0-9][a-z0-9_-]{0,63})"), "energyhub"
    ),
    "platform": Option(ck.choice("auto", *PLATFORMS), "auto"),
    "state_dir": Option(ck.abspath()),  # the default follows the platform
}


def parse_document(
    obj: Any, source: str = "", *, host_platform: str = DEFAULT_HOST_PLATFORM
) -> model.Config:
    """Validate a JSON-form document completely; raise ConfigError listing every problem."""
    c = Checker()
    if not isinstance(obj, dict):
        raise ConfigError(
            [FieldError("", f"the document must be a JSON object, not {ck.kind(obj)}")], source
        )
    top = c.options(obj, "", TOP_OPTIONS, SUBSECTIONS)
    platform = host_platform if top["platform"] == "auto" else top["platform"]
    state_dir = top["state_dir"] or (
        "/etc/energyhubd" if platform == "openwrt" else "/var/lib/energyhubd"
    )
    wan = _parse_wan(c, obj.get("wan"))
    lan = _parse_lan(c, obj.get("lan"))
    forwards = _parse_forwards(c, obj.get("forwards"), lan)
    egress = c.options(obj.get("egress"), "egress", EGRESS_OPTIONS)
    dns = c.options(obj.get("dns"), "dns", DNS_OPTIONS)
    control = c.options(obj.get("control"), "control", CONTROL_OPTIONS)
    lease_file = model.platform_lease_file(platform, state_dir)
    inventory = check_inventory(c, obj.get("inventory"), "inventory", lease_file)
    portal = check_portal(c, obj.get("portal"), "portal")
    outbound = check_outbound(c, obj.get("outbound"), "outbound")
    if c.errors:
        raise ConfigError(c.errors, source)
    return model.Config(
        schema=top["schema"],
        version=top["version"],
        device_id=top["device_id"],
        platform=platform,
        state_dir=state_dir,
        wan=wan,
        lan=lan,
        forwards=forwards,
        egress_mode=egress["mode"],
        dns_fallback=dns["fallback"] or (),
        control_socket=control["socket"],
        ubus_socket=control["ubus_socket"],
        inventory=inventory,
        portal=portal,
        outbound=outbound,
        document=json.loads(json.dumps(obj)),
    )


def _ipv4(c: Checker, value: Any, path: str) -> ipaddress.IPv4Address | None:
    return c.ipv4(value, path)


EGRESS_OPTIONS = {"mode": Option(ck.choice("open", "allowlist"), "open")}
# dns.fallback: null or [] means "no fallback", which is not the default (8.8.8.8).
DNS_OPTIONS = {
    "fallback": Option(ck.unique(_ipv4), model.DEFAULT_DNS_FALLBACK_ADDRS, nullable=True)
}
CONTROL_OPTIONS = {
    "socket": Option(ck.abspath(), model.DEFAULT_SOCKET),
    # None: the ubus object only on OpenWrt, on the default ubusd socket
    "ubus_socket": Option(ck.abspath(), None),
}

WAN_OPTIONS: dict[str, Option] = {
    "device": Option(ck.string(IFNAME_RE, "interface name"), model.DEFAULT_WAN_DEVICE),
    "proto": Option(ck.choice("dhcp", "static"), "dhcp"),
    "address": Option(_raw),
    "gateway": Option(_raw),
    "dns": Option(_raw),
}


def _parse_wan(c: Checker, value: Any) -> model.Wan:
    wan = c.options(value, "wan", WAN_OPTIONS)
    device, proto = wan["device"], wan["proto"]
    if proto == "dhcp":
        # Reported as unused, not checked: the user meant something else than static.
        for key in ("address", "gateway", "dns"):
            if wan[key] not in (None, []):
                c.fail(f"wan.{key}", "only used with proto static (proto is dhcp)")
        return model.Wan(device=device, proto=proto)
    address = gateway = None
    if wan["address"] is None:
        c.fail("wan.address", "required when proto is static")
    else:
        address = c.interface(wan["address"], "wan.address")
    if wan["gateway"] is None:
        c.fail("wan.gateway", "required when proto is static")
    else:
        gateway = c.ipv4(wan["gateway"], "wan.gateway")
    if address is not None and gateway is not None:
        if gateway not in address.network:
            c.fail("wan.gateway", f"{gateway} is not inside {address.network}")
        elif gateway == address.ip:
            c.fail("wan.gateway", f"{gateway} is the WAN address itself")
    dns: tuple[ipaddress.IPv4Address, ...] = ()
    if wan["dns"] is not None:
        dns = c.unique(wan["dns"], "wan.dns", _ipv4) or ()
    return model.Wan(device=device, proto=proto, address=address, gateway=gateway, dns=dns)


def _lan_address(c: Checker, value: Any, path: str) -> ipaddress.IPv4Interface | None:
    return c.interface(value, path)


LAN_OPTIONS: dict[str, Option] = {
    "device": Option(ck.string(IFNAME_RE, "interface name"), model.DEFAULT_LAN_DEVICE),
    "address": Option(_lan_address, model.DEFAULT_LAN_IFACE),
    "admin_access": Option(ck.boolean(), True),
}


def _parse_lan(c: Checker, value: Any) -> model.Lan:
    lan = c.options(value, "lan", LAN_OPTIONS, ("dhcp",))
    raw = value.get("dhcp") if isinstance(value, dict) else None
    dhcp = _parse_dhcp(c, raw, lan["address"])
    return model.Lan(
        device=lan["device"], address=lan["address"], admin_access=lan["admin_access"], dhcp=dhcp
    )


def _pool_address(
    c: Checker, addr: ipaddress.IPv4Address, path: str, lan: ipaddress.IPv4Interface
) -> ipaddress.IPv4Address | None:
    net = lan.network
    if addr not in net:
        c.fail(path, f"{addr} is outside the LAN network {net}")
        return None
    if addr in (net.network_address, net.broadcast_address, lan.ip):
        c.fail(path, f"{addr} is the network, broadcast or router address")
        return None
    return addr


def _lease_seconds(c: Checker, value: Any, path: str) -> int | None:
    seconds = c.seconds(value, path, MIN_LEASE_SECONDS, MAX_LEASE_SECONDS)
    return None if seconds is None else int(seconds)


DHCP_OPTIONS: dict[str, Option] = {
    "start": Option(_ipv4, ipaddress.IPv4Address(model.DEFAULT_POOL_START)),
    "end": Option(_ipv4, ipaddress.IPv4Address(model.DEFAULT_POOL_END)),
    "lease_time": Option(_lease_seconds, model.DEFAULT_LEASE_SECONDS),
    # absent: the display's reservation; null or []: no reservations at all.
    "reservations": Option(
        _raw, [{"name": "display", "ip": model.DEFAULT_DISPLAY_IP}], nullable=True
    ),
}


def _parse_dhcp(c: Checker, value: Any, lan: ipaddress.IPv4Interface) -> model.Dhcp:
    mark = c.mark()
    dhcp = c.options(value, "lan.dhcp", DHCP_OPTIONS)
    parsed_ok = {k: not _failed_at(c, mark, f"lan.dhcp.{k}") for k in ("start", "end")}
    start = _pool_address(c, dhcp["start"], "lan.dhcp.start", lan) if parsed_ok["start"] else None
    end = _pool_address(c, dhcp["end"], "lan.dhcp.end", lan) if parsed_ok["end"] else None
    if start is not None and end is not None and end < start:
        c.fail("lan.dhcp.end", f"{end} is below the pool start {start}")
        end = None
    if start is not None and end is not None and start <= lan.ip <= end:
        c.fail("lan.dhcp.start", f"the pool {start}-{end} contains the router address {lan.ip}")
    reservations = _parse_reservations(c, dhcp["reservations"], start, end)
    return model.Dhcp(
        start=start or ipaddress.IPv4Address(model.DEFAULT_POOL_START),
        end=end or ipaddress.IPv4Address(model.DEFAULT_POOL_END),
        lease_seconds=dhcp["lease_time"],
        reservations=reservations,
    )


def _failed_at(c: Checker, mark: int, path: str) -> bool:
    return any(e.path == path for e in c.errors[mark:])


def _optional_mac(c: Checker, value: Any, path: str) -> str | None:
    return None if value == "" else c.mac(value, path)


RESERVATION_OPTIONS: dict[str, Option] = {
    "name": Option(ck.string(NAME_RE, "name"), "", required=True),
    "mac": Option(_optional_mac),
    "ip": Option(_ipv4, required=True),
}


def _parse_reservations(
    c: Checker,
    value: Any,
    start: ipaddress.IPv4Address | None,
    end: ipaddress.IPv4Address | None,
) -> tuple[model.Reservation, ...]:
    reservations: list[model.Reservation] = []
    names: dict[str, int] = {}
    macs: dict[str, int] = {}
    ips: dict[ipaddress.IPv4Address, int] = {}
    for i, item in enumerate(c.lst(value, "lan.dhcp.reservations")):
        path = f"lan.dhcp.reservations[{i}]"
        if not isinstance(item, dict):
            c.fail(path, f"must be an object, not {ck.kind(item)}")
            continue
        r = c.options(item, path, RESERVATION_OPTIONS)
        name, mac, ip = r["name"], r["mac"], r["ip"]
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
    return tuple(reservations)


def _forward_options(lan: model.Lan) -> dict[str, Option]:
    return {
        "name": Option(ck.string(NAME_RE, "name"), "", required=True),
        "proto": Option(ck.choice("tcp", "udp"), "tcp"),
        "port": Option(ck.integer(1, 65535), 0, required=True),
        "target_port": Option(ck.integer(1, 65535), 0),  # 0: the same as port
        "target": Option(lambda c, v, p: _target(c, v, p, lan), "", required=True),
        "allow_from": Option(_raw),  # checked with the configuration-wide bound below
        "allow_any_source": Option(ck.boolean(), False),
    }


def _parse_forwards(c: Checker, value: Any, lan: model.Lan) -> tuple[model.Forward, ...]:
    forwards: list[model.Forward] = []
    names: dict[str, int] = {}
    ports: dict[tuple[str, int], int] = {}
    spec = _forward_options(lan)
    total = 0
    for i, item in enumerate(c.lst(value, "forwards")):
        path = f"forwards[{i}]"
        if not isinstance(item, dict):
            c.fail(path, f"must be an object, not {ck.kind(item)}")
            continue
        f = c.options(item, path, spec)
        name, proto, port, target = f["name"], f["proto"], f["port"], f["target"]
        target_port = f["target_port"] or port
        any_source = f["allow_any_source"]
        allow, counted = _parse_allow_from(c, f["allow_from"], f"{path}.allow_from", total)
        total += counted
        if name and name in names:
            c.fail(f"{path}.name", f"{name!r} is already used by forwards[{names[name]}]")
        if port and (proto, port) in ports:
            c.fail(
                f"{path}.port",
                f"{proto}/{port} is already forwarded by forwards[{ports[(proto, port)]}]",
            )
        if any_source and allow:
            c.fail(f"{path}.allow_from", "must be empty when allow_any_source is true")
        if not any_source and not allow and f["allow_from"] in (None, []):
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


def _target(c: Checker, value: Any, path: str, lan: model.Lan) -> str:
    if not isinstance(value, str):
        c.fail(path, f"must be a reservation name, MAC or LAN IP, not {ck.kind(value)}")
        return ""
    if ck.MAC_RE.match(value):
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
            path, f"{show(value)} is not a reservation name, MAC or LAN IP (reservations: {known})"
        )
        return ""
    return value


def _parse_allow_from(
    c: Checker, value: Any, path: str, before: int
) -> tuple[tuple[ipaddress.IPv4Network, ...], int]:
    """The forward's sources and how many entries count against the configuration bound.

    Overlaps are found in O(n log n) (``config.overlap``); errors come out in list order.
    """
    items = c.lst(value, path)
    if len(items) > MAX_ALLOW_FROM_PER_FORWARD:
        c.fail(path, f"{len(items)} entries; at most {MAX_ALLOW_FROM_PER_FORWARD} per forward")
        return (), len(items)
    if before + len(items) > MAX_ALLOW_FROM_PER_CONFIG:
        c.fail(
            path,
            f"the configuration would have {before + len(items)} allow_from entries; "
            f"at most {MAX_ALLOW_FROM_PER_CONFIG} per configuration",
        )
        return (), len(items)
    local = Checker()
    nets: list[tuple[int, ipaddress.IPv4Network]] = []
    for i, item in enumerate(items):
        net = local.network(item, join_path(path, i))
        if net is not None:
            nets.append((i, net))
    by_index = dict(nets)
    errors = [(int(_index_of(e.path)), e) for e in local.errors]
    for i, j in first_overlaps(nets).items():
        net, other = by_index[i], by_index[j]
        what = "duplicates" if other == net else "overlaps"
        reason = f"{_net_text(net)} {what} {path}[{j}] ({_net_text(other)})"
        errors.append((i, FieldError(join_path(path, i), reason)))
    errors.sort(key=lambda pair: pair[0])
    c.errors.extend(error for _, error in errors)
    bad = {i for i, _ in errors}
    return tuple(net for i, net in nets if i not in bad), len(items)


def _index_of(path: str) -> str:
    return path.rsplit("[", 1)[1].rstrip("]")


def _net_text(net: ipaddress.IPv4Network) -> str:
    return str(net.network_address) if net.prefixlen == 32 else str(net)


def parse_text(
    text: str | bytes, source: str = "", *, host_platform: str = DEFAULT_HOST_PLATFORM
) -> model.Config:
    """Parse a JSON document from text (a file or a push)."""
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ConfigError([FieldError("", f"not valid JSON: {exc}")], source) from None
    return parse_document(obj, source, host_platform=host_platform)
