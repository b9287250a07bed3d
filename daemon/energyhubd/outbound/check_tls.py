"""The TLS check: a verified handshake (TLS 1.2+, chain and name), and why one failed.

A failed verification is explained from the certificate the far side really presents
(fetched again without verification): its issuer names the device that intercepts, a wrong
name means a redirect, an expired one usually a wrong clock on the router.
"""

from __future__ import annotations

import socket
import ssl
import time
from typing import Any

from . import certinfo, reasons
from .check_tcp import head_request, read_line
from .row import Row, label, ms

TLS_MIN = ssl.TLSVersion.TLSv1_2


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


def verify_failure(
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
        why = reasons.tls_expired(host, message, issuer, consequence)
    elif "hostname mismatch" in message or "ip address mismatch" in message:
        why = reasons.tls_wrong_name(host, issuer, consequence)
    else:
        why = reasons.tls_intercepted(host, issuer, consequence)
    return Row(flow, target, None, why, detail)


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
    target = label(host, address, port)
    start = time.monotonic()
    try:
        ctx = tls_context(ca_file, client_cert)
    except (OSError, ssl.SSLError) as exc:
        return Row(flow, target, None, reasons.trust_store(ca_file, exc))
    try:
        raw = socket.create_connection((address, port), timeout=timeout)
    except (TimeoutError, OSError) as exc:
        return Row(flow, target, None, reasons.from_oserror(exc, f"TCP {port} to {host}", timeout))
    status_line = ""
    try:
        with raw, ctx.wrap_socket(raw, server_hostname=host) as tls:
            version = tls.version() or "?"
            if http_probe:
                tls.sendall(head_request(host))
                status_line = read_line(tls)
    except ssl.SSLCertVerificationError as exc:
        return verify_failure(flow, target, host, address, port, timeout, exc, consequence)
    except ssl.SSLError as exc:
        return Row(
            flow, target, None, reasons.tls_failed(host, str(exc.reason or exc), consequence)
        )
    except (TimeoutError, OSError) as exc:
        return Row(flow, target, None, reasons.from_oserror(exc, f"TLS to {host}", timeout))
    latency = ms(start)
    detail: dict[str, Any] = {"tls_version": version}
    if http_probe:
        detail["http_status"] = status_line
        if not status_line.startswith("HTTP/"):
            return Row(flow, target, latency, reasons.tls_no_http(host), detail)
    why = reasons.ok(f"TLS to {host}: {version}, certificate verified")
    return Row(flow, target, latency, why, detail)
