"""Decide what a device on the LAN is: the display, an EnergyHub unit, or unknown.

Plain parameters on purpose: reservations arrive as ``(name, mac | None, ip)`` tuples so this
module does not depend on the configuration model's classes.

Rules, in order:

1. **Reservations.** A reservation with a MAC matches only that MAC (a stranger who takes the
   display's address is *not* the display). A reservation without a MAC matches the DHCP host
   name equal to its name (case-insensitive, as dnsmasq does) or its IP address; pass the
   *leased* address as ``ip`` (the registry does): a self-configured address proves nothing.
   The reservation named ``display`` makes the role ``display``; any other reservation makes
   the role ``unit`` (reservations are how a site names its units, e.g. ``unit1``).
2. **Unit recognition.** MAC starts with one of ``unit_mac_prefixes``, or the host name
   matches ``unit_hostname_pattern`` (case-insensitive glob), or the DHCP vendor class (when
   known, e.g. from the hotplug script) is one of ``unit_vendor_classes``.
3. Otherwise ``unknown``: something that does not belong on an isolated network.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase

from energyhubd.config.sections.inventory import InventorySettings

ROLE_DISPLAY = "display"
ROLE_UNIT = "unit"
ROLE_UNKNOWN = "unknown"
ROLES = (ROLE_DISPLAY, ROLE_UNIT, ROLE_UNKNOWN)
DISPLAY_RESERVATION = "display"

Reservation = tuple[str, str | None, str]  # (name, mac or None, ip)


@dataclass(frozen=True)
class Classification:
    role: str
    reservation: str | None  # name of the matching reservation
    reason: str  # short, for status output: "reservation mac", "mac prefix 02:00:5e", ...


def match_reservation(
    mac: str, ip: str | None, hostname: str | None, reservations: Iterable[Reservation]
) -> tuple[str, str] | None:
    """The matching reservation's (name, how) or None. MAC matches win over name/IP matches."""
    mac = mac.lower()
    host = hostname.lower() if hostname else None
    weak: tuple[str, str] | None = None
    for name, res_mac, res_ip in reservations:
        if res_mac is not None:
            if res_mac.lower() == mac:
                return name, "reservation mac"
            continue
        if weak is None:
            if host is not None and host == name.lower():
                weak = (name, "reservation host name")
            elif ip is not None and ip == res_ip:
                weak = (name, "reservation address")
    return weak


def classify(
    mac: str,
    ip: str | None,
    hostname: str | None,
    reservations: Iterable[Reservation],
    settings: InventorySettings,
    vendor_class: str | None = None,
) -> Classification:
    """Role of one device; see the module doc for the rules."""
    matched = match_reservation(mac, ip, hostname, reservations)
    if matched is not None:
        name, how = matched
        role = ROLE_DISPLAY if name == DISPLAY_RESERVATION else ROLE_UNIT
        return Classification(role, name, how)
    mac = mac.lower()
    for prefix in settings.unit_mac_prefixes:
        if mac.startswith(prefix):
            return Classification(ROLE_UNIT, None, f"mac prefix {prefix}")
    pattern = settings.unit_hostname_pattern
    if pattern and hostname and fnmatchcase(hostname.lower(), pattern.lower()):
        return Classification(ROLE_UNIT, None, "host name pattern")
    if vendor_class is not None and vendor_class in settings.unit_vendor_classes:
        return Classification(ROLE_UNIT, None, "vendor class")
    return Classification(ROLE_UNKNOWN, None, "no rule matched")
