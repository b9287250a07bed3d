"""The ``inventory`` section: how the daemon recognises its devices and when it warns.

Consumed by ``energyhubd.inventory``; see docs/config.md, section ``inventory``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from energyhubd.config import check as ck
from energyhubd.config.check import Checker, Option, show
from energyhubd.config.errors import FieldError

DEFAULT_EXPECTED_UNITS = 3
MAX_EXPECTED_UNITS = 254
DEFAULT_HOSTNAME_PATTERN = "energyhub*"
DEFAULT_POOL_WARNING_PERCENT = 80
OPENWRT_LEASE_FILE = "/tmp/dhcp.leases"  # where OpenWrt's dnsmasq writes its leases
MAX_LIST_ITEMS = 32

_PREFIX_RE = re.compile(r"^[0-9A-Fa-f]{2}([:-][0-9A-Fa-f]{2}){0,4}$")
_GLOB_CHARS_RE = re.compile(r"^[A-Za-z0-9*?\[\]!._-]{1,63}$")


@dataclass(frozen=True)
class InventorySettings:
    """How units are recognised and when to warn.

    ``unit_hostname_pattern`` None: host names are not used to recognise units.
    ``lease_file`` is always set: a JSON null (or no key) is replaced at parse time by the
    lease file of the platform's DHCP server (``check_inventory``'s ``default_lease_file``).
    """

    expected_units: int = DEFAULT_EXPECTED_UNITS
    unit_mac_prefixes: tuple[str, ...] = ()
    unit_hostname_pattern: str | None = DEFAULT_HOSTNAME_PATTERN
    unit_vendor_classes: tuple[str, ...] = ()
    pool_warning_percent: int = DEFAULT_POOL_WARNING_PERCENT
    lease_file: str = OPENWRT_LEASE_FILE

    def as_dict(self) -> dict[str, object]:
        return {
            "expected_units": self.expected_units,
            "unit_mac_prefixes": list(self.unit_mac_prefixes),
            "unit_hostname_pattern": self.unit_hostname_pattern,
            "unit_vendor_classes": list(self.unit_vendor_classes),
            "pool_warning_percent": self.pool_warning_percent,
            "lease_file": self.lease_file,
        }


def normalise_mac_prefix(text: str) -> str | None:
    """``02-00-5E-10`` -> ``02:00:5e:10``; None unless 1 to 5 two-digit hex octets."""
    if not _PREFIX_RE.match(text):
        return None
    return text.lower().replace("-", ":")


def glob_problem(pattern: str) -> str | None:
    """Why ``pattern`` is not an acceptable host-name glob, or None when it is."""
    if not _GLOB_CHARS_RE.match(pattern):
        return (
            "must be 1-63 characters of letters, digits, '-', '_', '.' "
            "and the glob characters * ? [ ] !"
        )
    depth = 0
    for ch in pattern:
        if ch == "[":
            if depth:
                return "nested '[' in character class"
            depth = 1
        elif ch == "]":
            if not depth:
                return "']' without '['"
            depth = 0
    if depth:
        return "'[' without ']'"
    if "[]" in pattern or "[!]" in pattern:
        return "empty character class"
    return None


def _prefix(c: Checker, value: Any, path: str) -> str | None:
    text = c.string(value, path)
    if text is None:
        return None
    prefix = normalise_mac_prefix(text)
    if prefix is None:
        c.fail(path, f"{show(text)} is not a MAC prefix (1 to 5 hex octets like 02:00:5e:10)")
    return prefix


def _pattern(c: Checker, value: Any, path: str) -> str | None:
    text = c.string(value, path)
    if text is None:
        return None
    problem = glob_problem(text)
    if problem:
        c.fail(path, problem)
        return None
    return text.lower()


def _vendor_class(c: Checker, value: Any, path: str) -> str | None:
    text = c.string(value, path)
    if text is not None and not (1 <= len(text) <= 255 and text.isprintable() and text.isascii()):
        c.fail(path, "must be 1-255 printable ASCII characters")
        return None
    return text


_D = InventorySettings()
OPTIONS: dict[str, Option] = {
    "expected_units": Option(ck.integer(0, MAX_EXPECTED_UNITS), _D.expected_units),
    "unit_mac_prefixes": Option(ck.unique(_prefix, 0, MAX_LIST_ITEMS), _D.unit_mac_prefixes),
    "unit_hostname_pattern": Option(_pattern, _D.unit_hostname_pattern, nullable=True),
    "unit_vendor_classes": Option(
        ck.unique(_vendor_class, 0, MAX_LIST_ITEMS), _D.unit_vendor_classes
    ),
    "pool_warning_percent": Option(ck.integer(1, 100), _D.pool_warning_percent),
    # null and absent both mean "the platform's lease file", filled in by check_inventory.
    "lease_file": Option(ck.abspath(), None),
}


def check_inventory(
    c: Checker,
    obj: Any,
    path: str = "inventory",
    default_lease_file: str = OPENWRT_LEASE_FILE,
) -> InventorySettings:
    """Read the ``inventory`` object into ``c``; the defaults when anything is wrong.

    ``default_lease_file`` is the lease file of the platform's DHCP server, which the caller
    knows (``config.model.platform_lease_file``).
    """
    mark = c.mark()
    values = c.options(obj, path, OPTIONS)
    values["lease_file"] = values["lease_file"] or default_lease_file
    if c.failed_since(mark):
        return InventorySettings(lease_file=default_lease_file)
    return InventorySettings(**values)


def parse_inventory_section(
    obj: object, path: str = "inventory", default_lease_file: str = OPENWRT_LEASE_FILE
) -> tuple[InventorySettings, list[FieldError]]:
    """Validate the ``inventory`` object alone: the settings (defaults on error), every error."""
    c = Checker()
    settings = check_inventory(c, obj, path, default_lease_file)
    return settings, c.errors
