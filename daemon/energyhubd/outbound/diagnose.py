"""Diagnostics for every outbound flow the network document requires.

Each check returns a ``Row`` whose reason is a sentence a customer's IT department can act
on ("TCP 2443 to 52.29.33.74: no answer within 5 s (filtered)") with its stable code
(``reasons``). Names are resolved through our own DNS codec against the servers the router
really uses (DHCP-provided, then the fallback), so the checks test the same path the daemon
depends on. Every check is bounded by ``timeout``; ``run_all`` runs them concurrently and
never takes much longer than a few timeouts, so the diagnostics can run on a schedule without
hammering anything. The checks live by protocol in ``check_dns``, ``check_ntp``,
``check_tcp`` and ``check_tls``; this module runs them and is their public face.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from energyhubd.config.sections.outbound import OutboundSettings

from . import reasons, sntp
from .check_dns import check_dns, is_ipv4, query_a, resolve
from .check_ntp import CLOCK_TOLERANCE, check_ntp, clock_row
from .check_tcp import check_http, check_ssh, check_tcp
from .check_tls import TLS_MIN, check_tls, presented_certificate, tls_context
from .row import Row

__all__ = [
    "CLOCK_TOLERANCE",
    "FLOWS",
    "TLS_MIN",
    "Row",
    "Trust",
    "as_dict",
    "check_dns",
    "check_http",
    "check_ntp",
    "check_ssh",
    "check_tcp",
    "check_tls",
    "clock_row",
    "is_ipv4",
    "outbound_trust",
    "presented_certificate",
    "query_a",
    "resolve",
    "run_all",
    "tls_context",
]

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


# -- all of it -------------------------------------------------------------------------------


def _unresolved(flow: str, host: str, port: int | None, why: str) -> Row:
    target = f"{host}:{port}" if port else host
    return Row(flow, target, None, reasons.unresolved(host, why))


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
            missing = reasons.other("no DNS server from DHCP or static config")
            rows.append(Row("dns", "-", None, missing))
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
        late = reasons.other(f"check did not finish within {reasons.seconds(limit)}")
        return Row(flow, target, None, late)
    except Exception as exc:  # a bug in one check must not hide the other rows
        return Row(flow, target, None, reasons.other(f"check failed: {exc}"))


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
