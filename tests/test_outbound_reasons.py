"""Every reason sentence the diagnostics make maps to a stable code (and its values)."""

from __future__ import annotations

import errno
import socket
import ssl

import pytest
from hypothesis import given
from hypothesis import strategies as st

from energyhubd.outbound import diagnose, reasons


def _os(code: int) -> OSError:
    return OSError(code, "x")


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (TimeoutError(), "filtered"),
        (_os(errno.ECONNREFUSED), "refused"),
        (_os(errno.EHOSTUNREACH), "host_unreachable"),
        (_os(errno.ENETUNREACH), "network_unreachable"),
        (_os(errno.ECONNRESET), "reset"),
        (_os(errno.EPERM), "blocked_here"),
        (_os(errno.EIO), "other"),
    ],
)
def test_socket_errors(exc: BaseException, code: str) -> None:
    sentence = diagnose._oserror_reason(exc, "TCP 2443 to 203.0.113.20", 2)
    got = reasons.explain(False, sentence)
    assert got["code"] == code, sentence
    if code == "filtered":
        assert got["params"] == {"timeout": "2 s"}


def _clock(offset: float | None, kernel: bool | None) -> diagnose.Row:
    ntp = []
    if offset is not None:
        ntp = [diagnose.Row("ntp", "t", True, 1.0, "ok", {"offset_s": offset})]
    return diagnose.clock_row(ntp, kernel)


def test_clock_rows() -> None:
    off = _clock(12.5, None)
    assert reasons.explain(off.passed, off.reason) == {
        "code": "clock_off",
        "params": {"offset": "+12.5 s"},
    }
    unconfirmed = _clock(None, False)
    assert reasons.explain(False, unconfirmed.reason)["code"] == "clock_unconfirmed"
    assert reasons.explain(True, _clock(0.01, None).reason)["code"] == "ok"


def test_unresolved_wins_over_the_embedded_reason() -> None:
    inner = diagnose._oserror_reason(TimeoutError(), "DNS server 198.51.100.1", 2)
    row = diagnose._unresolved("mqtt_tls", "data2.ferroamp.se", 8883, inner)
    assert reasons.explain(False, row.reason) == {
        "code": "unresolved",
        "params": {"host": "data2.ferroamp.se"},
    }


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ("self-signed certificate in certificate chain", "tls_intercepted"),
        ("certificate has expired", "tls_expired"),
        ("Hostname mismatch, certificate is not valid for 'x'.", "tls_wrong_name"),
    ],
)
def test_tls_verify_failures(message: str, code: str) -> None:
    # Nothing listens on the discard port of loopback: the issuer cannot be fetched.
    exc = ssl.SSLCertVerificationError(message)
    exc.verify_message = message
    row = diagnose._verify_failure(
        "update_https", "t", "s3.example", "127.0.0.1", 9, 0.5, exc, "updates will fail"
    )
    got = reasons.explain(False, row.reason)
    assert got == {"code": code, "params": {"host": "s3.example", "issuer": "unknown"}}


def test_closed_port_on_loopback_is_refused() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: the kernel refuses
        row = diagnose.check_tcp("gateway", "127.0.0.1", "127.0.0.1", port, 1)
    assert row.as_dict()["code"] == "refused"


def test_dns_and_ssh_sentences() -> None:
    cases = {
        "DNS server 1.1.1.1 refused the query for a.example": "dns_refused",
        "DNS server 1.1.1.1 says a.example does not exist (NXDOMAIN)": "dns_nxdomain",
        "DNS server 1.1.1.1 failed to resolve a.example (SERVFAIL)": "dns_failed",
        "DNS server 1.1.1.1 returned no IPv4 address for a.example": "dns_no_address",
        "DNS server 1.1.1.1: UDP 53 unreachable (ICMP port unreachable: no DNS service there, "
        "or rejected by a firewall)": "port_unreachable",
        "TCP 2443 to 1.2.3.4: connected but the server sent no SSH greeting "
        "(a firewall or proxy may be in the path)": "ssh_no_greeting",
    }
    for sentence, code in cases.items():
        assert reasons.explain(False, sentence)["code"] == code, sentence


@given(st.text(max_size=200), st.booleans())
def test_every_sentence_gets_a_known_code(sentence: str, passed: bool) -> None:
    got = reasons.explain(passed, sentence)
    assert got["code"] in reasons.CODES
    assert all(isinstance(v, str) for v in got["params"].values())
