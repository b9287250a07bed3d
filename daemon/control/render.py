"""Human-readable rendering of status and device answers (energyhubctl's default output)."""

from __future__ import annotations

from typing import Any


def _duration(seconds: int | None) -> str:
    if seconds is None:
        return "-"
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s"


def render_status(status: dict[str, Any]) -> str:
    d = status.get("daemon", {})
    c = status.get("config", {})
    p = status.get("policy", {})
    lines = [
        f"energyhubd {d.get('version')}  pid {d.get('pid')}  up {_duration(d.get('uptime_s'))}"
        f"  platform {d.get('platform')}",
        f"config    version {c.get('version')}  device {c.get('device_id')}  ({c.get('source')})",
    ]
    if c.get("last_error"):
        errors = "; ".join(f"{e['field']}: {e['reason']}" for e in c["last_error"])
        lines.append(f"          last reload REJECTED, running policy kept: {errors}")
    lines.append(
        f"policy    {p.get('state')}  digest {p.get('digest', '-')}  last apply "
        f"{p.get('last_apply') or '-'} ({p.get('last_apply_ms', '-')} ms)  "
        f"drift repairs {p.get('drift_repairs', 0)}"
    )
    if p.get("last_error"):
        lines.append(f"          error: {p['last_error']}")
    wan = status.get("wan")
    if wan:
        addrs = ", ".join(wan.get("addresses") or []) or "no address"
        lines.append(
            f"wan       {wan.get('device')} ({wan.get('proto')}) link {wan.get('link')}  "
            f"{addrs}  gateway {wan.get('gateway') or '-'}"
        )
    lan = status.get("lan")
    if lan:
        dhcp = lan.get("dhcp", {})
        server = dhcp.get("server", {})
        running = server.get("running")
        state = "" if running is None else (" running" if running else " NOT RUNNING")
        lines.append(
            f"lan       {lan.get('device')} {lan.get('address')}  dhcp {dhcp.get('pool')}"
            f"  lease {_duration(dhcp.get('lease_time_s'))}  {server.get('kind')}{state}"
        )
    inv = status.get("inventory")
    if inv:
        display = inv.get("display") or {}
        shown = f"present {display.get('ip')}" if display.get("present") else "MISSING"
        pool = inv.get("pool", {})
        lines.append(
            f"devices   display {shown}  units {inv.get('units')}"
            f"  unknown {inv.get('unknown_count', 0)}"
            f"  pool {pool.get('used', '-')}/{pool.get('size', '-')}"
        )
    forwards = status.get("forwards")
    if forwards is not None:
        if not forwards:
            lines.append("forwards  none (no inbound port is open)")
        for f in forwards:
            src = f["allow_from"] if f["allow_from"] == "any" else ", ".join(f["allow_from"])
            lines.append(
                f"forward   {f['name']} {f['proto']}/{f['port']} -> {f['target']} "
                f"{f.get('address') or '(absent)'}:{f['target_port']}  {f['state']}"
                f"  from {src}"
            )
    return "\n".join(lines)


def render_devices(result: dict[str, Any]) -> str:
    devices = result.get("devices", [])
    if not devices:
        return "no devices seen on the internal network"
    header = f"{'ROLE':8} {'NAME':20} {'MAC':17} {'IP':15} {'STATE':10} {'LEASE LEFT':10} HOSTNAME"
    rows = [header]
    for dev in devices:
        rows.append(
            f"{dev.get('role', '-'):8} {str(dev.get('name', '-'))[:20]:20} "
            f"{dev.get('mac', '-'):17} "
            f"{dev.get('ip') or '-':15} {dev.get('neighbour_state') or '-':10} "
            f"{_duration(dev.get('lease_remaining_s')):10} {dev.get('hostname') or '-'}"
        )
    return "\n".join(rows)
