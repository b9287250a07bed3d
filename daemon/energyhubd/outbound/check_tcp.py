"""The plain TCP checks: connect, the SSH greeting of the service gateway, an HTTP answer."""

from __future__ import annotations

import socket
import ssl
import time

from . import reasons
from .row import Row, label, ms


def check_tcp(flow: str, host: str, address: str, port: int, timeout: float) -> Row:
    target = label(host, address, port)
    start = time.monotonic()
    try:
        with socket.create_connection((address, port), timeout=timeout):
            pass
    except (TimeoutError, OSError) as exc:
        return Row(flow, target, None, reasons.from_oserror(exc, f"TCP {port} to {host}", timeout))
    return Row(flow, target, ms(start), reasons.ok(f"TCP {port} to {host}: connected"))


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
            return Row(flow, target, None, reasons.from_oserror(TimeoutError(), what, timeout))
    except OSError as exc:
        return Row(flow, target, None, reasons.from_oserror(exc, what, timeout))
    latency = ms(start)
    line = banner.split(b"\n", 1)[0].rstrip(b"\r").decode("ascii", "replace")
    if line.startswith("SSH-2.0-"):
        return Row(flow, target, latency, reasons.ok(f"{what}: SSH server answered ({line[:60]})"))
    if not banner:
        return Row(flow, target, latency, reasons.ssh_no_greeting(what))
    return Row(flow, target, latency, reasons.not_ssh(what, line))


def read_line(sock: socket.socket | ssl.SSLSocket) -> str:
    """The first line the far side sends (at most 1 KiB), without its line end."""
    data = b""
    while b"\n" not in data and len(data) < 1024:
        chunk = sock.recv(1024 - len(data))
        if not chunk:
            break
        data += chunk
    return data.split(b"\n", 1)[0].rstrip(b"\r").decode("latin-1")


def head_request(host: str) -> bytes:
    return f"HEAD / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()


def check_http(flow: str, host: str, address: str, port: int, timeout: float) -> Row:
    """Plain HTTP: any HTTP status line means the server was reached."""
    target = label(host, address, port)
    what = f"TCP {port} to {host}"
    start = time.monotonic()
    try:
        with socket.create_connection((address, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(head_request(host))
            line = read_line(sock)
    except (TimeoutError, OSError) as exc:
        return Row(flow, target, None, reasons.from_oserror(exc, what, timeout))
    latency = ms(start)
    if not line.startswith("HTTP/"):
        return Row(flow, target, latency, reasons.no_http(what))
    why = reasons.ok(f"HTTP to {host}: {line[:60]}")
    return Row(flow, target, latency, why, {"http_status": line})
