"""Every reason code is made by a real check against a real socket, with its sentence.

Loopback servers stand in for the far side (a DNS server with a given answer, an NTP server
with a wrong clock, TLS servers with an expired, a foreign or a misnamed certificate, a port
that resets); the codes that need routes and a firewall are made in namespaces by
``test_outbound_diagnose``. Together they cover ``reasons.CODES``. The LuCI view has words for
every code, and Swedish ones, with the params the daemon sends.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import re
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from energyhubd.outbound import diagnose, dnswire, reasons, sntp
from energyhubd.outbound.row import Row
from tests import luci_rig
from tests import test_outbound_diagnose as in_namespaces

HOST = "127.0.0.1"
TIMEOUT = 1.0


# -- loopback stand-ins ----------------------------------------------------------------------


@contextlib.contextmanager
def tcp_server(handle: Callable[[socket.socket], None]) -> Iterator[int]:
    """A loopback TCP server calling ``handle`` per connection (own thread); yields its port."""
    listener = socket.socket()
    listener.bind((HOST, 0))
    listener.listen(8)
    listener.settimeout(0.1)  # close() does not wake a blocked accept(): poll the stop flag
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=_guarded, args=(handle, conn), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def _guarded(handle: Callable[[socket.socket], None], conn: socket.socket) -> None:
    with conn, contextlib.suppress(OSError):
        conn.settimeout(5)  # accepted sockets inherit the listener's timeout; set their own
        handle(conn)


@contextlib.contextmanager
def udp_server(answer: Callable[[bytes], bytes | None]) -> Iterator[int]:
    """A loopback UDP server sending ``answer(request)`` back (None: stays silent)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((HOST, 0))
    sock.settimeout(0.1)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                data, peer = sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            reply = answer(data)
            if reply is not None:
                sock.sendto(reply, peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield sock.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        sock.close()


def closed_port(kind: int = socket.SOCK_STREAM) -> int:
    """A loopback port nobody listens on (the kernel refuses / answers ICMP unreachable)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
    return port


def dns_answer(rcode: int, addresses: list[str]) -> Callable[[bytes], bytes]:
    return lambda query: dnswire.build_response(query, addresses, rcode=rcode)


def ntp_answer(skew: float = 0.0, leap: int = 0) -> Callable[[bytes], bytes]:
    def answer(request: bytes) -> bytes:
        reply = bytearray(sntp.build_reply(request, time.time() + skew))
        reply[0] = (leap << 6) | (reply[0] & 0x3F)
        return bytes(reply)

    return answer


def say(text: bytes) -> Callable[[socket.socket], None]:
    return lambda conn: conn.sendall(text)


def hang_up(conn: socket.socket) -> None:
    """Accept and close: no greeting, no answer."""


def reset_after_request(conn: socket.socket) -> None:
    conn.recv(1024)
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A trusted CA, the CA of an inspecting firewall, and their certificates."""
    out = tmp_path_factory.mktemp("pki")
    trusted = trustme.CA(organization_name="EnergyHub Test")
    inspector = trustme.CA(organization_name="Contoso Firewall")
    trusted.cert_pem.write_to_path(str(out / "ca.pem"))
    past = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
    return {
        "ca_file": str(out / "ca.pem"),
        "good": trusted.issue_cert("localhost"),
        "expired": trusted.issue_cert(
            "localhost", not_before=past, not_after=past + datetime.timedelta(days=1)
        ),
        "other_name": trusted.issue_cert("elsewhere.example"),
        "foreign": inspector.issue_cert("localhost"),
    }


def tls_handler(cert: trustme.LeafCert, after: bytes | None) -> Callable[[socket.socket], None]:
    """Complete the handshake with ``cert``; then send ``after`` (None: hang up)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(ctx)

    def handle(conn: socket.socket) -> None:
        with ctx.wrap_socket(conn, server_side=True) as tls:
            if after is not None:
                tls.recv(1024)
                tls.sendall(after)

    return handle


# -- every code from a real check ------------------------------------------------------------


def _tcp(handler: Callable[[socket.socket], None], check: Callable[[int], Row]) -> Row:
    with tcp_server(handler) as port:
        return check(port)


def _dns(answer: Callable[[bytes], bytes | None], name: str = "data2.example") -> Row:
    with udp_server(answer) as port:
        return diagnose.check_dns(HOST, name, TIMEOUT, port=port)


def _ntp(answer: Callable[[bytes], bytes | None]) -> Row:
    with udp_server(answer) as port:
        return diagnose.check_ntp(HOST, HOST, TIMEOUT, port=port)


def _tls(
    pki: dict[str, Any], cert: str, after: bytes | None = None, ca_file: str | None = None
) -> Row:
    with tcp_server(tls_handler(pki[cert], after)) as port:
        return diagnose.check_tls(
            "update_https",
            "localhost",
            HOST,
            port,
            TIMEOUT,
            ca_file or pki["ca_file"],
            "automatic updates will fail",
            http_probe=True,
        )


def _http(port: int) -> Row:
    return diagnose.check_http("update_http", "s3.example", HOST, port, TIMEOUT)


def _ssh(port: int) -> Row:
    return diagnose.check_ssh("gateway", HOST, port, TIMEOUT)


def dns_closed() -> Row:
    return diagnose.check_dns(HOST, "data2.example", TIMEOUT, port=closed_port(socket.SOCK_DGRAM))


def ntp_closed() -> Row:
    return diagnose.check_ntp(HOST, HOST, TIMEOUT, port=closed_port(socket.SOCK_DGRAM))


def _tls_port(port: int) -> Row:
    return diagnose.check_tls(
        "mqtt_tls", "localhost", HOST, port, TIMEOUT, None, "the portal link will fail"
    )


HTTP_OK = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n"
LOOPBACK: list[tuple[str, Callable[[dict[str, Any]], Row], dict[str, str]]] = [
    ("ok", lambda _: _dns(dns_answer(0, ["203.0.113.10"])), {}),
    ("ok", lambda _: _tcp(say(b"SSH-2.0-OpenSSH_9.2\r\n"), _ssh), {}),
    ("ok", lambda _: _tcp(say(HTTP_OK), _http), {}),
    ("ok", lambda p: _tls(p, "good", HTTP_OK), {}),
    ("filtered", lambda _: _dns(lambda q: None), {"timeout": "1 s"}),
    (
        "refused",
        lambda _: diagnose.check_tcp("gateway", HOST, HOST, closed_port(), TIMEOUT),
        {},
    ),
    ("port_unreachable", lambda _: dns_closed(), {}),
    ("port_unreachable", lambda _: ntp_closed(), {}),
    ("reset", lambda _: _tcp(reset_after_request, _http), {}),
    ("dns_refused", lambda _: _dns(dns_answer(5, [])), {"host": "data2.example"}),
    ("dns_nxdomain", lambda _: _dns(dns_answer(3, [])), {"host": "data2.example"}),
    (
        "dns_failed",
        lambda _: _dns(dns_answer(2, [])),
        {"host": "data2.example", "rcode": "SERVFAIL"},
    ),
    ("dns_no_address", lambda _: _dns(dns_answer(0, [])), {"host": "data2.example"}),
    ("ntp_unsynchronised", lambda _: _ntp(ntp_answer(leap=3)), {}),
    (
        "clock_off",
        lambda _: diagnose.clock_row([_ntp(ntp_answer(12.5))], None),
        {"offset": "+12.5 s"},
    ),
    ("clock_unconfirmed", lambda _: diagnose.clock_row([ntp_closed()], False), {}),
    ("ssh_no_greeting", lambda _: _tcp(hang_up, _ssh), {}),
    ("not_ssh", lambda _: _tcp(say(b"220 mail ESMTP\r\n"), _ssh), {}),
    ("no_http", lambda _: _tcp(say(b"220 mail ESMTP\r\n"), _http), {}),
    ("trust_store", lambda p: _tls(p, "good", ca_file="/nonexistent/ca.pem"), {}),
    ("tls_no_http", lambda p: _tls(p, "good"), {"host": "localhost"}),
    ("tls_failed", lambda _: _tcp(say(b"220 mail ESMTP\r\n"), _tls_port), {"host": "localhost"}),
    ("tls_expired", lambda p: _tls(p, "expired"), {"host": "localhost", "issuer": "*"}),
    ("tls_wrong_name", lambda p: _tls(p, "other_name"), {"host": "localhost", "issuer": "*"}),
    ("tls_intercepted", lambda p: _tls(p, "foreign"), {"host": "localhost", "issuer": "*"}),
]


@pytest.mark.parametrize(
    ("code", "make", "params"), LOOPBACK, ids=[f"{c}-{i}" for i, (c, _, _) in enumerate(LOOPBACK)]
)
def test_a_real_check_makes_the_code_with_its_sentence(
    pki: dict[str, Any], code: str, make: Callable[[dict[str, Any]], Row], params: dict[str, str]
) -> None:
    row = make(pki)
    got = row.as_dict()
    assert (got["code"], got["passed"]) == (code, code == reasons.OK), got["reason"]
    if params.get("issuer") == "*":  # the CA's own words, as the certificate says them
        params = {**params, "issuer": row.detail["issuer"]}
    assert got["params"] == params
    for value in params.values():  # the sentence says what the params say
        assert value in got["reason"], (value, got["reason"])


def test_the_issuer_is_the_certificate_s(pki: dict[str, Any]) -> None:
    row = _tls(pki, "foreign")
    assert "Contoso Firewall" in row.params["issuer"]
    assert row.reason.startswith("TLS to localhost is intercepted by a device")


def test_every_code_is_made_by_a_real_check() -> None:
    """This file's loopback checks and the namespace checks together make every code."""
    made = {code for code, _, _ in LOOPBACK} | in_namespaces.CODES_MADE_HERE
    assert made == reasons.CODES


# -- the codes are a contract: factories, rows, JSON ----------------------------------------

_FACTORIES = {
    name: fn
    for name, fn in vars(reasons).items()
    if callable(fn) and getattr(fn, "__module__", "") == reasons.__name__ and name in reasons.CODES
}


def test_each_code_has_its_own_sentence_maker() -> None:
    """``ok``, ``other`` and the socket errors aside, one function makes each code."""
    socket_codes = {"filtered", "refused", "host_unreachable", "network_unreachable"}
    socket_codes |= {"reset", "blocked_here"}
    assert set(_FACTORIES) | socket_codes == reasons.CODES


_text = st.text(max_size=30)


@pytest.mark.parametrize("name", sorted(_FACTORIES))
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_text, min_size=4, max_size=4), st.integers(0, 65535), st.floats(-1e6, 1e6))
def test_every_reason_names_its_params_in_its_sentence(
    name: str, texts: list[str], integer: int, number: float
) -> None:
    """Whatever the values, a reason's code is known, its params are the code's, all strings,
    and each one appears in the sentence: the words and the code cannot disagree."""
    fn = _FACTORIES[name]
    words = iter(texts)
    kwargs: dict[str, Any] = {}
    for arg, kind in fn.__annotations__.items():
        if arg == "return":
            continue
        if kind == "int":
            kwargs[arg] = integer
        elif kind == "float":
            kwargs[arg] = number
        elif kind == "BaseException":
            kwargs[arg] = OSError(errno.ENOENT, next(words))
        else:
            kwargs[arg] = next(words)
    why = fn(**kwargs)
    assert why.code == name
    in_namespaces.assert_wire_shape(Row("dns", "t", None, why).as_dict())
    for value in why.params.values():
        assert value in why.text


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from([TimeoutError(), *(OSError(n, "x") for n in range(1, 140))]),
    _text,
    st.floats(0.1, 300),
)
def test_every_socket_error_has_a_code(exc: BaseException, what: str, timeout: float) -> None:
    why = reasons.from_oserror(exc, what, timeout)
    in_namespaces.assert_wire_shape(Row("gateway", "t", None, why).as_dict())
    assert why.text.startswith(f"{what}: ")


def test_a_reason_with_an_unknown_code_or_wrong_params_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown reason code"):
        reasons.Reason("timeout", "x")
    with pytest.raises(ValueError, match="filtered names"):
        reasons.Reason("filtered", "x", {"host": "a"})
    with pytest.raises(ValueError, match="strings"):
        reasons.Reason("clock_off", "x", {"offset": 1.5})  # type: ignore[dict-item]


def test_the_wire_shape_of_a_row() -> None:
    why = reasons.from_oserror(TimeoutError(), "TCP 2443 to 203.0.113.20", 2)
    row = Row("gateway", "203.0.113.20:2443", None, why, {"x": 1})
    assert row.as_dict() == {
        "flow": "gateway",
        "target": "203.0.113.20:2443",
        "passed": False,
        "latency_ms": None,
        "reason": "TCP 2443 to 203.0.113.20: no answer within 2 s (filtered)",
        "code": "filtered",
        "params": {"timeout": "2 s"},
        "detail": {"x": 1},
    }
    assert list(row.as_dict()) == list(json.loads(json.dumps(row.as_dict())))


# -- the LuCI view and its Swedish catalogue -------------------------------------------------

VIEW = luci_rig.APP / "htdocs/luci-static/resources/view/energyhub/status.js"
_CASE = re.compile(
    r"case '(?P<code>\w+)': return _\('(?P<msgid>(?:[^'\\]|\\.)*)'\)"
    r"(?:\.format\((?P<args>[^)]*)\))?;"
)


def view_reason_texts() -> dict[str, tuple[str, list[str]]]:
    """code -> (msgid, params it formats in) from the view's ``reasonText``."""
    body = VIEW.read_text()
    start = body.index("function reasonText(")
    section = body[start : body.index("\n}\n", start)]
    out = {}
    for m in _CASE.finditer(section):
        msgid = re.sub(r"\\(.)", r"\1", m.group("msgid"))
        args = [a.strip().removeprefix("p.") for a in (m.group("args") or "").split(",") if a]
        out[m.group("code")] = (msgid, args)
    return out


def _catalogue(path: Path) -> dict[str, str]:
    return luci_rig.parse_po(path.read_text().replace('msgstr ""', 'msgstr "-"'))


def test_every_code_has_words_in_the_view_and_in_swedish() -> None:
    texts = view_reason_texts()
    assert set(texts) == reasons.CODES - {reasons.OTHER}  # "other" shows the English sentence
    template = _catalogue(luci_rig.APP / "po/templates/energyhub.pot")
    swedish = luci_rig.parse_po((luci_rig.APP / "po/sv/energyhub.po").read_text())
    for code, (msgid, args) in texts.items():
        assert msgid in template, code
        assert swedish.get(msgid), f"{code}: {msgid!r} has no Swedish msgstr"
        assert sorted(args) == sorted(reasons.PARAMS[code]), code
        assert msgid.count("%s") == len(args) == swedish[msgid].count("%s"), code
