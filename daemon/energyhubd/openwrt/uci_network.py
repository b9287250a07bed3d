"""The WAN of the configuration as OpenWrt's ``/etc/config/network`` ``interface 'wan'``.

On OpenWrt netifd owns the WAN: it runs the DHCP client (``proto dhcp``) or sets the static
address, gateway and DNS servers (``proto static``). The daemon therefore never touches the
WAN device itself there; it writes the interface section and lets netifd apply it. As for
dhcp and system, the result is a diff of ``uci batch`` lines: an unchanged WAN yields nothing,
so the network is reloaded (and the WAN renegotiated) only when something really changed.
Switching to ``dhcp`` deletes the static options, so no stale address survives. Options this
module does not manage (``peerdns``, ``metric``, ``hostname``, IPv6) belong to the site.

``wan_status`` reads netifd's own view (``ubus call network.interface.wan status``) for the
daemon's status report.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Sequence
from typing import Any

from energyhubd.config.model import Wan
from energyhubd.openwrt.uci import Package, quote

PACKAGE = "network"
SECTION = "wan"
STATIC_OPTIONS = ("ipaddr", "netmask", "gateway")


def desired_options(wan: Wan) -> dict[str, str | list[str]]:
    """The options of ``interface 'wan'`` that the configuration decides."""
    options: dict[str, str | list[str]] = {"device": wan.device, "proto": wan.proto}
    if wan.proto == "static" and wan.address is not None:
        options["ipaddr"] = str(wan.address.ip)
        options["netmask"] = str(wan.address.netmask)
        if wan.gateway is not None:
            options["gateway"] = str(wan.gateway)
    if wan.dns:
        options["dns"] = [str(a) for a in wan.dns]
    return options


def wan_changes(current: Package, wan: Wan) -> list[str]:
    """``uci batch`` lines that turn the parsed network file's WAN into ``wan``."""
    commands: list[str] = []
    section = current.named(SECTION)
    have = dict(section.options) if section is not None else {}
    if section is None or section.type != "interface":
        commands.append(f"set {PACKAGE}.{SECTION}='interface'")
    wanted = desired_options(wan)
    for key in (*STATIC_OPTIONS, "dns"):
        if key not in wanted and key in have:
            commands.append(f"delete {PACKAGE}.{SECTION}.{key}")
    for key, value in wanted.items():
        current_value = have.get(key)
        if isinstance(value, list):
            have_list = (
                list(current_value)
                if isinstance(current_value, list)
                else (current_value.split() if current_value else [])
            )
            if have_list != value:
                if current_value is not None:
                    commands.append(f"delete {PACKAGE}.{SECTION}.{key}")
                commands += [f"add_list {PACKAGE}.{SECTION}.{key}={quote(v)}" for v in value]
        elif current_value != value:
            commands.append(f"set {PACKAGE}.{SECTION}.{key}={quote(value)}")
    return commands


Runner = Callable[[Sequence[str], str | None], None]


def _run(argv: Sequence[str], stdin: str | None) -> None:
    subprocess.run(list(argv), input=stdin, text=True, check=True, capture_output=True)


def apply_wan_changes(commands: list[str], run: Runner = _run) -> bool:
    """``uci batch``, commit ``network``, ``network reload`` (netifd re-reads); False if no-op.

    The reload goes through ubus to netifd, which reconfigures only the changed interface.
    """
    if not commands:
        return False
    run(["uci", "batch"], "\n".join(commands) + "\n")
    run(["uci", "commit", PACKAGE], None)
    run(["ubus", "call", "network", "reload"], None)
    return True


def summarize(answer: dict[str, Any]) -> dict[str, Any]:
    """Pure: the parts of netifd's interface status that the daemon reports."""
    addresses = [
        f"{a.get('address')}/{a.get('mask')}"
        for a in answer.get("ipv4-address", [])
        if isinstance(a, dict) and a.get("address")
    ]
    gateway = next(
        (
            r.get("nexthop")
            for r in answer.get("route", [])
            if isinstance(r, dict) and r.get("target") == "0.0.0.0" and r.get("mask") == 0
        ),
        None,
    )
    return {
        "up": bool(answer.get("up")),
        "proto": answer.get("proto"),
        "device": answer.get("l3_device") or answer.get("device"),
        "addresses": addresses,
        "gateway": gateway,
        "dns": list(answer.get("dns-server", [])),
        "uptime_s": answer.get("uptime"),
    }


def wan_status(timeout: float = 2.0) -> dict[str, Any]:
    """netifd's view of the WAN, or ``{"error": ...}`` when netifd does not answer."""
    try:
        proc = subprocess.run(
            ["ubus", "-t", str(max(1, int(timeout))), "call", f"network.interface.{SECTION}",
             "status"],
            capture_output=True, text=True, timeout=timeout + 2,
        )  # fmt: skip
        answer = json.loads(proc.stdout) if proc.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired, ValueError):
        answer = None
    if not isinstance(answer, dict):
        return {"error": "netifd did not answer network.interface.wan status"}
    return summarize(answer)
