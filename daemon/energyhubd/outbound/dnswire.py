"""A minimal DNS codec: one A query out, the answer's RCODE and IPv4 addresses back.

The diagnostics need to tell "the server refused" from "no such name" from "no answer", and
dnspython is not in the OpenWrt feed, so the few bytes are encoded here. The parser treats
every input as hostile: any malformed packet raises ``DnsFormatError``, never anything else.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

TYPE_A = 1
CLASS_IN = 1
RCODE_NAMES = {
    0: "NOERROR",
    1: "FORMERR",
    2: "SERVFAIL",
    3: "NXDOMAIN",
    4: "NOTIMP",
    5: "REFUSED",
}
MAX_POINTERS = 32


class DnsFormatError(ValueError):
    """The bytes are not a DNS message we can read."""


@dataclass(frozen=True)
class DnsResponse:
    ident: int
    rcode: int
    truncated: bool
    question: str | None
    addresses: tuple[str, ...]

    @property
    def rcode_name(self) -> str:
        return RCODE_NAMES.get(self.rcode, f"RCODE {self.rcode}")


def encode_name(name: str) -> bytes:
    """``data2.ferroamp.se`` -> length-prefixed labels; raises ValueError on a bad name."""
    out = bytearray()
    for label in name.rstrip(".").split("."):
        raw = label.encode("ascii")
        if not 1 <= len(raw) <= 63:
            raise ValueError(f"bad DNS label in {name!r}")
        out += bytes([len(raw)]) + raw
    out += b"\0"
    if len(out) > 255:
        raise ValueError(f"DNS name too long: {name!r}")
    return bytes(out)


def build_query(name: str, ident: int, qtype: int = TYPE_A) -> bytes:
    """A standard recursive query for one name."""
    header = struct.pack("!HHHHHH", ident & 0xFFFF, 0x0100, 1, 0, 0, 0)
    return header + encode_name(name) + struct.pack("!HH", qtype, CLASS_IN)


def _read_name(data: bytes, offset: int) -> tuple[str, int]:
    """Read a possibly compressed name; returns (name, offset after it in the original)."""
    labels: list[str] = []
    end: int | None = None
    jumps = 0
    length_total = 0
    while True:
        if offset >= len(data):
            raise DnsFormatError("name runs past the end of the message")
        length = data[offset]
        if length & 0xC0 == 0xC0:
            if offset + 1 >= len(data):
                raise DnsFormatError("truncated compression pointer")
            jumps += 1
            if jumps > MAX_POINTERS:
                raise DnsFormatError("compression pointer loop")
            if end is None:
                end = offset + 2
            offset = ((length & 0x3F) << 8) | data[offset + 1]
            continue
        if length & 0xC0:
            raise DnsFormatError("unsupported label type")
        offset += 1
        if length == 0:
            break
        if offset + length > len(data):
            raise DnsFormatError("label runs past the end of the message")
        length_total += length + 1
        if length_total > 255:
            raise DnsFormatError("name too long")
        labels.append(data[offset : offset + length].decode("ascii", "replace"))
        offset += length
    return ".".join(labels), (end if end is not None else offset)


def parse_response(data: bytes) -> DnsResponse:
    """Decode a response; raises DnsFormatError for anything that is not one."""
    if len(data) < 12:
        raise DnsFormatError("shorter than a DNS header")
    ident, flags, qdcount, ancount, _ns, _ar = struct.unpack("!HHHHHH", data[:12])
    if not flags & 0x8000:
        raise DnsFormatError("not a response")
    offset = 12
    question: str | None = None
    for _ in range(qdcount):
        name, offset = _read_name(data, offset)
        if offset + 4 > len(data):
            raise DnsFormatError("truncated question")
        offset += 4
        if question is None:
            question = name
    addresses: list[str] = []
    truncated = bool(flags & 0x0200)
    for _ in range(ancount):
        try:
            _name, offset = _read_name(data, offset)
        except DnsFormatError:
            if truncated:
                break
            raise
        if offset + 10 > len(data):
            if truncated:
                break
            raise DnsFormatError("truncated answer record")
        rtype, rclass, _ttl, rdlength = struct.unpack("!HHIH", data[offset : offset + 10])
        offset += 10
        if offset + rdlength > len(data):
            raise DnsFormatError("answer data runs past the end of the message")
        if rtype == TYPE_A and rclass == CLASS_IN:
            if rdlength != 4:
                raise DnsFormatError("A record with a length other than 4")
            addresses.append(str(ipaddress.IPv4Address(data[offset : offset + 4])))
        offset += rdlength
    return DnsResponse(ident, flags & 0x000F, truncated, question, tuple(addresses))


def build_response(
    query: bytes, addresses: list[str] | None = None, rcode: int = 0, ttl: int = 60
) -> bytes:
    """The answer a server would send to ``query`` (used by tests and the codec round trip)."""
    if len(query) < 12:
        raise DnsFormatError("shorter than a DNS header")
    ident = struct.unpack("!H", query[:2])[0]
    _name, end = _read_name(query, 12)
    question = query[12 : end + 4]
    answers = b""
    for addr in addresses or []:
        answers += b"\xc0\x0c" + struct.pack("!HHIH", TYPE_A, CLASS_IN, ttl, 4)
        answers += ipaddress.IPv4Address(addr).packed
    flags = 0x8180 | (rcode & 0xF)
    header = struct.pack("!HHHHHH", ident, flags, 1, len(addresses or []), 0, 0)
    return header + question + answers
