"""The ``inventory`` section of the configuration: how the daemon recognises its devices.

Parsed by ``parse_inventory_section``, which the lead's config loader calls for the
``inventory`` key. Errors are collected, never raised, and name the full field path.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from ..config.errors import FieldError, join_path
from .sanitize import safe_text

DEFAULT_EXPECTED_UNITS = 3
MAX_EXPECTED_UNITS = 254
DEFAULT_HOSTNAME_PATTERN = "energyhub*"
DEFAULT_POOL_WARNING_PERCENT = 80
MAX_LIST_ITEMS = 32

_PREFIX_RE = re.compile(r"^[0-9A-Fa-f]{2}([:-][0-9A-Fa-f]{2}){0,4}$")
_GLOB_CHARS_RE = re.compile(r"^[A-Za-z0-9*?\[\]!._-]{1,63}$")


@dataclass(frozen=True)
class InventorySettings:
    """How units are recognised and when to warn. See docs/config.md, section ``inventory``."""

    expected_units: int = DEFAULT_EXPECTED_UNITS
    unit_mac_prefixes: tuple[str, ...] = ()
    unit_hostname_pattern: str | None = DEFAULT_HOSTNAME_PATTERN
    unit_vendor_classes: tuple[str, ...] = ()
    pool_warning_percent: int = DEFAULT_POOL_WARNING_PERCENT
    lease_file: str | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "expected_units": self.expected_units,
            "unit_mac_prefixes": list(self.unit_mac_prefixes),
            "unit_hostname_pattern": self.unit_hostname_pattern,
            "unit_vendor_classes": list(self.unit_vendor_classes),
            "pool_warning_percent": self.pool_warning_percent,
            "lease_file": self.lease_file,
        }


KNOWN_KEYS = frozenset(InventorySettings.__dataclass_fields__)


def _int(value: object, path: str, low: int, high: int, errors: list[FieldError]) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        errors.append(FieldError(path, f"must be an integer from {low} to {high}"))
        return None
    if not low <= value <= high:
        errors.append(FieldError(path, f"{value} is out of range {low}-{high}"))
        return None
    return value


def _str_list(value: object, path: str, errors: list[FieldError]) -> list[tuple[str, str]] | None:
    """A list of strings -> [(item_path, item)], with errors for non-lists / non-strings."""
    if not isinstance(value, list):
        errors.append(FieldError(path, "must be a list of strings"))
        return None
    if len(value) > MAX_LIST_ITEMS:
        errors.append(FieldError(path, f"at most {MAX_LIST_ITEMS} entries"))
        return None
    items: list[tuple[str, str]] = []
    for index, item in enumerate(value):
        item_path = join_path(path, index)
        if not isinstance(item, str):
            errors.append(FieldError(item_path, "must be a string"))
            continue
        items.append((item_path, item))
    return items


def normalise_mac_prefix(text: str) -> str | None:
    """``02-00-5E-10`` -> ``02:00:5e:10``; None unless 1 to 5 two-digit hex octets."""
    if not _PREFIX_RE.match(text):
        return None
    return text.lower().replace("-", ":")


def _prefixes(value: object, path: str, errors: list[FieldError]) -> tuple[str, ...] | None:
    items = _str_list(value, path, errors)
    if items is None:
        return None
    seen: set[str] = set()
    out: list[str] = []
    for item_path, item in items:
        prefix = normalise_mac_prefix(item)
        if prefix is None:
            errors.append(
                FieldError(
                    item_path,
                    f"{item!r} is not a MAC prefix (1 to 5 hex octets like 02:00:5e:10)",
                )
            )
            continue
        if prefix in seen:
            errors.append(FieldError(item_path, f"duplicate prefix {prefix}"))
            continue
        seen.add(prefix)
        out.append(prefix)
    return tuple(out)


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


def _pattern(value: object, path: str, errors: list[FieldError]) -> str | None:
    if not isinstance(value, str):
        errors.append(FieldError(path, "must be a string (a glob like energyhub*) or null"))
        return None
    problem = glob_problem(value)
    if problem:
        errors.append(FieldError(path, problem))
        return None
    return value.lower()


def _vendor_classes(value: object, path: str, errors: list[FieldError]) -> tuple[str, ...] | None:
    items = _str_list(value, path, errors)
    if items is None:
        return None
    out: list[str] = []
    for item_path, item in items:
        if not 1 <= len(item) <= 255 or not item.isprintable() or not item.isascii():
            errors.append(FieldError(item_path, "must be 1-255 printable ASCII characters"))
            continue
        if item in out:
            errors.append(FieldError(item_path, f"duplicate vendor class {item!r}"))
            continue
        out.append(item)
    return tuple(out)


def _lease_file(value: object, path: str, errors: list[FieldError]) -> str | None:
    if not isinstance(value, str):
        errors.append(FieldError(path, "must be an absolute path or null"))
        return None
    if not value.startswith("/") or "\0" in value or len(value) > 4096:
        errors.append(FieldError(path, "must be an absolute path"))
        return None
    if any(part == ".." for part in value.split("/")):
        errors.append(FieldError(path, "must not contain '..'"))
        return None
    return value


def parse_inventory_section(
    obj: object, path: str = "inventory"
) -> tuple[InventorySettings, list[FieldError]]:
    """Validate the ``inventory`` object; None means all defaults.

    Returns the settings (defaults where a key was bad) and every error found.
    """
    errors: list[FieldError] = []
    if obj is None:
        return InventorySettings(), errors
    if not isinstance(obj, Mapping):
        errors.append(FieldError(path, "must be an object"))
        return InventorySettings(), errors
    values: dict[str, object] = {}
    for key in obj:
        if not isinstance(key, str) or key not in KNOWN_KEYS:
            errors.append(FieldError(join_path(path, safe_text(str(key))), "unknown key"))
    if "expected_units" in obj:
        number = _int(
            obj["expected_units"], join_path(path, "expected_units"), 0, MAX_EXPECTED_UNITS, errors
        )
        if number is not None:
            values["expected_units"] = number
    if "unit_mac_prefixes" in obj:
        prefixes = _prefixes(obj["unit_mac_prefixes"], join_path(path, "unit_mac_prefixes"), errors)
        if prefixes is not None:
            values["unit_mac_prefixes"] = prefixes
    if "unit_hostname_pattern" in obj:
        raw = obj["unit_hostname_pattern"]
        if raw is None:
            values["unit_hostname_pattern"] = None
        else:
            pattern = _pattern(raw, join_path(path, "unit_hostname_pattern"), errors)
            if pattern is not None:
                values["unit_hostname_pattern"] = pattern
    if "unit_vendor_classes" in obj:
        classes = _vendor_classes(
            obj["unit_vendor_classes"], join_path(path, "unit_vendor_classes"), errors
        )
        if classes is not None:
            values["unit_vendor_classes"] = classes
    if "pool_warning_percent" in obj:
        percent = _int(
            obj["pool_warning_percent"], join_path(path, "pool_warning_percent"), 1, 100, errors
        )
        if percent is not None:
            values["pool_warning_percent"] = percent
    if "lease_file" in obj:
        raw = obj["lease_file"]
        if raw is None:
            values["lease_file"] = None
        else:
            lease_file = _lease_file(raw, join_path(path, "lease_file"), errors)
            if lease_file is not None:
                values["lease_file"] = lease_file
    return InventorySettings(**values), errors  # type: ignore[arg-type]
