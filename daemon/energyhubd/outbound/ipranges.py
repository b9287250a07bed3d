"""The S3 eu-central-1 IPv4 prefixes from AWS ``ip-ranges.json``, ready for an nft set.

Updates come from an S3 bucket in eu-central-1, so the allowlist admits those prefixes. The
published file lists overlapping prefixes (a /15 and /16s inside it, duplicates under other
services); an nft interval set refuses overlapping elements, so the result is collapsed. A
broken or suspicious file raises ``IpRangesError`` and the caller keeps the set it has: an
empty or truncated download must never close the update path or open it to the world.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

DEFAULT_SERVICE = "S3"
DEFAULT_REGION = "eu-central-1"
MAX_BYTES = 16 * 1024 * 1024
MIN_PREFIXLEN = 8  # a shorter prefix than /8 in an S3 region is not believable
MAX_PREFIXES = 4096


class IpRangesError(ValueError):
    """The file cannot be trusted; keep the previous set."""


def parse_ip_ranges(
    data: bytes, service: str = DEFAULT_SERVICE, region: str = DEFAULT_REGION
) -> list[ipaddress.IPv4Network]:
    """Collapsed, sorted IPv4 prefixes for ``service`` in ``region``."""
    if len(data) > MAX_BYTES:
        raise IpRangesError(f"ip-ranges.json is {len(data)} bytes, more than {MAX_BYTES}")
    try:
        doc: Any = json.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:
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
        if not isinstance(entry, dict):
            raise IpRangesError(f"ip-ranges.json: prefixes[{index}] is not an object")
        if entry.get("service") != service or entry.get("region") != region:
            continue
        text = entry.get("ip_prefix")
        if not isinstance(text, str):
            raise IpRangesError(f"ip-ranges.json: prefixes[{index}].ip_prefix is not a string")
        try:
            net = ipaddress.IPv4Network(text, strict=True)
        except ValueError as exc:
            raise IpRangesError(f"ip-ranges.json: prefixes[{index}].ip_prefix: {exc}") from exc
        if net.prefixlen < MIN_PREFIXLEN:
            raise IpRangesError(
                f"ip-ranges.json: prefixes[{index}].ip_prefix {net} is implausibly large"
            )
        if net.is_loopback or net.is_multicast or net.is_unspecified or net.is_link_local:
            raise IpRangesError(
                f"ip-ranges.json: prefixes[{index}].ip_prefix {net} is not a public range"
            )
        found.append(net)
    if not found:
        raise IpRangesError(f"ip-ranges.json lists no IPv4 prefix for {service} in {region}")
    collapsed = sorted(ipaddress.collapse_addresses(found))
    if len(collapsed) > MAX_PREFIXES:
        raise IpRangesError(f"ip-ranges.json: {len(collapsed)} prefixes, more than {MAX_PREFIXES}")
    return collapsed


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
