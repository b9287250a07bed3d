"""The DNS check: one A query over UDP through our own codec, every answer told apart."""

from __future__ import annotations

import ipaddress
import secrets
import socket
import time
from collections.abc import Sequence

from . import dnswire, reasons
from .row import Row, ms


def is_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
        return True
    except ValueError:
        return False


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
                return response, ms(start)


def check_dns(server: str, name: str, timeout: float, flow: str = "dns", port: int = 53) -> Row:
    """Can ``server`` resolve ``name``? Distinguishes timeout, refused, NXDOMAIN, ICMP."""
    target = f"{server}:{port}"
    what = f"DNS server {server}"
    try:
        response, latency = query_a(server, name, timeout, port)
    except ConnectionRefusedError:
        hint = "no DNS service there, or rejected by a firewall"
        return Row(flow, target, None, reasons.port_unreachable(what, port, hint))
    except (TimeoutError, OSError) as exc:
        return Row(flow, target, None, reasons.from_oserror(exc, what, timeout))
    detail = {"rcode": response.rcode_name, "addresses": list(response.addresses)}
    if response.rcode == 5:
        return Row(flow, target, latency, reasons.dns_refused(what, name), detail)
    if response.rcode == 3:
        return Row(flow, target, latency, reasons.dns_nxdomain(what, name), detail)
    if response.rcode != 0:
        return Row(
            flow, target, latency, reasons.dns_failed(what, name, response.rcode_name), detail
        )
    if not response.addresses:
        return Row(flow, target, latency, reasons.dns_no_address(what, name), detail)
    addrs = ", ".join(response.addresses)
    return Row(flow, target, latency, reasons.ok(f"{what} resolved {name} to {addrs}"), detail)


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
