"""Bring OpenWrt's own services in line with the configuration: dnsmasq, sysntpd, netifd.

On OpenWrt the LAN's DHCP/DNS server, the NTP client and the WAN are the system's, configured
through UCI. One call computes the differences of ``/etc/config/dhcp`` (pool, lease time,
static leases, the ``dns.fallback`` upstream servers), ``/etc/config/system`` (the NTP servers
of ``outbound.ntp_servers``) and ``/etc/config/network`` (the ``wan`` interface: DHCP or
static address, gateway, DNS) and applies each package only when it changed, so an unchanged
configuration never commits, never writes flash and never restarts a service.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from energyhubd.config.model import Config
from energyhubd.openwrt import uci_dhcp, uci_network, uci_system
from energyhubd.openwrt.uci import Package, parse
from energyhubd.policy.dhcp import build_plan

DHCP_FILE = "/etc/config/dhcp"
SYSTEM_FILE = "/etc/config/system"
NETWORK_FILE = "/etc/config/network"

log = logging.getLogger("energyhubd")


@dataclass(frozen=True)
class SyncResult:
    """The ``uci batch`` lines each package needed (empty: it was already right)."""

    dhcp: tuple[str, ...]
    system: tuple[str, ...]
    network: tuple[str, ...] = ()


def _read(path: str) -> Package:
    """A missing file is an empty package (``uci`` creates sections on demand)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return Package(source=path)
    return parse(text, path)


def plan_changes(
    config: Config, dhcp: Package, system: Package, network: Package | None = None
) -> SyncResult:
    """Pure: what ``sync_platform`` would apply to these packages (no network: WAN left)."""
    servers = config.outbound.ntp_servers
    dhcp_commands = uci_dhcp.dhcp_changes(dhcp, build_plan(config))
    dhcp_commands += uci_dhcp.dns_changes(dhcp, [str(a) for a in config.dns_fallback])
    wan = uci_network.wan_changes(network, config.wan) if network is not None else []
    return SyncResult(
        tuple(dhcp_commands), tuple(uci_system.ntp_changes(system, servers)), tuple(wan)
    )


def sync_platform(
    config: Config,
    dhcp_file: str = DHCP_FILE,
    system_file: str = SYSTEM_FILE,
    run: uci_dhcp.Runner = uci_dhcp._run,
    network_file: str | None = NETWORK_FILE,
) -> SyncResult:
    """Apply the differences (``uci batch``, commit, reload dnsmasq / restart sysntpd /
    reload the network). ``network_file=None`` leaves the WAN alone.

    Raises ``UciError`` for an unreadable file and ``subprocess.CalledProcessError`` or
    ``OSError`` when ``uci`` fails; the caller logs it and keeps running.
    """
    network = _read(network_file) if network_file is not None else None
    result = plan_changes(config, _read(dhcp_file), _read(system_file), network)
    uci_dhcp.apply_dhcp_changes(list(result.dhcp), run)
    uci_system.apply_ntp_changes(list(result.system), run)
    if uci_network.apply_wan_changes(list(result.network), run):
        log.info("uci network: %d change(s) committed, netifd reloads the WAN", len(result.network))
    return result
