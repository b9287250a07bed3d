"""What the outbound flows read from the router before they go out: the WAN's DNS servers
and the portal's client certificate; plus the time format their status uses.

Plain functions on small local files, safe on any thread (the diagnostics and the allowlist
workers call them as well as the loop).

Where the DNS servers come from (``wan_dns_servers``): static ``wan.dns``; else the resolv
file the daemon was given (``--resolv-file``, written by the WAN DHCP client); else on
OpenWrt netifd's ``/tmp/resolv.conf.d/resolv.conf.auto``; else ``/etc/resolv.conf``.
Loopback entries (the router's own dnsmasq) are skipped: they are not the WAN's servers.
"""

from __future__ import annotations

import ipaddress
import os
import time

from energyhubd.config.model import Config
from energyhubd.outbound import diagnose

OPENWRT_RESOLV = ("/tmp/resolv.conf.d/resolv.conf.auto", "/tmp/resolv.conf.auto")
SYSTEM_RESOLV = "/etc/resolv.conf"


def iso(ts: float | None) -> str | None:
    return None if ts is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def read_nameservers(path: str) -> list[str] | None:
    """IPv4 ``nameserver`` entries of a resolv file; None when the file cannot be read."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            lines = handle.read(65536).splitlines()
    except OSError:
        return None
    servers: list[str] = []
    for line in lines:
        parts = line.split()
        if len(parts) < 2 or parts[0] != "nameserver":
            continue
        try:
            address = ipaddress.IPv4Address(parts[1])
        except ValueError:
            continue  # IPv6 servers: the diagnostics and the allowlist are IPv4
        if address.is_loopback or address.is_unspecified:
            continue
        if str(address) not in servers:
            servers.append(str(address))
    return servers


def wan_dns_servers(config: Config, resolv_file: str | None) -> tuple[list[str], str]:
    """(the WAN's DNS servers, where they were read); see the module docstring."""
    if config.wan.dns:
        return [str(a) for a in config.wan.dns], "wan.dns"
    if resolv_file:
        candidates: tuple[str, ...] = (resolv_file,)
    elif config.platform == "openwrt":
        candidates = OPENWRT_RESOLV
    else:
        candidates = (SYSTEM_RESOLV,)
    for path in candidates:
        servers = read_nameservers(path)
        if servers is not None:
            return servers, path
    return [], f"{candidates[0]} (unreadable)"


def client_cert(config: Config) -> tuple[str, str] | None:
    """The portal identity, when configured and present: a broker that asks for a client
    certificate aborts a TLS 1.2 handshake without one."""
    portal = config.portal
    if not portal.enabled:
        return None
    cert, key = portal.cert_file, portal.key_file
    if cert and key and os.path.exists(cert) and os.path.exists(key):
        return str(cert), str(key)
    return None


def broker_trust(config: Config) -> diagnose.Trust | None:
    """The broker is checked against what the portal link trusts (``portal.ca_file``), so a
    private portal CA is not taken for interception; None without a portal link."""
    portal = config.portal
    if not portal.enabled or not portal.ca_file:
        return None
    return diagnose.Trust(str(portal.ca_file), "portal.ca_file")
