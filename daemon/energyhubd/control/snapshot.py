"""The status snapshot: a pure function of the parts' own ``status()`` facts.

The daemon calls ``build_snapshot`` on the event loop after every change and publishes the
result as one immutable value; the control transports and the portal's health report read
it from their own threads without waiting for the loop. Nothing here does I/O: the WAN facts
are the last ones read on a link event, the devices the registry's current view.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from energyhubd.config.model import Config
from energyhubd.policy import nft


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


@dataclass(frozen=True)
class Parts:
    """What each part reported; None where a part does not exist (yet)."""

    version: str
    pid: int
    started: float
    source: str
    config: Config | None
    config_error: list[dict[str, str]] | None
    policy_state: str
    policy_warnings: list[str]
    table: Mapping[str, Any]
    portal: Mapping[str, Any] | None
    state_files: list[dict[str, Any]]  # bad state files found since start (BadStateFiles)
    wan: Mapping[str, Any] | None
    dhcp_server: Mapping[str, Any] | None
    inventory: Mapping[str, Any] | None
    devices: list[dict[str, Any]] | None
    outbound: Mapping[str, Any]
    events: list[dict[str, Any]]
    targets: Mapping[str, Any]


def build_snapshot(p: Parts, now: float) -> dict[str, Any]:
    config = p.config
    table = dict(p.table)
    policy: dict[str, Any] = {"state": p.policy_state, **table}
    if "digest" in table:
        policy["warnings"] = list(p.policy_warnings)
    policy["last_apply"] = iso(table.get("last_apply"))
    policy["last_drift"] = iso(table.get("last_drift"))
    policy["table"] = f"{nft.FAMILY} {nft.TABLE}"
    status: dict[str, Any] = {
        "daemon": {
            "version": p.version,
            "pid": p.pid,
            "started": iso(p.started),
            "uptime_s": int(now - p.started),
            "platform": config.platform if config else None,
        },
        "config": {
            "source": p.source,
            "version": config.version if config else None,
            "device_id": config.device_id if config else None,
            "last_error": p.config_error,
        },
        "policy": policy,
        "portal": _portal(p.portal, p.state_files, config),
    }
    if config is None:
        return status
    status["wan"] = {**(p.wan or {}), "proto": config.wan.proto}
    dhcp = config.lan.dhcp
    status["lan"] = {
        "device": config.lan.device,
        "address": str(config.lan.address),
        "dhcp": {
            "pool": f"{dhcp.start}-{dhcp.end}",
            "pool_size": dhcp.pool_size,
            "lease_time_s": dhcp.lease_seconds,
            "reservations": [
                {"name": r.name, "mac": r.mac, "ip": str(r.ip)} for r in dhcp.reservations
            ],
            "server": dict(p.dhcp_server or {}),
        },
    }
    if p.inventory is not None:
        status["inventory"] = dict(p.inventory)
        status["devices"] = p.devices or []
    status["outbound"] = dict(p.outbound)
    status["events"] = p.events
    status["forwards"] = [
        {
            "name": f.name,
            "proto": f.proto,
            "port": f.port,
            "target": f.target,
            "address": str(p.targets[f.name]) if p.targets.get(f.name) else None,
            "target_port": f.target_port,
            "state": "open" if p.targets.get(f.name) else "closed",
            "allow_from": "any" if f.allow_any_source else [str(n) for n in f.allow_from],
        }
        for f in config.forwards
    ]
    return status


def _portal(
    facts: Mapping[str, Any] | None, state_files: list[dict[str, Any]], config: Config | None
) -> dict[str, Any]:
    """The link's facts, if a link runs, and always the bad state files: they outlive the
    link (a reload may restart or stop it) until the daemon restarts."""
    lines = [dict(line) for line in state_files]
    if facts is None:
        enabled = bool(config and config.portal.enabled)
        return {"enabled": enabled, "connected": False, "state_files": lines}
    return {**facts, "connected_since": iso(facts.get("connected_since")), "state_files": lines}
