"""The one configuration checker: one vocabulary of checks, one error shape, every error kept.

Every section of the document (top level, ``wan``, ``lan``, ``forwards``, ``portal``,
``outbound``, ``inventory``…) is read through a :class:`Checker`. A section is described as a
table of :class:`Option` specs (the way fw4's ``parse_options(s, spec)`` reads a UCI section):
each option names its check and its default, and :meth:`Checker.options` applies the table,
refuses unknown keys and fills in every default, so the typed section dataclass never sees a
missing value. Checks that relate two options (a gateway inside the WAN network, a pool that
does not hold the router) run after the table, on the typed values.

The checks never raise: each problem becomes a :class:`FieldError` with its field path and the
reason in the same words wherever it happens (``must be an integer, not a string``, ``70000 is
out of range 1..65535``, ``unknown key``, ``required``), and checking goes on so that one round
trip shows the user everything that is wrong.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from energyhubd.config.errors import FieldError, join_path

MAC_RE = re.compile(r"^[0-9a-f]{2}([:-][0-9a-f]{2}){5}$", re.IGNORECASE)
DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?)([smhdw]?)$")
DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_HOST_LABEL_RE = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_MAX_SHOWN = 60  # a user value quoted in an error is cut to this many characters


def kind(value: Any) -> str:
    """How a JSON value is named in an error: ``an object``, ``a list``, ``null``…"""
    return {
        dict: "an object",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        type(None): "null",
    }.get(type(value), type(value).__name__)


def show(value: Any) -> str:
    """Quote a user value for an error message, short and without control characters."""
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def key_text(key: object) -> str:
    """An unknown key as it may appear in a field path: control characters escaped, so a
    hostile key cannot forge a log line or an error line."""
    text = str(key)
    if text.isprintable() and "\\" not in text:
        return text
    out = []
    for ch in text:
        if ch == "\\":
            out.append("\\\\")
        elif ch.isprintable():
            out.append(ch)
        elif ord(ch) < 0x100:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(f"\\u{ord(ch):04x}" if ord(ch) < 0x10000 else f"\\U{ord(ch):08x}")
    return "".join(out)


def is_host(text: str) -> bool:
    """A DNS name or an IPv4 address literal."""
    try:
        ipaddress.IPv4Address(text)
        return True
    except ValueError:
        pass
    if not text or len(text) > 253:
        return False
    labels = text.rstrip(".").split(".")
    return all(_HOST_LABEL_RE.match(label) for label in labels) and not labels[-1].isdigit()


def _num(value: float) -> str:
    """A number as people write it: ``120``, ``0.5``, ``86400`` (not ``8.64e+04``)."""
    if math.isfinite(value) and value == int(value) and abs(value) < 2**53:
        return str(int(value))
    return f"{value:g}"


def _range(value: float, lo: float, hi: float) -> str:
    return f"{_num(value)} is out of range {_num(lo)}..{_num(hi)}"


# A check reads one present, non-null value; it returns the typed value, or calls
# ``checker.fail`` (and returns anything: the caller keeps the default then).
Check = Callable[["Checker", Any, str], Any]


@dataclass(frozen=True)
class Option:
    """One row of a section's spec table.

    ``default`` is used when the key is absent or null; with ``nullable`` a JSON null is a
    value of its own (for example "no host-name pattern") and is kept as None. ``required``
    options have no default: their absence is an error.
    """

    check: Check
    default: Any = None
    nullable: bool = False
    required: bool = False


class Checker:
    """Collects FieldErrors while reading typed values out of plain JSON data."""

    def __init__(self) -> None:
        self.errors: list[FieldError] = []

    def fail(self, path: str, reason: str) -> None:
        self.errors.append(FieldError(path, reason))

    def mark(self) -> int:
        """A point to ask :meth:`failed_since` about."""
        return len(self.errors)

    def failed_since(self, mark: int) -> bool:
        return len(self.errors) > mark

    # ---- structure --------------------------------------------------------------------

    def obj(self, value: Any, path: str, keys: Mapping[str, Any] | set[str]) -> dict[str, Any]:
        """An object whose keys must all be in ``keys``; null is the empty object."""
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.fail(path, f"must be an object, not {kind(value)}")
            return {}
        for key in value:
            if key not in keys:
                self.fail(join_path(path, key_text(key)), "unknown key")
        return {k: v for k, v in value.items() if k in keys}

    def lst(self, value: Any, path: str, max_items: int | None = None) -> list[Any]:
        """A list (null is the empty list); longer than ``max_items`` is refused whole."""
        if value is None:
            return []
        if not isinstance(value, list):
            self.fail(path, f"must be a list, not {kind(value)}")
            return []
        if max_items is not None and len(value) > max_items:
            self.fail(path, f"{len(value)} entries; at most {max_items}")
            return []
        return value

    def options(
        self,
        value: Any,
        path: str,
        spec: Mapping[str, Option],
        more_keys: tuple[str, ...] = (),
    ) -> dict[str, Any]:
        """Read a whole section by its spec table: every key of ``spec`` is in the result,
        checked or defaulted; unknown keys and bad values are errors. ``more_keys`` are
        allowed but read by the caller (sub-sections that depend on values of this one)."""
        data = self.obj(value, path, {*spec, *more_keys})
        if value is not None and not isinstance(value, dict):
            return {key: option.default for key, option in spec.items()}  # reported once
        out: dict[str, Any] = {}
        for key, option in spec.items():
            raw = data.get(key)
            at = join_path(path, key)
            if raw is None and not (option.nullable and key in data):
                if option.required:
                    self.fail(at, "required")
                out[key] = option.default
                continue
            if raw is None:
                out[key] = None
                continue
            mark = self.mark()
            checked = option.check(self, raw, at)
            out[key] = option.default if self.failed_since(mark) else checked
        return out

    # ---- scalars: each returns the typed value, or fails and returns None ------------------

    def integer(self, value: Any, path: str, lo: int, hi: int) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(path, f"must be an integer, not {kind(value)}")
            return None
        if not lo <= value <= hi:
            self.fail(path, f"{show(value)} is out of range {lo}..{hi}")
            return None
        return value

    def number(self, value: Any, path: str, lo: float, hi: float) -> float | None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(path, f"must be a number, not {kind(value)}")
            return None
        if isinstance(value, int) and not -(2**53) <= value <= 2**53:
            self.fail(path, f"{show(value)} is out of range {_num(lo)}..{_num(hi)}")
            return None
        if not math.isfinite(value):
            self.fail(path, "must be a finite number")
            return None
        if not lo <= value <= hi:
            self.fail(path, _range(value, lo, hi))
            return None
        return float(value)

    def boolean(self, value: Any, path: str) -> bool | None:
        if not isinstance(value, bool):
            self.fail(path, f"must be true or false, not {kind(value)}")
            return None
        return value

    def string(
        self, value: Any, path: str, pattern: re.Pattern[str] | None = None, what: str = ""
    ) -> str | None:
        if not isinstance(value, str):
            self.fail(path, f"must be a string, not {kind(value)}")
            return None
        if pattern is not None and not pattern.match(value):
            self.fail(path, f"{show(value)} is not a valid {what or 'value'}")
            return None
        return value

    def choice(self, value: Any, path: str, choices: tuple[str, ...]) -> str | None:
        if isinstance(value, str) and value in choices:
            return value
        self.fail(path, f"{show(value)} is not one of {', '.join(choices)}")
        return None

    def abspath(self, value: Any, path: str) -> str | None:
        if not isinstance(value, str):
            self.fail(path, f"must be an absolute path, not {kind(value)}")
            return None
        if not value.startswith("/") or "\0" in value or len(value) > 4096:
            self.fail(path, f"{show(value)} must be an absolute path")
            return None
        if any(part == ".." for part in value.split("/")):
            self.fail(path, f"{show(value)} must not contain '..'")
            return None
        return value

    def host(self, value: Any, path: str) -> str | None:
        if not isinstance(value, str):
            self.fail(path, f"must be a host name or an IPv4 address, not {kind(value)}")
            return None
        if not is_host(value):
            self.fail(path, f"{show(value)} is not a host name or an IPv4 address")
            return None
        return value

    def ipv4(self, value: Any, path: str) -> ipaddress.IPv4Address | None:
        if not isinstance(value, str):
            self.fail(path, f"must be an IPv4 address string, not {kind(value)}")
            return None
        try:
            return ipaddress.IPv4Address(value)
        except ValueError:
            self.fail(path, f"{show(value)} is not an IPv4 address")
            return None

    def interface(self, value: Any, path: str) -> ipaddress.IPv4Interface | None:
        """An address with its prefix that leaves room for hosts, like ``192.0.2.1/24``."""
        if not isinstance(value, str) or "/" not in value:
            self.fail(path, f"{show(value)} must be an IPv4 address with prefix, like 192.0.2.1/24")
            return None
        try:
            iface = ipaddress.IPv4Interface(value)
        except ValueError:
            self.fail(path, f"{show(value)} is not an IPv4 address with prefix")
            return None
        if iface.network.prefixlen > 30:
            self.fail(path, f"prefix /{iface.network.prefixlen} leaves no room for hosts")
            return None
        if iface.ip in (iface.network.network_address, iface.network.broadcast_address):
            self.fail(path, f"{iface.ip} is the network or broadcast address of {iface.network}")
            return None
        return iface

    def network(self, value: Any, path: str) -> ipaddress.IPv4Network | None:
        """An address or a prefix without host bits (``198.51.100.0/24``)."""
        if not isinstance(value, str):
            self.fail(path, f"must be an IPv4 address or prefix string, not {kind(value)}")
            return None
        try:
            iface = ipaddress.IPv4Interface(value)
        except ValueError:
            self.fail(path, f"{show(value)} is not an IPv4 address or prefix")
            return None
        if iface.ip != iface.network.network_address:
            self.fail(path, f"{show(value)} has host bits set (did you mean {iface.network}?)")
            return None
        return iface.network

    def mac(self, value: Any, path: str) -> str | None:
        """A unicast MAC, normalised to lower case with colons."""
        if not isinstance(value, str) or not MAC_RE.match(value):
            self.fail(path, f"{show(value)} is not a MAC address like 02:00:5e:00:00:01")
            return None
        mac = value.lower().replace("-", ":")
        if int(mac[:2], 16) & 1:
            self.fail(path, f"{mac} is a multicast address")
            return None
        return mac

    def seconds(self, value: Any, path: str, lo: float, hi: float) -> float | None:
        """A duration: a number of seconds or a string like ``90m``, ``24h``, ``1d``."""
        number: float | None = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            # a huge JSON integer is compared as infinity, never turned into a float
            number = float(value) if abs(value) < 2**53 else (math.inf if value > 0 else -math.inf)
        elif isinstance(value, str) and (m := DURATION_RE.match(value.strip())):
            number = float(m.group(1)) * DURATION_UNITS[m.group(2)]
        if number is None or math.isnan(number):
            self.fail(path, f"{show(value)} is not a duration like 3600, 90m, 24h or 1d")
            return None
        shown = _num(number) if math.isfinite(number) else show(value)
        if number < lo:
            self.fail(path, f"{shown} s is shorter than the minimum {_num(lo)} s")
            return None
        if number > hi:
            self.fail(path, f"{shown} s is longer than the maximum {_num(hi)} s")
            return None
        return number

    # ---- lists ------------------------------------------------------------------------

    def unique(
        self,
        value: Any,
        path: str,
        item: Check,
        min_items: int = 0,
        max_items: int | None = None,
    ) -> tuple[Any, ...] | None:
        """A list whose items each pass ``item`` and are all different."""
        if not isinstance(value, list):
            self.fail(path, f"must be a list, not {kind(value)}")
            return None
        if len(value) < min_items:
            self.fail(path, f"{len(value)} entries; at least {min_items}")
            return None
        if max_items is not None and len(value) > max_items:
            self.fail(path, f"{len(value)} entries; at most {max_items}")
            return None
        mark = self.mark()
        seen: dict[Any, int] = {}
        for i, raw in enumerate(value):
            at = join_path(path, i)
            before = self.mark()
            got = item(self, raw, at)
            if self.failed_since(before):
                continue
            if got in seen:
                self.fail(at, f"duplicate of {path}[{seen[got]}] ({got})")
                continue
            seen[got] = i
        return None if self.failed_since(mark) else tuple(seen)


# Option-table shorthands: each returns a Check for one kind of value.


def integer(lo: int, hi: int) -> Check:
    return lambda c, v, p: c.integer(v, p, lo, hi)


def number(lo: float, hi: float) -> Check:
    return lambda c, v, p: c.number(v, p, lo, hi)


def boolean() -> Check:
    return lambda c, v, p: c.boolean(v, p)


def string(pattern: re.Pattern[str] | None = None, what: str = "") -> Check:
    return lambda c, v, p: c.string(v, p, pattern, what)


def choice(*choices: str) -> Check:
    return lambda c, v, p: c.choice(v, p, choices)


def abspath() -> Check:
    return lambda c, v, p: c.abspath(v, p)


def host() -> Check:
    return lambda c, v, p: c.host(v, p)


def ipv4_text() -> Check:
    """An IPv4 address kept as its normalised text."""

    def check(c: Checker, v: Any, p: str) -> str | None:
        addr = c.ipv4(v, p)
        return None if addr is None else str(addr)

    return check


def seconds(lo: float, hi: float) -> Check:
    return lambda c, v, p: c.seconds(v, p, lo, hi)


def unique(item: Check, min_items: int = 0, max_items: int | None = None) -> Check:
    return lambda c, v, p: c.unique(v, p, item, min_items, max_items)
