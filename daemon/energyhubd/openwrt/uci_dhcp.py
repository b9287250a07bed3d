"""Render the LAN DHCP plan (``energyhubd.policy.dhcp.DhcpPlan``, the same plan the plain
Linux dnsmasq gets) into changes of OpenWrt's ``/etc/config/dhcp``.

On OpenWrt dnsmasq is configured through UCI, so the pool, lease time and static leases are
expressed as ``uci batch`` commands (``set``/``delete``) rather than by editing the file: libuci
keeps its own locking and LuCI's staged changes intact. Commands are computed as a *diff*
against the current file, so an unchanged plan yields no commands and dnsmasq is reloaded only
when something really changed (a reload drops its DNS cache).

Our static leases are ``config host`` sections named ``energyhub_<name>``; host sections
with other names belong to the site and are never touched. ``dns.fallback`` goes into the
``server`` list of the ``config dnsmasq`` section (``dns_changes``).
"""

from __future__ import annotations

import ipaddress
import re
import subprocess
from collections.abc import Callable, Sequence

from energyhubd.openwrt.uci import Package, Section, quote
from energyhubd.policy.dhcp import DhcpPlan

HOST_PREFIX = "energyhub_"
PACKAGE = "dhcp"


def leasetime_text(seconds: int) -> str:
    """Spell a lease time as OpenWrt users write it (``24h``, ``90m``); else plain seconds."""
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0:
        return f"{seconds // 60}m"
    return str(seconds)


def host_section_name(name: str, taken: set[str]) -> str:
    """UCI section names allow only ``[A-Za-z0-9_]``; reservation names may also hold ``-``."""
    base = HOST_PREFIX + re.sub(r"[^A-Za-z0-9_]", "_", name)
    candidate, n = base, 2
    while candidate in taken:
        candidate, n = f"{base}_{n}", n + 1
    taken.add(candidate)
    return candidate


def _set(target: str, value: str) -> str:
    return f"set {PACKAGE}.{target}={quote(value)}"


def _opt(section: Section | None, key: str) -> str | list[str] | None:
    return None if section is None else section.options.get(key)


def dhcp_changes(current: Package, plan: DhcpPlan, lan_section: str = "lan") -> list[str]:
    """``uci batch`` lines that turn ``current`` (the parsed dhcp file) into ``plan``.

    An empty list means nothing changed: do not commit, do not reload dnsmasq.
    """
    commands: list[str] = []
    lan = current.named(lan_section)
    if lan is None:
        commands.append(_set(lan_section, "dhcp"))
        commands.append(_set(f"{lan_section}.interface", lan_section))
    for key, value in (
        ("start", str(plan.pool_offset)),
        ("limit", str(plan.pool_size)),
        ("leasetime", leasetime_text(plan.lease_seconds)),
    ):
        if _opt(lan, key) != value:
            commands.append(_set(f"{lan_section}.{key}", value))

    ours = {s.name: s for s in current.of_type("host") if s.name and s.name.startswith(HOST_PREFIX)}
    taken: set[str] = set()
    wanted: set[str] = set()
    for lease in plan.hosts:
        name = host_section_name(lease.name, taken)
        mac = lease.mac.lower() if lease.mac else None
        wanted.add(name)
        section = ours.get(name)
        if section is None:
            commands.append(_set(name, "host"))
        fields: tuple[tuple[str, str | None], ...] = (
            ("name", lease.name),
            ("ip", str(lease.ip)),
            ("mac", mac),
        )
        for key, want in fields:
            have = _opt(section, key)
            if want is None:
                if have is not None:
                    commands.append(f"delete {PACKAGE}.{name}.{key}")
            elif have != want:
                commands.append(_set(f"{name}.{key}", want))
    for name in ours:
        if name not in wanted:
            commands.append(f"delete {PACKAGE}.{name}")
    return commands


def _as_list(value: str | list[str] | None) -> list[str]:
    """A UCI list as written either way (``list`` lines, or one space-separated option)."""
    if value is None:
        return []
    return list(value) if isinstance(value, list) else value.split()


def _is_address(entry: str) -> bool:
    try:
        ipaddress.ip_address(entry)
    except ValueError:
        return False
    return True


def section_ref(package: Package, section: Section, type_: str) -> str:
    """How ``uci`` addresses ``section``: its name, or ``@type[index]`` when anonymous."""
    if section.name:
        return section.name
    return f"@{type_}[{package.of_type(type_).index(section)}]"


def dns_changes(current: Package, fallback: Sequence[str]) -> list[str]:
    """``uci batch`` lines that make dnsmasq's ``server`` list carry ``dns.fallback``.

    The DHCP-provided servers need nothing here: dnsmasq reads them from netifd's
    ``resolvfile``. The plain-address entries of the ``server`` list are energyhub's (they
    are ``dns.fallback``); other entries (``/domain/address``, ``address#port``) belong to
    the site and are kept, in front. Without ``strictorder`` (OpenWrt's default) dnsmasq
    sends a query to every server while it learns which answers fastest, so the fallback
    also serves in normal operation; see docs/outbound.md.
    """
    commands: list[str] = []
    sections = current.of_type("dnsmasq")
    if sections:
        ref = section_ref(current, sections[0], "dnsmasq")
        have = _as_list(sections[0].options.get("server"))
    else:
        commands.append(f"add {PACKAGE} dnsmasq")
        ref, have = "@dnsmasq[0]", []
    kept = [entry for entry in have if not _is_address(entry)]
    wanted = kept + [str(a) for a in dict.fromkeys(fallback)]
    if have == wanted:
        return commands
    if sections and "server" in sections[0].options:
        commands.append(f"delete {PACKAGE}.{ref}.server")
    commands += [f"add_list {PACKAGE}.{ref}.server={quote(entry)}" for entry in wanted]
    return commands


Runner = Callable[[Sequence[str], str | None], None]


def _run(argv: Sequence[str], stdin: str | None) -> None:
    subprocess.run(list(argv), input=stdin, text=True, check=True, capture_output=True)


def apply_dhcp_changes(commands: list[str], run: Runner = _run) -> bool:
    """Apply the commands (``dhcp_changes`` + ``dns_changes``) with ``uci batch``, commit,
    and reload dnsmasq once; False if no-op."""
    if not commands:
        return False
    run(["uci", "batch"], "\n".join(commands) + "\n")
    run(["uci", "commit", PACKAGE], None)
    run(["/etc/init.d/dnsmasq", "reload"], None)
    return True
