"""DNS, SNTP and certificate-name codecs: round trips, edge cases, and hostile bytes."""

from __future__ import annotations

import contextlib
import ssl
import struct

import pytest
import trustme
from hypothesis import given, settings
from hypothesis import strategies as st

from energyhubd.outbound import certinfo, dnswire, sntp


def test_dns_query_and_answer_round_trip() -> None:
    query = dnswire.build_query("data2.ferroamp.se", 0x1234)
    answer = dnswire.build_response(query, ["203.0.113.10", "203.0.113.11"])
    parsed = dnswire.parse_response(answer)
    assert parsed.ident == 0x1234
    assert parsed.rcode_name == "NOERROR"
    assert parsed.question == "data2.ferroamp.se"
    assert parsed.addresses == ("203.0.113.10", "203.0.113.11")


@pytest.mark.parametrize(("rcode", "name"), [(3, "NXDOMAIN"), (5, "REFUSED"), (2, "SERVFAIL")])
def test_dns_rcodes(rcode: int, name: str) -> None:
    query = dnswire.build_query("x.example", 7)
    parsed = dnswire.parse_response(dnswire.build_response(query, [], rcode=rcode))
    assert parsed.rcode == rcode and parsed.rcode_name == name and parsed.addresses == ()


def test_dns_rejects_queries_loops_and_truncation() -> None:
    query = dnswire.build_query("x.example", 7)
    with pytest.raises(dnswire.DnsFormatError, match="not a response"):
        dnswire.parse_response(query)
    # An answer whose name points at itself.
    header = struct.pack("!HHHHHH", 7, 0x8180, 0, 1, 0, 0)
    loop = header + b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + b"\x01\x02\x03\x04"
    with pytest.raises(dnswire.DnsFormatError):
        dnswire.parse_response(loop)
    good = dnswire.build_response(query, ["192.0.2.1"])
    with pytest.raises(dnswire.DnsFormatError):
        dnswire.parse_response(good[:-2])


def test_dns_name_encoding_refuses_bad_names() -> None:
    with pytest.raises(ValueError):
        dnswire.encode_name("a..b")
    with pytest.raises(ValueError):
        dnswire.encode_name("x" * 64 + ".se")


@settings(max_examples=400)
@given(st.binary(max_size=600))
def test_dns_parser_never_crashes_on_random_bytes(data: bytes) -> None:
    with contextlib.suppress(dnswire.DnsFormatError):
        dnswire.parse_response(data)


@settings(max_examples=200)
@given(st.binary(min_size=12, max_size=300))
def test_dns_parser_survives_responses_with_random_tails(tail: bytes) -> None:
    data = struct.pack("!HHHHHH", 1, 0x8180, 1, 3, 0, 0) + tail
    with contextlib.suppress(dnswire.DnsFormatError):
        dnswire.parse_response(data)


def test_sntp_round_trip_gives_offset_and_stratum() -> None:
    t1 = 1_800_000_000.25
    request = sntp.build_request(t1)
    assert len(request) == 48 and request[0] & 7 == 3
    reply = sntp.parse_reply(sntp.build_reply(request, t1 + 2.0, stratum=2))
    assert reply.stratum == 2 and not reply.unsynchronised
    assert abs(reply.origin - t1) < 1e-6
    offset, delay = sntp.offset_and_delay(reply, t1, t1 + 0.010)
    assert offset == pytest.approx(1.995, abs=1e-3)
    assert delay == pytest.approx(0.010, abs=1e-3)


def test_sntp_rejects_client_packets_and_short_ones() -> None:
    request = sntp.build_request(1_800_000_000.0)
    with pytest.raises(sntp.NtpFormatError, match="mode 3"):
        sntp.parse_reply(request)
    with pytest.raises(sntp.NtpFormatError):
        sntp.parse_reply(b"\x24" * 20)


def test_sntp_kiss_of_death_is_unsynchronised() -> None:
    request = sntp.build_request(1_800_000_000.0)
    reply = bytearray(sntp.build_reply(request, 1_800_000_000.0))
    reply[1] = 0
    assert sntp.parse_reply(bytes(reply)).unsynchronised


@settings(max_examples=400)
@given(st.binary(max_size=120))
def test_sntp_parser_never_crashes_on_random_bytes(data: bytes) -> None:
    with contextlib.suppress(sntp.NtpFormatError):
        sntp.parse_reply(data)


def test_kernel_clock_flag_is_a_bool_or_unknown() -> None:
    assert sntp.kernel_clock_synchronised() in (True, False, None)


def test_certificate_names_from_a_real_certificate() -> None:
    ca = trustme.CA(organization_name="Contoso Firewall")
    leaf = ca.issue_cert("s3.eu-central-1.amazonaws.com")
    der = ssl.PEM_cert_to_DER_cert(leaf.cert_chain_pems[0].bytes().decode())
    names = certinfo.parse_names(der)
    assert names.issuer["O"] == "Contoso Firewall"
    assert "Contoso Firewall" in names.issuer_text()


@settings(max_examples=300)
@given(st.binary(max_size=400))
def test_certificate_parser_never_crashes_on_random_bytes(data: bytes) -> None:
    with contextlib.suppress(certinfo.CertFormatError):
        certinfo.parse_names(data)


@settings(max_examples=200)
@given(st.integers(min_value=0, max_value=2000), st.binary(min_size=1, max_size=8))
def test_certificate_parser_survives_corrupted_certificates(index: int, junk: bytes) -> None:
    der = bytearray(_DER)
    pos = index % len(der)
    der[pos : pos + len(junk)] = junk
    with contextlib.suppress(certinfo.CertFormatError):
        certinfo.parse_names(bytes(der))


_CA = trustme.CA()
_DER = ssl.PEM_cert_to_DER_cert(_CA.issue_cert("x.example").cert_chain_pems[0].bytes().decode())
