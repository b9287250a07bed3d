"""UCI package <-> JSON configuration document.

UCI is only a second spelling of the one JSON document (docs/config.md): this module converts
strings to typed values and back, and leaves every semantic check to the config loader so that
validation lives in one place. The mapping is a table: adding a section or an option is one
line in ``SECTIONS``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from energyhubd.config.atomic import write_if_changed
from energyhubd.config.errors import ConfigError, FieldError, join_path
from energyhubd.openwrt.uci import NAME_RE, Package, Section, UciError, located, render

STR, INT, NUM, BOOL, LIST, DURATION = "str", "int", "num", "bool", "list", "duration"
OPT_STR = "optional str"  # JSON null is spelled as an empty option: '' <-> None
INT_LIST = "int list"  # e.g. outbound.mqtt_ports: list lines, each an integer
SECONDS = "seconds"  # a number of seconds (int or float) or a duration string like '6h'

TRUE_WORDS = frozenset({"1", "true", "yes", "on", "enabled"})
FALSE_WORDS = frozenset({"0", "false", "no", "off", "disabled"})
INT_RE = re.compile(r"^-?[0-9]+$")

# A repeated section may carry this option in its parent to say "the list is empty" (UCI has
# no way to spell an empty list of sections, and an absent list means "use the default").
NONE_WORD = "none"


@dataclass(frozen=True)
class Opt:
    """One UCI option: its name, the dotted key inside the section's object, its kind."""

    uci: str
    key: str
    kind: str = STR

    @property
    def path(self) -> tuple[str, ...]:
        return tuple(self.key.split("."))


@dataclass(frozen=True)
class Spec:
    """One UCI section type and where its object lives in the document.

    ``doc`` is the dotted path of the object ("" for the top level). ``repeated`` sections
    form a list at ``doc``; their UCI section name fills ``name_key`` when the option is
    absent. ``empty_flag`` = (section type, option) whose value ``none`` means an empty list.
    """

    type: str
    doc: str
    options: tuple[Opt, ...]
    uci_name: str | None = None
    repeated: bool = False
    name_key: str | None = None
    empty_flag: tuple[str, str] | None = None

    @property
    def path(self) -> tuple[str, ...]:
        return tuple(self.doc.split(".")) if self.doc else ()


def _opts(*rows: tuple[str, str, str] | tuple[str, str]) -> tuple[Opt, ...]:
    return tuple(Opt(*row) for row in rows)


def _same(*rows: tuple[str, str]) -> tuple[Opt, ...]:
    """Options whose UCI name equals the document key."""
    return tuple(Opt(name, name, kind) for name, kind in rows)


SECTIONS: tuple[Spec, ...] = (
    Spec(
        "energyhub",
        "",
        _same(
            ("schema", INT),
            ("version", INT),
            ("device_id", STR),
            ("platform", STR),
            ("state_dir", STR),
        ),
        uci_name="main",
    ),
    Spec(
        "wan",
        "wan",
        _same(("device", STR), ("proto", STR), ("address", STR), ("gateway", STR), ("dns", LIST)),
        uci_name="wan",
    ),
    Spec(
        "lan",
        "lan",
        _opts(
            ("device", "device"),
            ("address", "address"),
            ("admin_access", "admin_access", BOOL),
            ("dhcp_start", "dhcp.start"),
            ("dhcp_end", "dhcp.end"),
            ("lease_time", "dhcp.lease_time", DURATION),
        ),
        uci_name="lan",
    ),
    Spec(
        "reservation",
        "lan.dhcp.reservations",
        _same(("name", STR), ("mac", STR), ("ip", STR)),
        repeated=True,
        name_key="name",
        empty_flag=("lan", "dhcp_reservations"),
    ),
    Spec(
        "forward",
        "forwards",
        _same(
            ("name", STR),
            ("proto", STR),
            ("port", INT),
            ("target", STR),
            ("target_port", INT),
            ("allow_from", LIST),
            ("allow_any_source", BOOL),
        ),
        repeated=True,
        name_key="name",
    ),
    Spec("egress", "egress", _same(("mode", STR)), uci_name="egress"),
    Spec("dns", "dns", _same(("fallback", LIST)), uci_name="dns"),
    Spec("control", "control", _same(("socket", STR)), uci_name="control"),
    Spec(
        "portal",
        "portal",
        _same(
            ("enabled", BOOL),
            ("host", STR),
            ("port", INT),
            ("tls", BOOL),
            ("allow_plain", BOOL),
            ("ca_file", STR),
            ("cert_file", STR),
            ("key_file", STR),
            ("server_name", STR),
            ("mqtt_version", STR),
            ("keepalive", INT),
            ("health_interval", NUM),
            ("confirm_window", NUM),
            ("backoff_initial", NUM),
            ("backoff_max", NUM),
            ("backoff_reset_after", NUM),
            ("will_delay", INT),
            ("fresh_confirm_delay", NUM),
            ("queue_size", INT),
            ("max_push_bytes", INT),
            ("max_push_depth", INT),
        ),
        uci_name="portal",
    ),
    Spec(
        "inventory",
        "inventory",
        _same(
            ("expected_units", INT),
            ("unit_mac_prefixes", LIST),
            ("unit_hostname_pattern", OPT_STR),
            ("unit_vendor_classes", LIST),
            ("pool_warning_percent", INT),
            ("lease_file", OPT_STR),
        ),
        uci_name="inventory",
    ),
    Spec(
        "outbound",
        "outbound",
        _same(
            ("broker_host", STR),
            ("mqtt_ports", INT_LIST),
            ("gateway_address", STR),
            ("gateway_port", INT),
            ("ntp_servers", LIST),
            ("update_host", STR),
            ("ca_file", OPT_STR),
            ("diagnose_interval", SECONDS),
            ("timeout", SECONDS),
            ("ip_ranges_file", STR),
        ),
        uci_name="outbound",
    ),
    # The tunnel is its own section ("uci set energyhub.tunnel.mode=on_demand") rather than
    # tunnel_* options of 'outbound': it is what a technician changes, the rest rarely is.
    Spec(
        "tunnel",
        "outbound.tunnel",
        _same(
            ("mode", STR),
            ("user", STR),
            ("key_file", STR),
            ("remote_port", INT),
            ("host_key", OPT_STR),
            ("expiry_hours", NUM),
        ),
        uci_name="tunnel",
    ),
)

SPEC_BY_TYPE = {spec.type: spec for spec in SECTIONS}


# ---------------------------------------------------------------- UCI strings -> JSON values


class _Bad(Exception):
    """A value cannot be converted; the message is the reason shown to the user."""


def _scalar(value: str | list[str]) -> str:
    if isinstance(value, list):
        raise _Bad("must be a single 'option', not a 'list'")
    return value


def _to_int(value: str) -> int:
    if not INT_RE.match(value.strip()):
        raise _Bad(f"{value!r} is not an integer")
    return int(value)


def _to_num(value: str) -> int | float:
    text = value.strip()
    if INT_RE.match(text):
        return int(text)
    try:
        number = float(text)
    except ValueError:
        raise _Bad(f"{value!r} is not a number") from None
    if not math.isfinite(number):
        raise _Bad(f"{value!r} is not a finite number")
    return number


def _to_bool(value: str) -> bool:
    word = value.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise _Bad(f"{value!r} is not a boolean (use 1/0, true/false, yes/no or on/off)")


def _to_duration(value: str) -> int | str:
    return int(value) if value.strip().isdigit() else value.strip()


def _to_seconds(value: str) -> int | float | str:
    """Digits stay numbers (``'5'`` -> 5, ``'0.5'`` -> 0.5); ``'6h'`` goes to the validator."""
    text = value.strip()
    try:
        return _to_num(text)
    except _Bad:
        return text


def _to_int_list(value: str | list[str]) -> list[int]:
    items = list(value) if isinstance(value, list) else value.split()
    return [_to_int(item) for item in items]


FROM_UCI: dict[str, Callable[[str | list[str]], Any]] = {
    STR: _scalar,
    INT: lambda v: _to_int(_scalar(v)),
    NUM: lambda v: _to_num(_scalar(v)),
    BOOL: lambda v: _to_bool(_scalar(v)),
    DURATION: lambda v: _to_duration(_scalar(v)),
    OPT_STR: lambda v: _scalar(v) or None,
    SECONDS: lambda v: _to_seconds(_scalar(v)),
    INT_LIST: _to_int_list,
    # An 'option' holding a list is space-separated, as OpenWrt's shell helpers read it.
    LIST: lambda v: list(v) if isinstance(v, list) else v.split(),
}


def _put(target: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        target = target.setdefault(key, {})
    target[path[-1]] = value


def _what(section: Section) -> str:
    return f"config {section.type}" + (f" '{section.name}'" if section.name else "")


def uci_to_document(package: Package, source: str = "") -> dict[str, Any]:
    """Convert a parsed ``energyhub`` package to a JSON document dict (not yet validated).

    Raises UciError naming file, line and option for unknown sections or options and for
    values that are not the right kind (e.g. ``port 'abc'``).
    """
    source = source or package.source
    errors: list[FieldError] = []
    doc: dict[str, Any] = {}
    seen_single: dict[str, Section] = {}
    lists: dict[str, list[tuple[Section, dict[str, Any]]]] = {}
    empty_flags: dict[str, tuple[int, str]] = {}
    flag_owner = {spec.empty_flag: spec for spec in SECTIONS if spec.empty_flag}

    for section in package.sections:
        spec = SPEC_BY_TYPE.get(section.type)
        if spec is None:
            known = ", ".join(SPEC_BY_TYPE)
            errors.append(
                located(
                    section.line,
                    _what(section),
                    f"unknown section type {section.type!r} (known: {known})",
                )
            )
            continue
        if not spec.repeated:
            first = seen_single.get(spec.type)
            if first is not None:
                errors.append(
                    located(
                        section.line,
                        _what(section),
                        f"only one {spec.type!r} section is allowed "
                        f"(the first is on line {first.line})",
                    )
                )
                continue
            seen_single[spec.type] = section
        obj: dict[str, Any] = {}
        by_uci = {opt.uci: opt for opt in spec.options}
        base = join_path(spec.doc, len(lists.get(spec.type, []))) if spec.repeated else spec.doc
        for key, raw in section.options.items():
            line = section.option_lines.get(key, section.line)
            owner = flag_owner.get((spec.type, key))
            if owner is not None:
                if raw != NONE_WORD:
                    errors.append(
                        located(
                            line,
                            f"option {key!r}",
                            f"only {NONE_WORD!r} is accepted here (it empties "
                            f"the list of {owner.type!r} sections)",
                        )
                    )
                else:
                    empty_flags[owner.type] = (line, key)
                continue
            opt = by_uci.get(key)
            if opt is None:
                known = ", ".join(by_uci)
                errors.append(
                    located(
                        line,
                        f"option {key!r}",
                        f"unknown option in {_what(section)} (known: {known})",
                    )
                )
                continue
            try:
                _put(obj, opt.path, FROM_UCI[opt.kind](raw))
            except _Bad as exc:
                field = join_path(base, opt.key)
                errors.append(located(line, f"option {key!r}", f"{exc} ({field})"))
        if spec.repeated:
            if spec.name_key and spec.name_key not in obj and section.name is not None:
                obj[spec.name_key] = section.name
            lists.setdefault(spec.type, []).append((section, obj))
        else:
            _merge(doc, spec.path, obj)

    for spec in SECTIONS:
        if not spec.repeated:
            continue
        items = lists.get(spec.type, [])
        flag = empty_flags.get(spec.type)
        if flag is not None and items:
            errors.append(
                located(
                    flag[0],
                    f"option {flag[1]!r}",
                    f"says there are no {spec.type!r} sections, but one is on "
                    f"line {items[0][0].line}",
                )
            )
        if items or flag is not None:
            _put(doc, spec.path, [obj for _, obj in items])

    if errors:
        raise UciError(errors, source)
    return doc


def _merge(doc: dict[str, Any], path: tuple[str, ...], obj: dict[str, Any]) -> None:
    target = doc
    for key in path:
        target = target.setdefault(key, {})
    for key, value in obj.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            target[key].update(value)
        else:
            target[key] = value


# ---------------------------------------------------------------- JSON values -> UCI strings


def _from_value(kind: str, value: Any) -> str | list[str]:
    if kind == BOOL:
        if not isinstance(value, bool):
            raise _Bad("must be true or false")
        return "1" if value else "0"
    if kind == INT:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Bad("must be an integer")
        return str(value)
    if kind == NUM:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _Bad("must be a number")
        return repr(value)
    if kind == DURATION:
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise _Bad("must be seconds or a string like '24h'")
        return str(value)
    if kind == SECONDS:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise _Bad("must be seconds or a string like '6h'")
        return repr(value) if isinstance(value, float) else str(value)
    if kind == INT_LIST:
        if not isinstance(value, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        ):
            raise _Bad("must be a list of integers")
        return [str(v) for v in value]
    if kind == OPT_STR:
        if value is not None and not isinstance(value, str):
            raise _Bad("must be a string or null")
        if value == "":
            raise _Bad("an empty string cannot be told apart from null in UCI")
        return value or ""
    if kind == LIST:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise _Bad("must be a list of strings")
        return list(value)
    if not isinstance(value, str):
        raise _Bad("must be a string")
    return value


def _get(obj: Any, path: tuple[str, ...]) -> tuple[bool, Any]:
    for key in path:
        if not isinstance(obj, dict) or key not in obj:
            return False, None
        obj = obj[key]
    return True, obj


def _section_from(
    spec: Spec, obj: dict[str, Any], path: str, errors: list[FieldError], name: str | None
) -> Section:
    """Build one section from the options ``spec`` knows in ``obj`` (other keys: see below)."""
    section = Section(spec.type, name)
    for opt in spec.options:
        present, value = _get(obj, opt.path)
        if not present:
            continue
        field = join_path(path, opt.key)
        try:
            text = _from_value(opt.kind, value)
        except _Bad as exc:
            errors.append(FieldError(field, str(exc)))
            continue
        if isinstance(text, list) and not text:
            text = ""  # an empty list is spelled as an empty option, which splits to []
        items = text if isinstance(text, list) else [text]
        if any("\n" in item or "\r" in item for item in items):
            errors.append(FieldError(field, "contains a line break"))
            continue
        section.options[opt.uci] = text
    return section


def _prefixes(path: tuple[str, ...]) -> set[tuple[str, ...]]:
    return {path[:i] for i in range(1, len(path) + 1)}


def _unknown_keys(
    obj: dict[str, Any],
    prefix: tuple[str, ...],
    known: set[tuple[str, ...]],
    lists: set[tuple[str, ...]],
    path: str,
    errors: list[FieldError],
) -> None:
    """Report every key no table row covers, so nothing is silently dropped on write-back."""
    for key, value in obj.items():
        here = (*prefix, key)
        if here in lists or (here in known and not isinstance(value, dict)):
            continue
        if here in known:
            _unknown_keys(value, here, known, lists, join_path(path, key), errors)
        else:
            errors.append(FieldError(join_path(path, key), "unknown key"))


def document_to_package(doc: dict[str, Any]) -> Package:
    """Convert a (validated) JSON document to a UCI Package; raise UciError on a bad shape."""
    errors: list[FieldError] = []
    if not isinstance(doc, dict):
        raise UciError([FieldError("", "the document must be a JSON object")])
    package = Package()
    singles: dict[str, Section] = {}
    known: set[tuple[str, ...]] = set()
    lists: set[tuple[str, ...]] = set()
    flags: list[tuple[str, str]] = []
    for spec in SECTIONS:
        if spec.repeated:
            known |= _prefixes(spec.path)
            lists.add(spec.path)
        else:
            for opt in spec.options:
                known |= _prefixes(spec.path + opt.path)
            known |= _prefixes(spec.path)
        present, value = _get(doc, spec.path) if spec.path else (True, doc)
        if not present:
            continue
        if not spec.repeated:
            if not isinstance(value, dict):
                continue  # reported by _unknown_keys / the loader; nothing to write
            section = _section_from(spec, value, spec.doc, errors, spec.uci_name)
            singles[spec.type] = section
            package.sections.append(section)
            continue
        if not isinstance(value, list):
            errors.append(FieldError(spec.doc, "must be a list"))
            continue
        if not value and spec.empty_flag:
            flags.append(spec.empty_flag)
        item_known = set().union(*(_prefixes(opt.path) for opt in spec.options))
        for index, item in enumerate(value):
            path = join_path(spec.doc, index)
            if not isinstance(item, dict):
                errors.append(FieldError(path, "must be an object"))
                continue
            raw_name = item.get(spec.name_key) if spec.name_key else None
            name = raw_name if isinstance(raw_name, str) and NAME_RE.match(raw_name) else None
            package.sections.append(_section_from(spec, item, path, errors, name))
            _unknown_keys(item, (), item_known, set(), path, errors)
    for type_, option in flags:
        found = singles.get(type_)
        if found is None:
            found = Section(type_, SPEC_BY_TYPE[type_].uci_name)
            singles[type_] = found
            package.sections.insert(_order(package, type_), found)
        section = found
        section.options[option] = NONE_WORD
    _unknown_keys(doc, (), known, lists, "", errors)
    if errors:
        raise UciError(errors)
    return package


def _order(package: Package, type_: str) -> int:
    """Index at which a late-created single section keeps the table order."""
    rank = [spec.type for spec in SECTIONS]
    for index, section in enumerate(package.sections):
        if rank.index(section.type) > rank.index(type_):
            return index
    return len(package.sections)


def document_to_uci(doc: dict[str, Any]) -> str:
    """Render a JSON document as the text of ``/etc/config/energyhub``."""
    header = (
        "# Managed by energyhubd: the running configuration, written back after each\n"
        "# accepted push. Edit with LuCI, or with uci followed by 'uci commit energyhub'\n"
        "# and 'reload_config' (uci commit alone does not reload the daemon).\n\n"
    )
    return header + render(document_to_package(doc))


def write_back(path: str, doc: dict[str, Any]) -> bool:
    """Write ``doc`` to the UCI file at ``path`` (atomic, only if the text changed).

    Called after a pushed configuration is accepted, so that ``uci show energyhub`` shows
    what runs. True when the file was written.
    """
    return write_if_changed(path, document_to_uci(doc))


_STEP_RE = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def locate(package: Package, field: str) -> tuple[int, str] | None:
    """The UCI line and option that hold document ``field`` (e.g. ``forwards[1].port``).

    Lets a validation error found in the document point at the line the technician has to
    edit. An absent option points at its section's ``config`` line.
    """
    steps: list[str | int] = [
        int(index) if index else name for name, index in _STEP_RE.findall(field)
    ]
    best: tuple[int, str] | None = None
    best_depth = -1
    for spec in SECTIONS:
        depth = len(spec.path)
        if tuple(steps[:depth]) != spec.path:
            continue
        rest = steps[depth:]
        if spec.repeated:
            if not rest or not isinstance(rest[0], int):
                continue
            sections = package.of_type(spec.type)
            if rest[0] >= len(sections):
                continue
            section, rest = sections[rest[0]], rest[1:]
        else:
            found = package.of_type(spec.type)
            if not found:
                continue
            section = found[0]
        key = ".".join(str(step) for step in rest if isinstance(step, str))
        opt = next((o for o in spec.options if key == o.key or key.startswith(o.key + ".")), None)
        if opt is None and not spec.path:
            continue  # the top-level section holds only its own keys, not "egress.mode"
        where = (section.line, f"config {section.type}")
        if opt is not None and opt.uci in section.option_lines:
            where = (section.option_lines[opt.uci], f"option {opt.uci!r}")
        if depth > best_depth:  # the most specific section wins (reservation over lan)
            best, best_depth = where, depth
    return best


def annotate(error: ConfigError, package: Package) -> UciError:
    """Re-express a document validation error with UCI file lines and option names."""
    located_errors: list[FieldError] = []
    for item in error.errors:
        where = locate(package, item.path) if item.path else None
        if where is None:
            located_errors.append(item)
        else:
            line, what = where
            located_errors.append(located(line, what, f"{item.reason} ({item.path})"))
    return UciError(located_errors, package.source or error.source)
