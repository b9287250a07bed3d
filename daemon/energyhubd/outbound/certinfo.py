"""Read the issuer and subject names out of a DER certificate, without verifying it.

When TLS verification fails, the diagnostics fetch the certificate that was presented and
name its issuer ("Fortinet CA", "Sophos SSL CA", ...): that tells a customer's IT department
which device intercepts TLS. ``ssl`` exposes no parser for unverified certificates and the
``cryptography`` package is too big for the router, so this reads just enough DER. Every
malformed input raises ``CertFormatError``.
"""

from __future__ import annotations

from dataclasses import dataclass

OID_NAMES = {
    bytes([0x55, 0x04, 0x03]): "CN",
    bytes([0x55, 0x04, 0x0A]): "O",
    bytes([0x55, 0x04, 0x0B]): "OU",
    bytes([0x55, 0x04, 0x06]): "C",
}
_STRING_TAGS = {0x0C, 0x13, 0x14, 0x16, 0x1E, 0x1C}


class CertFormatError(ValueError):
    """Not a DER certificate we can read."""


@dataclass(frozen=True)
class CertNames:
    issuer: dict[str, str]
    subject: dict[str, str]

    def issuer_text(self) -> str:
        return name_text(self.issuer)

    def subject_text(self) -> str:
        return name_text(self.subject)


def name_text(name: dict[str, str]) -> str:
    """The most telling part of a name: ``CN (O)``, or whatever is there."""
    cn, org = name.get("CN"), name.get("O")
    if cn and org and org not in cn:
        return f"{cn} ({org})"
    return cn or org or name.get("OU") or "unknown"


def _tlv(data: bytes, offset: int) -> tuple[int, int, int]:
    """(tag, start of value, end of value) of the element at ``offset``."""
    if offset + 2 > len(data):
        raise CertFormatError("truncated element")
    tag = data[offset]
    length = data[offset + 1]
    pos = offset + 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4 or pos + count > len(data):
            raise CertFormatError("bad length")
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    end = pos + length
    if end > len(data):
        raise CertFormatError("element runs past the end")
    return tag, pos, end


def _children(data: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    out = []
    pos = start
    while pos < end:
        tag, vstart, vend = _tlv(data, pos)
        if vend > end:
            raise CertFormatError("element runs past its parent")
        out.append((tag, vstart, vend))
        pos = vend
        if len(out) > 64:
            raise CertFormatError("too many elements")
    return out


def _name(data: bytes, start: int, end: int) -> dict[str, str]:
    result: dict[str, str] = {}
    for tag, s, e in _children(data, start, end):
        if tag != 0x31:  # SET of attributes
            raise CertFormatError("name is not a sequence of sets")
        for atag, a_s, a_e in _children(data, s, e):
            if atag != 0x30:
                raise CertFormatError("attribute is not a sequence")
            parts = _children(data, a_s, a_e)
            if len(parts) != 2 or parts[0][0] != 0x06:
                raise CertFormatError("attribute without an OID")
            oid = data[parts[0][1] : parts[0][2]]
            vtag, v_s, v_e = parts[1]
            key = OID_NAMES.get(oid)
            if key and vtag in _STRING_TAGS and key not in result:
                raw = data[v_s:v_e]
                text = (
                    raw.decode("utf-16-be", "replace")
                    if vtag == 0x1E
                    else raw.decode("utf-8", "replace")
                )
                result[key] = text[:128]
    return result


def parse_names(der: bytes) -> CertNames:
    """Issuer and subject of a DER X.509 certificate."""
    tag, s, e = _tlv(der, 0)
    if tag != 0x30:
        raise CertFormatError("not a certificate")
    parts = _children(der, s, e)
    if not parts or parts[0][0] != 0x30:
        raise CertFormatError("no tbsCertificate")
    tbs = _children(der, parts[0][1], parts[0][2])
    index = 1 if tbs and tbs[0][0] == 0xA0 else 0  # optional [0] version
    # serial, signature algorithm, issuer, validity, subject
    if len(tbs) < index + 5:
        raise CertFormatError("tbsCertificate too short")
    issuer, subject = tbs[index + 2], tbs[index + 4]
    if issuer[0] != 0x30 or subject[0] != 0x30:
        raise CertFormatError("issuer or subject is not a name")
    return CertNames(_name(der, issuer[1], issuer[2]), _name(der, subject[1], subject[2]))
