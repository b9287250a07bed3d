"""The NTP check (one SNTP exchange per server) and the verdict on the router's clock."""

from __future__ import annotations

import socket
import time
from collections.abc import Sequence
from typing import Any

from . import reasons, sntp
from .row import Row, ms

CLOCK_TOLERANCE = 1.0  # seconds; the portal shows data wrongly well beyond this


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
        return Row("ntp", target, None, reasons.port_unreachable(what, port))
    except (TimeoutError, OSError) as exc:
        return Row("ntp", target, None, reasons.from_oserror(exc, f"UDP {port} to {what}", timeout))
    latency = ms(start)
    offset, delay = sntp.offset_and_delay(reply, t1, t4)
    detail = {"stratum": reply.stratum, "offset_s": round(offset, 6), "delay_s": round(delay, 6)}
    if reply.unsynchronised:
        return Row("ntp", target, latency, reasons.ntp_unsynchronised(what, reply.stratum), detail)
    said = f"{what} answered: stratum {reply.stratum}, our clock is {offset:+.3f} s off"
    return Row("ntp", target, latency, reasons.ok(said), detail)


def clock_row(ntp_rows: Sequence[Row], kernel_synced: bool | None) -> Row:
    """Is the router's clock right? By the offset to a reachable server, else by the kernel."""
    offsets = [r.detail["offset_s"] for r in ntp_rows if r.passed]
    detail: dict[str, Any] = {"kernel_synchronised": kernel_synced}
    if offsets:
        offset = min(offsets, key=abs)
        detail["offset_s"] = offset
        if abs(offset) <= CLOCK_TOLERANCE:
            why = reasons.ok(f"clock synchronised ({offset:+.3f} s)")
        else:
            why = reasons.clock_off(offset)
        return Row("clock", "local", None, why, detail)
    if kernel_synced:
        return Row("clock", "local", None, reasons.ok("clock synchronised (kernel flag)"), detail)
    return Row("clock", "local", None, reasons.clock_unconfirmed(), detail)
