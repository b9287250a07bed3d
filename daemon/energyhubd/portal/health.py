"""The compact health report, built from the daemon's published status snapshot (pure).

Small on purpose: it travels over the customer's uplink every few minutes for years.
"""

from __future__ import annotations

import os
from typing import Any


def _meminfo() -> dict[str, int]:
    values: dict[str, int] = {}
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                key, _, rest = line.partition(":")
                if key in ("MemTotal", "MemAvailable"):
                    values[key] = int(rest.split()[0])
    except OSError:
        pass
    return values


def _own_rss_kib() -> int | None:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def system_facts() -> dict[str, Any]:
    mem = _meminfo()
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = []
    return {
        "load": load,
        "mem_total_kib": mem.get("MemTotal"),
        "mem_available_kib": mem.get("MemAvailable"),
        "rss_kib": _own_rss_kib(),
    }


def significant(status: dict[str, Any]) -> tuple[Any, ...]:
    """What makes a health report worth sending before its interval is up."""
    inv = status.get("inventory") or {}
    wan = status.get("wan") or {}
    policy = status.get("policy") or {}
    return (
        (inv.get("display") or {}).get("present"),
        (inv.get("units") or {}).get("online"),
        (inv.get("unknown") or {}).get("count"),
        wan.get("link"),
        tuple(wan.get("addresses") or ()),
        wan.get("gateway"),
        policy.get("state"),
        policy.get("digest"),
        policy.get("drift_repairs"),
        # A required outbound flow starts or stops failing (not every drop counter tick).
        tuple(sorted(((status.get("outbound") or {}).get("health") or {}).get("failed") or ())),
    )


def build_health(
    status: dict[str, Any], link: dict[str, Any], clock: dict[str, Any] | None = None
) -> dict[str, Any]:
    daemon = status.get("daemon") or {}
    wan = status.get("wan") or {}
    inv = status.get("inventory") or {}
    policy = status.get("policy") or {}
    config = status.get("config") or {}
    return {
        "uptime_s": daemon.get("uptime_s"),
        "version": daemon.get("version"),
        **system_facts(),
        "wan": {
            "device": wan.get("device"),
            "link": wan.get("link"),
            "addresses": wan.get("addresses"),
            "gateway": wan.get("gateway"),
            "dns": wan.get("dns"),
        },
        "lan": {
            "display_present": (inv.get("display") or {}).get("present"),
            "display_ip": (inv.get("display") or {}).get("ip"),
            "units": (inv.get("units") or {}).get("text"),
            "unknown_devices": (inv.get("unknown") or {}).get("count"),
            "pool_percent": (inv.get("pool") or {}).get("percent"),
        },
        "policy": {
            "config_version": config.get("version"),
            "state": policy.get("state"),
            "digest": policy.get("digest"),
            "last_apply": policy.get("last_apply"),
            "last_apply_ms": policy.get("last_apply_ms"),
            "drift_repairs": policy.get("drift_repairs"),
        },
        "portal": link,
        "outbound": (status.get("outbound") or {}).get("health"),
        "clock": clock or {"synchronised": None},
    }
