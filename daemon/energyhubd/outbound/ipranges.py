"""The S3 eu-central-1 IPv4 prefixes from AWS ``ip-ranges.json``, ready for an nft set.

Updates come from an S3 bucket in eu-central-1, so the allowlist admits those prefixes. The
published file lists overlapping prefixes (a /15 and /16s inside it, duplicates under other
services); an nft interval set refuses overlapping elements, so the result is collapsed. A
broken or suspicious file raises ``IpRangesError`` and the caller keeps the set it has: an
empty or truncated download must never close the update path or open it to the world.

Memory: the whole file (over 12,000 entries, a few MiB) is decoded, but each entry is dropped
the moment the JSON decoder has built it, unless it is an S3 entry of the region; only that
entry's prefix text is kept until the end. So neither an accepted nor a refused file leaves
twelve thousand dictionaries behind (they used to keep about 12 MiB of RSS fragmented after
a refused parse), and the result is one ``IPv4Network`` per collapsed prefix.

Limits (each named in its error): ``MAX_BYTES`` for the file, ``MAX_PREFIXES`` collapsed
prefixes for the set (the real file has a few hundred for S3 eu-central-1), ``MIN_PREFIXLEN``.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

from energyhubd import memory

DEFAULT_SERVICE = "S3"
DEFAULT_REGION = "eu-central-1"
MAX_BYTES = 16 * 1024 * 1024
MIN_PREFIXLEN = 8  # a shorter prefix than /8 in an S3 region is not believable
# The allowlist's S3 set holds at most this many collapsed prefixes: 10x what AWS publishes
# for S3 eu-central-1 today, and at about 0.3 KiB each a bound on what the set may cost.
MAX_PREFIXES = 4096


class Prefix(ipaddress.IPv4Network):
    """An ``IPv4Network`` that does not cache what it can derive.

    ``IPv4Network`` caches ``hostmask`` and ``broadcast_address`` (two more objects and a
    larger ``__dict__``) the first time anything, e.g. ``collapse_addresses``, asks: that
    more than triples a prefix kept for days (about 540 instead of 160 bytes).
    """

    @property
    def hostmask(self) -> ipaddress.IPv4Address:
        return ipaddress.IPv4Address(int(self.netmask) ^ 0xFFFFFFFF)

    @property
    def broadcast_address(self) -> ipaddress.IPv4Address:
        return ipaddress.IPv4Address(int(self.network_address) | (int(self.netmask) ^ 0xFFFFFFFF))


class IpRangesError(ValueError):
    """The file cannot be trusted; keep the previous set."""


class _Skipped:
    """An entry of another service, region or address family, dropped while decoding."""

    __slots__ = ()


class _Wanted:
    """An entry of the wanted service and region: only its ``ip_prefix`` value is kept."""

    __slots__ = ("value",)

    def __init__(self, value: object) -> None:
        self.value = value


_SKIPPED = _Skipped()


def _entry_filter(service: str, region: str) -> Any:
    def hook(obj: dict[str, Any]) -> object:
        if "ipv6_prefix" in obj:
            return _SKIPPED
        if obj.get("service") == service and obj.get("region") == region:
            return _Wanted(obj.get("ip_prefix"))
        if "ip_prefix" in obj:
            return _SKIPPED
        return obj  # the top level, or something this parser will refuse below

    return hook


def parse_ip_ranges(
    data: bytes, service: str = DEFAULT_SERVICE, region: str = DEFAULT_REGION
) -> list[ipaddress.IPv4Network]:
    """Collapsed, sorted IPv4 prefixes (``Prefix`` objects) for ``service`` in ``region``."""
    try:
        return _parse(data, service, region)
    finally:
        # The decoded text was one large block; glibc keeps its pages after free.
        memory.trim()


def _parse(data: bytes, service: str, region: str) -> list[ipaddress.IPv4Network]:
    if len(data) > MAX_BYTES:
        raise IpRangesError(
            f"ip-ranges.json is {len(data)} bytes, more than the limit of {MAX_BYTES} "
            "(ipranges.MAX_BYTES)"
        )
    try:
        doc: Any = json.loads(data, object_hook=_entry_filter(service, region))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise IpRangesError(f"ip-ranges.json is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise IpRangesError("ip-ranges.json: top level is not an object")
    prefixes = doc.get("prefixes")
    if not isinstance(prefixes, list):
        raise IpRangesError("ip-ranges.json: no 'prefixes' list")
    if not isinstance(doc.get("syncToken"), str) or not isinstance(doc.get("createDate"), str):
        raise IpRangesError("ip-ranges.json: missing syncToken/createDate (not an AWS file?)")
    found: list[ipaddress.IPv4Network] = []
    for index, entry in enumerate(prefixes):
        if entry is _SKIPPED:
            continue
        if not isinstance(entry, _Wanted):
            # Not an entry object, or an object without ip_prefix/service/region.
            if isinstance(entry, dict):
                continue
            raise IpRangesError(f"ip-ranges.json: prefixes[{index}] is not an object")
        found.append(_checked(entry.value, index))
    del doc, prefixes
    if not found:
        raise IpRangesError(f"ip-ranges.json lists no IPv4 prefix for {service} in {region}")
    collapsed = sorted(ipaddress.collapse_addresses(found))
    if len(collapsed) > MAX_PREFIXES:
        raise IpRangesError(
            f"ip-ranges.json: {len(collapsed)} {service} {region} prefixes (after collapsing), "
            f"more than the allowlist's limit of {MAX_PREFIXES} (ipranges.MAX_PREFIXES)"
        )
    return [Prefix((int(net.network_address), net.prefixlen)) for net in collapsed]


def _checked(text: object, index: int) -> ipaddress.IPv4Network:
    where = f"ip-ranges.json: prefixes[{index}].ip_prefix"
    if not isinstance(text, str):
        raise IpRangesError(f"{where} is not a string")
    try:
        net = ipaddress.IPv4Network(text, strict=True)
    except ValueError as exc:
        raise IpRangesError(f"{where}: {exc}") from exc
    if net.prefixlen < MIN_PREFIXLEN:
        raise IpRangesError(
            f"{where} {net} is implausibly large (shorter than /{MIN_PREFIXLEN}, "
            "ipranges.MIN_PREFIXLEN)"
        )
    if net.is_loopback or net.is_multicast or net.is_unspecified or net.is_link_local:
        raise IpRangesError(f"{where} {net} is not a public range")
    return net


def load_ip_ranges(
    path: str, service: str = DEFAULT_SERVICE, region: str = DEFAULT_REGION
) -> list[ipaddress.IPv4Network]:
    """Read and parse a local copy; an unreadable file is an ``IpRangesError`` too."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_BYTES + 1)
    except OSError as exc:
        raise IpRangesError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return parse_ip_ranges(data, service, region)
