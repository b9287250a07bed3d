"""The validated configuration model.

Everything downstream (policy compilation, DHCP plan, status) reads these frozen dataclasses
and never the raw document, so a value that reaches the kernel has always been checked.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from energyhubd.config.sections.inventory import OPENWRT_LEASE_FILE, InventorySettings
from energyhubd.config.sections.outbound import OutboundSettings
from energyhubd.config.sections.portal import PortalSettings

DEFAULT_LAN_DEVICE = "br-lan"
DEFAULT_LAN_ADDRESS = "192.168.254.1/24"
DEFAULT_POOL_START = "192.168.254.200"
DEFAULT_POOL_END = "192.168.254.244"
DEFAULT_LEASE_SECONDS = 24 * 3600
DEFAULT_DISPLAY_IP = "192.168.254.200"
DEFAULT_WAN_DEVICE = "wan"
DEFAULT_DNS_FALLBACK = ("8.8.8.8",)
DEFAULT_DNS_FALLBACK_ADDRS = tuple(ipaddress.IPv4Address(a) for a in DEFAULT_DNS_FALLBACK)
DEFAULT_LAN_IFACE = ipaddress.IPv4Interface(DEFAULT_LAN_ADDRESS)
DEFAULT_SOCKET = "/var/run/energyhubd.sock"


def platform_lease_file(platform: str, state_dir: str) -> str:
    """The lease file of the platform's DHCP server: OpenWrt's dnsmasq, or on plain Linux the
    dnsmasq energyhubd runs itself (``kernel.dnsmasq.own_lease_file``, the same path)."""
    if platform == "linux":
        return str(PurePosixPath(state_dir) / "dnsmasq" / "dhcp.leases")
    return OPENWRT_LEASE_FILE


@dataclass(frozen=True)
class Reservation:
    """A static lease: ``mac`` None means "match the DHCP host name equal to ``name``"."""

    name: str
    ip: ipaddress.IPv4Address
    mac: str | None = None


@dataclass(frozen=True)
class Forward:
    """An inbound port forward, locked to ``allow_from`` unless ``allow_any_source``."""

    name: str
    proto: str
    port: int
    target: str
    target_port: int
    allow_from: tuple[ipaddress.IPv4Network, ...]
    allow_any_source: bool = False


@dataclass(frozen=True)
class Dhcp:
    start: ipaddress.IPv4Address
    end: ipaddress.IPv4Address
    lease_seconds: int
    reservations: tuple[Reservation, ...]

    @property
    def pool_size(self) -> int:
        return int(self.end) - int(self.start) + 1

    def reservation(self, name: str) -> Reservation | None:
        return next((r for r in self.reservations if r.name == name), None)


@dataclass(frozen=True)
class Lan:
    device: str
    address: ipaddress.IPv4Interface
    admin_access: bool
    dhcp: Dhcp


@dataclass(frozen=True)
class Wan:
    device: str
    proto: str
    address: ipaddress.IPv4Interface | None = None
    gateway: ipaddress.IPv4Address | None = None
    dns: tuple[ipaddress.IPv4Address, ...] = ()


@dataclass(frozen=True)
class Config:
    """One validated configuration; ``document`` is its normalised JSON form.

    Every section is typed and complete: defaults are applied by the parser, so no consumer
    checks for a missing section.
    """

    schema: int
    version: int
    device_id: str
    platform: str
    state_dir: str
    wan: Wan
    lan: Lan
    forwards: tuple[Forward, ...]
    egress_mode: str
    dns_fallback: tuple[ipaddress.IPv4Address, ...]
    control_socket: str
    # ubusd socket to serve the ``energyhub`` object on; None: OpenWrt's default, on OpenWrt only
    ubus_socket: str | None = None
    inventory: InventorySettings = field(default_factory=InventorySettings)
    portal: PortalSettings = field(default_factory=PortalSettings)
    outbound: OutboundSettings = field(default_factory=OutboundSettings)
    document: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
