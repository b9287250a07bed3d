"""Render ``outbound.ntp_servers`` into OpenWrt's ``/etc/config/system`` (``system.ntp``).

The portal shows data at the wrong time when the clock is wrong, so the NTP client must be
on and ask the configured servers. Like ``uci_dhcp``, the result is a *diff* as ``uci batch``
lines: an unchanged list yields nothing, so sysntpd is restarted (and the flash written) only
when something really changed. Other options of the section (``enable_server``,
``interface``) belong to the site and are never touched.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence

from energyhubd.openwrt.uci import Package, quote

PACKAGE = "system"
SECTION = "ntp"  # OpenWrt's default: config timeserver 'ntp'
SECTION_TYPE = "timeserver"


def ntp_changes(current: Package, servers: Sequence[str]) -> list[str]:
    """``uci batch`` lines that make the NTP client run and ask exactly ``servers``."""
    commands: list[str] = []
    section = current.named(SECTION)
    if section is None:
        anonymous = current.of_type(SECTION_TYPE)
        if anonymous:
            section = anonymous[0]
            ref = section.name or f"@{SECTION_TYPE}[0]"
        else:
            ref = SECTION
            commands.append(f"set {PACKAGE}.{SECTION}={quote(SECTION_TYPE)}")
    else:
        ref = SECTION
    options = section.options if section is not None else {}
    if options.get("enabled") != "1":
        commands.append(f"set {PACKAGE}.{ref}.enabled='1'")
    have = options.get("server")
    have_list = list(have) if isinstance(have, list) else (have.split() if have else [])
    wanted = list(dict.fromkeys(servers))
    if have_list != wanted:
        if have is not None:
            commands.append(f"delete {PACKAGE}.{ref}.server")
        commands += [f"add_list {PACKAGE}.{ref}.server={quote(s)}" for s in wanted]
    return commands


Runner = Callable[[Sequence[str], str | None], None]


def _run(argv: Sequence[str], stdin: str | None) -> None:
    subprocess.run(list(argv), input=stdin, text=True, check=True, capture_output=True)


def apply_ntp_changes(commands: list[str], run: Runner = _run) -> bool:
    """Apply with ``uci batch``, commit ``system`` and restart sysntpd; False if no-op.

    sysntpd reads its servers only at start, so a restart (not a reload) is needed.
    """
    if not commands:
        return False
    run(["uci", "batch"], "\n".join(commands) + "\n")
    run(["uci", "commit", PACKAGE], None)
    run(["/etc/init.d/sysntpd", "restart"], None)
    return True
