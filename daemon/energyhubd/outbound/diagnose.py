"""Diagnostics for every outbound flow the network document requires.

Each check returns a ``Row`` whose ``reason`` is a sentence a customer's IT department can act
on ("TCP 2443 to 52.29.33.74: no answer within 5 s (filtered)"). Names are resolved through
our own DNS codec against the servers the router really uses (DHCP-provided, then the
fallback), so the checks test the same path the daemon depends on. Every check is bounded by
``timeout``; ``run_all`` runs them concurrently and never takes much longer than a few
timeouts, so the diagnostics can run on a schedule without hammering anything.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import errno
import ipaddress
import secrets
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from energyhubd.config.sections.outbound import OutboundSettings

from . import certinfo, dnswire, reasons, sntp

# Every row a run produces, one per flow the network document requires (see docs/outbound.md).
FLOWS = frozenset(
    {
        "dns",
        "dns_fallback",
        "ntp",
        "clock",
        "mqtt_tls",
        "mqtt_plain",
        "gateway",
        "update_http",
        "update_https",
    }
)
CLOCK_TOLERANCE = 1.0  # seconds; the portal shows data wrongly well beyond this
TLS_MIN = ssl.TLSVersion.TLSv1_2


@dataclass(frozen=True)
class Row:
    """One flow's verdict."""

    flow: str
    target: str
    passed: bool
    latency_ms: float | None
    reason: str
    detail: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "flow": self.flow,
            "target": self.target,
            "passed": self.passed,
            "latency_ms": None if self.latency_ms is None else round(self.latency_ms, 1),
            "reason": self.reason,
            **reasons.explain(self.passed, self.reason),  # "code", "params": for translations
            "detail": dict(self.detail),
        }


def _ms(start: float) -> float:
    return (time.monotonic() - start) * 1000.0


def _secs(timeout: float) -> str:
    return f"{timeout:g} s"


def is_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
        return True
    except ValueError:
        return False


def _oserror_reason(exc: BaseException, what: str, timeout: float) -> str:
    """Plain-language reason for a failed connect/send/receive."""
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return f"{what}: no answer within {_secs(timeout)} (filtered)"
    code = getattr(exc, "errno", None)
    if code == errno.ECONNREFUSED:
        return f"{what}: connection refused (nothing listening, or rejected by a firewall)"
    if code == errno.EHOSTUNREACH:
        return f"{what}: host unreachable (no route, or rejected by a firewall)"
    if code == errno.ENETUNREACH:
        return f"{what}: network unreachable (the router has no default route)"
    if code == errno.ECONNRESET:
        return f"{what}: connection reset (a firewall or proxy cut it)"
    if code in (errno.EACCES, errno.EPERM):
        return f"{what}: blocked by this router's own firewall"
    return f"{what}: {getattr(exc, 'strerror', None) or exc}"


# -- DNS -------------------------------------------------------------------------------------


def query_a(
    server: str, name: str, timeout: float, port: int = 53
) -> tuple[dnswire.DnsResponse, float]:
    """One A query over UDP; raises OSError/TimeoutError or DnsFormatError."""
    ident = secrets.randbelow(0x10000)
    query = dnswire.build_query(name, ident)
    start = time.monotonic()
    deadline = start + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        # connect() makes the kernel report ICMP port/host unreachable as an error on recv.
        sock.connect((server, port))
        sock.send(query)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            sock.settimeout(remaining)
            data = sock.recv(4096)
            try:
                response = dnswire.parse_response(data)
            except dnswire.DnsFormatError:
                continue  # garbage is not an answer; keep waiting for the real one
            if response.ident == ident:
                return response, _ms(start)


def check_dns(server: str, name: str, timeout: float, flow: str = "dns", port: int = 53) -> Row:
    """Can ``server`` resolve ``name``? Distinguishes timeout, refused, NXDOMAIN, ICMP."""
    target = f"{server}:{port}"
    what = f"DNS server {server}"
    try:
        response, latency = query_a(server, name, timeout, port)
    except ConnectionRefusedError:
        return Row(
            flow,
            target,
            False,
            None,
            f"{what}: UDP {port} unreachable (ICMP port unreachable: no DNS service there, "
            "or rejected by a firewall)",
        )
    except (TimeoutError, OSError) as exc:
        return Row(flow, target, False, None, _oserror_reason(exc, what, timeout))
    detail = {"rcode": response.rcode_name, "addresses": list(response.addresses)}
    if response.rcode == 5:
        return Row(flow, target, False, latency, f"{what} refused the query for {name}", detail)
    if response.rcode == 3:
        return Row(
            flow, target, False, latency, f"{what} says {name} does not exist (NXDOMAIN)", detail
        )
    if response.rcode != 0:
        return Row(
            flow,
            target,
            False,
            latency,
            f"{what} failed to resolve {name} ({response.rcode_name})",
            detail,
        )
    if not response.addresses:
        return Row(
            flow, target, False, latency, f"{what} returned no IPv4 address for {name}", detail
        )
    addrs = ", ".join(response.addresses)
    return Row(flow, target, True, latency, f"{what} resolved {name} to {addrs}", detail)


def resolve(name: str, servers: Sequence[str], timeout: float) -> tuple[list[str], str]:
    """Addresses of ``name`` from the first server that answers; ([], why) when none does."""
    if is_ipv4(name):
        return [name], ""
    why = "no DNS server is configured"
    for server in servers:
        row = check_dns(server, name, timeout)
        if row.passed:
            return list(row.detail["addresses"]), ""
        why = row.reason
    return [], why


# -- NTP -------------------------------------------------------------------------------------


def check_ntp(host: str, address: str, timeout: float, port: int = 123) -> Row:
    """One SNTP exchange: reachable, stratum, offset of our clock."""
    target = f"{host}:{port}" if host == address else f"{host} ({address}):{port}"
    what = f"NTP server {host}"
    start = time.monotonic()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.connect((address, port))
            sock.settimeout(timeout)
            t1 = time.time()
            request = sntp.build_request(t1)
            sock.send(request)
            deadline = start + timeout
            while True:
                sock.settimeout(max(0.01, deadline - time.monotonic()))
                data = sock.recv(512)
                t4 = time.time()
                try:
                    reply = sntp.parse_reply(data)
                except sntp.NtpFormatError:
                    continue
                if abs(reply.origin - t1) < 1e-3:
                    break
    except ConnectionRefusedError:
        return Row(
            "ntp", target, False, None, f"{what}: UDP {port} unreachable (ICMP port unreachable)"
        )
    except (TimeoutError, OSError) as exc:
        return Row(
            "ntp", target, False, None, _oserror_reason(exc, f"UDP {port} to {what}", timeout)
        )
    latency = _ms(start)
    offset, delay = sntp.offset_and_delay(reply, t1, t4)
    detail = {"stratum": reply.stratum, "offset_s": round(offset, 6), "delay_s": round(delay, 6)}
    if reply.unsynchronised:
        return Row(
            "ntp",
            target,
            False,
            latency,
            f"{what} answered but is not synchronised itself (stratum {reply.stratum})",
            detail,
        )
    return Row(
        "ntp",
        target,
        True,
        latency,
        f"{what} answered: stratum {reply.stratum}, our clock is {offset:+.3f} s off",
        detail,
    )


def clock_row(ntp_rows: Sequence[Row], kernel_synced: bool | None) -> Row:
    """Is the router's clock right? By the offset to a reachable server, else by the kernel."""
    offsets = [r.detail["offset_s"] for r in ntp_rows if r.passed]
    detail: dict[str, Any] = {"kernel_synchronised": kernel_synced}
    if offsets:
        offset = min(offsets, key=abs)
        detail["offset_s"] = offset
        if abs(offset) <= CLOCK_TOLERANCE:
            return Row(
                "clock", "local", True, None, f"clock synchronised ({offset:+.3f} s)", detail
            )
        return Row(
            "clock",
            "local",
            False,
            None,
            f"clock is {offset:+.1f} s off; the portal will show data at the wrong time",
            detail,
        )
    if kernel_synced:
        return Row("clock", "local", True, None, "clock synchronised (kernel flag)", detail)
    return Row(
        "clock",
        "local",
        False,
        None,
        "clock not confirmed: no NTP server answered; the portal may show data at the wrong time",
        detail,
    )


# -- TCP, TLS, SSH, HTTP ---------------------------------------------------------------------


def _label(host: str, address: str, port: int) -> str:
    return f"{address}:{port}" if host == address else f"{host} ({address}):{port}"


def check_tcp(flow: str, host: str, address: str, port: int, timeout: float) -> Row:
    target = _label(host, address, port)
    start = time.monotonic()
    try:
        with socket.create_connection((address, port), timeout=timeout):
            pass
    except (TimeoutError, OSError) as exc:
        return Row(
            flow, target, False, None, _oserror_reason(exc, f"TCP {port} to {host}", timeout)
        )
    latency = _ms(start)
    return Row(flow, target, True, latency, f"TCP {port} to {host}: connected")


def check_ssh(flow: str, address: str, port: int, timeout: float) -> Row:
    """TCP connect and read the SSH banner: a proxy answering in its place is caught here."""
    target = f"{address}:{port}"
    what = f"TCP {port} to {address}"
    start = time.monotonic()
    banner = b""
    connected = False
    try:
        with socket.create_connection((address, port), timeout=timeout) as sock:
            connected = True
            sock.settimeout(timeout)
            while b"\n" not in banner and len(banner) < 255:
                chunk = sock.recv(255 - len(banner))
                if not chunk:
                    break
                banner += chunk
    except TimeoutError:
        if not connected:
            return Row(flow, target, False, None, _oserror_reason(TimeoutError(), what, timeout))
    except OSError as exc:
        return Row(flow, target, False, None, _oserror_reason(exc, what, timeout))
    latency = _ms(start)
    line = banner.split(b"\n", 1)[0].rstrip(b"\r").decode("ascii", "replace")
    if line.startswith("SSH-2.0-"):
        return Row(flow, target, True, latency, f"{what}: SSH server answered ({line[:60]})")
    if not banner:
        return Row(
            flow,
            target,
            False,
            latency,
            f"{what}: connected but the server sent no SSH greeting "
            "(a firewall or proxy may be in the path)",
        )
    return Row(
        flow,
        target,
        False,
        latency,
        f"{what}: answered with something that is not SSH ({line[:40]!r}); "
        "a firewall or proxy is in the path",
    )


def tls_context(ca_file: str | None, client_cert: tuple[str, str] | None = None) -> ssl.SSLContext:
    """Full verification, TLS 1.2 or newer; the system store unless ``ca_file`` is given."""
    ctx = ssl.create_default_context(cafile=ca_file)
    ctx.minimum_version = TLS_MIN
    if client_cert:
        ctx.load_cert_chain(client_cert[0], client_cert[1])
    return ctx


def presented_certificate(address: str, port: int, server_name: str, timeout: float) -> bytes:
    """The leaf certificate the far side presents, fetched without verification."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection((address, port), timeout=timeout) as raw,
        ctx.wrap_socket(raw, server_hostname=server_name) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    return der or b""


def _verify_failure(
    flow: str,
    target: str,
    host: str,
    address: str,
    port: int,
    timeout: float,
    exc: ssl.SSLCertVerificationError,
    consequence: str,
) -> Row:
    """Explain a failed verification: interception, wrong name, or a wrong clock."""
    message = (exc.verify_message or str(exc)).lower()
    issuer = "unknown"
    detail: dict[str, Any] = {"verify_error": exc.verify_message or str(exc)}
    try:
        names = certinfo.parse_names(presented_certificate(address, port, host, timeout))
        issuer = names.issuer_text()
        detail["issuer"] = issuer
        detail["subject"] = names.subject_text()
    except (OSError, ssl.SSLError, certinfo.CertFormatError) as fetch_error:
        detail["fetch_error"] = str(fetch_error)
    if "expired" in message or "not yet valid" in message:
        reason = (
            f"TLS to {host}: certificate {message} (issuer: {issuer}); check the router's "
            f"clock (NTP); {consequence}"
        )
    elif "hostname mismatch" in message or "ip address mismatch" in message:
        reason = (
            f"TLS to {host} presented a certificate for another name (issuer: {issuer}); "
            f"a device on the customer network redirects the traffic; {consequence}"
        )
    else:
        reason = (
            f"TLS to {host} is intercepted by a device on the customer network "
            f"(issuer: {issuer}); {consequence}"
        )
    return Row(flow, target, False, None, reason, detail)


def check_tls(
    flow: str,
    host: str,
    address: str,
    port: int,
    timeout: float,
    ca_file: str | None,
    consequence: str,
    client_cert: tuple[str, str] | None = None,
    http_probe: bool = False,
) -> Row:
    """TCP + verified TLS handshake (TLS 1.2+, chain and name); optional HTTP HEAD after."""
    target = _label(host, address, port)
    start = time.monotonic()
    try:
        ctx = tls_context(ca_file, client_cert)
    except (OSError, ssl.SSLError) as exc:
        return Row(flow, target, False, None, f"cannot load the trust store {ca_file}: {exc}")
    try:
        raw = socket.create_connection((address, port), timeout=timeout)
    except (TimeoutError, OSError) as exc:
        return Row(
            flow, target, False, None, _oserror_reason(exc, f"TCP {port} to {host}", timeout)
        )
    status_line = ""
    try:
        with raw, ctx.wrap_socket(raw, server_hostname=host) as tls:
            version = tls.version() or "?"
            if http_probe:
                tls.sendall(
                    f"HEAD / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
                )
                status_line = _read_line(tls)
    except ssl.SSLCertVerificationError as exc:
        return _verify_failure(flow, target, host, address, port, timeout, exc, consequence)
    except ssl.SSLError as exc:
        return Row(
            flow,
            target,
            False,
            None,
            f"TLS to {host} failed ({exc.reason or exc}); a firewall may block or alter TLS; "
            f"{consequence}",
        )
    except (TimeoutError, OSError) as exc:
        return Row(flow, target, False, None, _oserror_reason(exc, f"TLS to {host}", timeout))
    latency = _ms(start)
    detail: dict[str, Any] = {"tls_version": version}
    if http_probe:
        detail["http_status"] = status_line
        if not status_line.startswith("HTTP/"):
            return Row(
                flow,
                target,
                False,
                latency,
                f"TLS to {host} verified but no HTTP answer came back",
                detail,
            )
    return Row(
        flow, target, True, latency, f"TLS to {host}: {version}, certificate verified", detail
    )


def _read_line(sock: socket.socket | ssl.SSLSocket) -> str:
    data = b""
    while b"\n" not in data and len(data) < 1024:
        chunk = sock.recv(1024 - len(data))
        if not chunk:
            break
        data += chunk
    return data.split(b"\n", 1)[0].rstrip(b"\r").decode("latin-1")


def check_http(flow: str, host: str, address: str, port: int, timeout: float) -> Row:
    """Plain HTTP: any HTTP status line means the server was reached."""
    target = _label(host, address, port)
    what = f"TCP {port} to {host}"
    start = time.monotonic()
    try:
        with socket.create_connection((address, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(f"HEAD / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            line = _read_line(sock)
    except (TimeoutError, OSError) as exc:
        return Row(flow, target, False, None, _oserror_reason(exc, what, timeout))
    latency = _ms(start)
    if not line.startswith("HTTP/"):
        return Row(flow, target, False, latency, f"{what}: connected but no HTTP answer")
    return Row(flow, target, True, latency, f"HTTP to {host}: {line[:60]}", {"http_status": line})


# -- all of it -------------------------------------------------------------------------------


def _unresolved(flow: str, host: str, port: int | None, why: str) -> Row:
    target = f"{host}:{port}" if port else host
    return Row(flow, target, False, None, f"cannot resolve {host}: {why}")


@dataclass(frozen=True)
class Trust:
    """The CA bundle one flow is verified against, and what to call it in a reason."""

    ca_file: str | None  # None: the system store
    name: str  # "portal.ca_file", "outbound.ca_file", "the system store"


def outbound_trust(settings: OutboundSettings) -> Trust:
    """What S3 (and, without a portal of its own, the broker) is checked against."""
    if settings.ca_file:
        return Trust(settings.ca_file, "outbound.ca_file")
    return Trust(None, "the system store")


def run_all(
    settings: OutboundSettings,
    dns_servers: Sequence[str],
    fallback: Sequence[str],
    *,
    client_cert: tuple[str, str] | None = None,
    broker_trust: Trust | None = None,
    kernel_synced: Callable[[], bool | None] = sntp.kernel_clock_synchronised,
) -> list[Row]:
    """Every flow's row, in a fixed order. Bounded by roughly three ``settings.timeout``.

    ``dns_servers`` are the DHCP-provided (or static) servers, ``fallback`` is ``dns.fallback``.
    Names are resolved through those servers in that order, as the router's resolver does.
    Each TLS flow is verified against the trust that flow really uses: the broker against
    ``broker_trust`` (the portal link's ``portal.ca_file``; a private portal CA is then no
    interception), S3 against the outbound/system store. Default: both the outbound one.
    """
    timeout = settings.timeout
    s3_trust = outbound_trust(settings)
    broker_trust = broker_trust or s3_trust
    servers = [*dns_servers, *[s for s in fallback if s not in dns_servers]]
    names = {settings.broker_host, settings.update_host, *settings.ntp_servers}
    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        # Stage 1: the DNS rows and the name resolutions, concurrently.
        dns_jobs = [
            (pool.submit(check_dns, s, settings.broker_host, timeout, "dns"), "dns", s)
            for s in dns_servers
        ] + [
            (
                pool.submit(check_dns, s, settings.broker_host, timeout, "dns_fallback"),
                "dns_fallback",
                s,
            )
            for s in fallback
        ]
        resolve_jobs = {n: pool.submit(resolve, n, servers, timeout) for n in sorted(names)}
        rows: list[Row] = []
        if not dns_servers:
            rows.append(Row("dns", "-", False, None, "no DNS server from DHCP or static config"))
        for future, flow, server in dns_jobs:
            rows.append(_result(future, flow, f"{server}:53", timeout * 2))
        resolved: dict[str, tuple[list[str], str]] = {}
        for name, pending in resolve_jobs.items():
            try:
                resolved[name] = pending.result(timeout=timeout * len(servers or [1]) + 1)
            except concurrent.futures.TimeoutError:
                resolved[name] = ([], "DNS did not answer in time")

        # Stage 2: the flows themselves.
        jobs: list[tuple[concurrent.futures.Future[Row] | Row, str, str]] = []

        def submit(flow: str, host: str, port: int | None, fn: Callable[..., Row], *a: Any) -> None:
            addrs, why = resolved.get(host, ([host], "")) if not is_ipv4(host) else ([host], "")
            if not addrs:
                jobs.append((_unresolved(flow, host, port, why), flow, host))
                return
            jobs.append((pool.submit(_call, fn, a, addrs[0]), flow, host))

        for ntp in settings.ntp_servers:
            submit("ntp", ntp, 123, _ntp_adapter, ntp, timeout)
        for port in settings.mqtt_ports:
            if port == 1883:
                submit(
                    "mqtt_plain",
                    settings.broker_host,
                    port,
                    _tcp_adapter,
                    "mqtt_plain",
                    settings.broker_host,
                    port,
                    timeout,
                )
            else:
                submit(
                    "mqtt_tls",
                    settings.broker_host,
                    port,
                    _tls_adapter,
                    "mqtt_tls",
                    settings.broker_host,
                    port,
                    timeout,
                    broker_trust,
                    "the portal link (MQTT over TLS) will fail",
                    client_cert,
                    False,
                )
        jobs.append(
            (
                pool.submit(
                    check_ssh, "gateway", settings.gateway_address, settings.gateway_port, timeout
                ),
                "gateway",
                settings.gateway_address,
            )
        )
        submit(
            "update_http",
            settings.update_host,
            80,
            _http_adapter,
            "update_http",
            settings.update_host,
            80,
            timeout,
        )
        submit(
            "update_https",
            settings.update_host,
            443,
            _tls_adapter,
            "update_https",
            settings.update_host,
            443,
            timeout,
            s3_trust,
            "automatic updates will fail",
            None,
            True,
        )
        flow_rows = [
            job if isinstance(job, Row) else _result(job, flow, host, timeout * 3)
            for job, flow, host in jobs
        ]
    ntp_rows = [r for r in flow_rows if r.flow == "ntp"]
    others = [r for r in flow_rows if r.flow != "ntp"]
    return [*rows, *ntp_rows, clock_row(ntp_rows, kernel_synced()), *others]


def _call(fn: Callable[..., Row], args: tuple[Any, ...], address: str) -> Row:
    return fn(address, *args)


def _ntp_adapter(address: str, host: str, timeout: float) -> Row:
    return check_ntp(host, address, timeout)


def _tcp_adapter(address: str, flow: str, host: str, port: int, timeout: float) -> Row:
    return check_tcp(flow, host, address, port, timeout)


def _http_adapter(address: str, flow: str, host: str, port: int, timeout: float) -> Row:
    return check_http(flow, host, address, port, timeout)


def _tls_adapter(
    address: str,
    flow: str,
    host: str,
    port: int,
    timeout: float,
    trust: Trust,
    consequence: str,
    client_cert: tuple[str, str] | None,
    http_probe: bool,
) -> Row:
    row = check_tls(
        flow, host, address, port, timeout, trust.ca_file, consequence, client_cert, http_probe
    )
    return dataclasses.replace(row, detail={**row.detail, "trust": trust.name})


def _result(future: concurrent.futures.Future[Row], flow: str, target: str, limit: float) -> Row:
    try:
        return future.result(timeout=limit)
    except concurrent.futures.TimeoutError:
        return Row(flow, target, False, None, f"check did not finish within {_secs(limit)}")
    except Exception as exc:  # a bug in one check must not hide the other rows
        return Row(flow, target, False, None, f"check failed: {exc}")


def as_dict(rows: Sequence[Row]) -> dict[str, Any]:
    """JSON for status: the rows and a one-line summary."""
    failed = [r.flow for r in rows if not r.passed]
    return {
        "passed": not failed,
        "failed_flows": failed,
        "rows": [r.as_dict() for r in rows],
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m energyhubd.outbound.diagnose --outbound JSON --dns IP --fallback IP``.

    Prints ``as_dict`` JSON; exit status 0 when every flow passed, 1 otherwise. Used by the
    lab (inside a namespace) and handy on a router's shell.
    """
    import argparse
    import json
    import sys

    from energyhubd.config.sections.outbound import parse_outbound_section

    parser = argparse.ArgumentParser(prog="energyhubd.outbound.diagnose")
    parser.add_argument("--outbound", default="{}", help="the outbound section as JSON")
    parser.add_argument("--dns", action="append", default=[], help="DHCP-provided server")
    parser.add_argument("--fallback", action="append", default=[], help="dns.fallback server")
    parser.add_argument(
        "--broker-ca-file", default=None, help="the portal link's CA (portal.ca_file)"
    )
    args = parser.parse_args(argv)
    settings, errors = parse_outbound_section(json.loads(args.outbound))
    if errors:
        for error in errors:
            print(error, file=sys.stderr)
        return 2
    trust = None if args.broker_ca_file is None else Trust(args.broker_ca_file, "portal.ca_file")
    result = as_dict(run_all(settings, args.dns, args.fallback, broker_trust=trust))
    print(json.dumps(result, indent=1))
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
