"""Bring OpenWrt's own services in line with the configuration: dnsmasq and sysntpd.

On OpenWrt the LAN's DHCP/DNS server and the NTP client are the system's, configured through
UCI. One call computes the differences of ``/etc/config/dhcp`` (pool, lease time, static
leases, the ``dns.fallback`` upstream servers) and ``/etc/config/system`` (the NTP servers of
``outbound.ntp_servers``) and applies each package only when it changed, so an unchanged
configuration never commits, never writes flash and never restarts a service.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from energyhubd.config.model import Config
from energyhubd.openwrt import uci_dhcp, uci_system
from energyhubd.openwrt.uci import Package, parse

DHCP_FILE = "/etc/config/dhcp"
SYSTEM_FILE = "/etc/config/system"


@dataclass(frozen=True)
class SyncResult:
    """The ``uci batch`` lines each package needed (empty: it was already right)."""

    dhcp: tuple[str, ...]
    system: tuple[str, ...]


def _read(path: str) -> Package:
    """A missing file is an empty package (``uci`` creates sections on demand)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return Package(source=path)
    return parse(text, path)


def plan_changes(config: Config, dhcp: Package, system: Package) -> SyncResult:
    """Pure: what ``sync_platform`` would apply to these packages."""
    servers = config.outbound.ntp_servers
    dhcp_commands = uci_dhcp.dhcp_changes(dhcp, uci_dhcp.plan_from_lan(config.lan))
    dhcp_commands += uci_dhcp.dns_changes(dhcp, [str(a) for a in config.dns_fallback])
    return SyncResult(tuple(dhcp_commands), tuple(uci_system.ntp_changes(system, servers)))


def sync_platform(
    config: Config,
    dhcp_file: str = DHCP_FILE,
    system_file: str = SYSTEM_FILE,
    run: uci_dhcp.Runner = uci_dhcp._run,
) -> SyncResult:
    """Apply the differences (``uci batch``, commit, reload dnsmasq / restart sysntpd).

    Raises ``UciError`` for an unreadable file and ``subprocess.CalledProcessError`` or
    ``OSError`` when ``uci`` fails; the caller logs it and keeps running.
    """
    result = plan_changes(config, _read(dhcp_file), _read(system_file))
    uci_dhcp.apply_dhcp_changes(list(result.dhcp), run)
    uci_system.apply_ntp_changes(list(result.system), run)
    return result
