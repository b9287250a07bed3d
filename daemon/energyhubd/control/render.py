"""Human-readable rendering of status and device answers (energyhubctl's default output)."""

from __future__ import annotations

import time
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
    for bad in (status.get("portal") or {}).get("state_files") or []:
        where = f"moved to {bad['moved_to']}" if bad.get("moved_to") else "ignored"
        then = "from the local configuration" if bad["file"] == "last-good.json" else "without it"
        lines.append(
            f"state     {bad['directory']}/{bad['file']} was bad at start ({bad['reason']}); "
            f"{where}; started {then}"
        )
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
        lines.append(f"devices   {render_summary(inv)}")
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
    outbound = status.get("outbound")
    if outbound:
        lines += render_outbound(outbound)
    return "\n".join(lines)


def _latency(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms" if value >= 10 else f"{value:.1f} ms"


def render_outbound(outbound: dict[str, Any]) -> list[str]:
    """Status lines: last diagnostics verdict, the egress mode with drops, the tunnel."""
    lines: list[str] = []
    diag = outbound.get("diagnostics") or {}
    last = diag.get("last")
    state = diag.get("state", "idle")
    busy = f" ({state})" if state != "idle" else ""
    if not last:
        lines.append(f"outbound  not diagnosed yet{busy}")
    elif last.get("passed"):
        lines.append(
            f"outbound  all {len(last.get('rows', []))} checks pass  "
            f"({last.get('at')}, {last.get('trigger')}){busy}"
        )
    else:
        lines.append(
            f"outbound  FAILING {', '.join(last.get('failed_flows') or ['?'])}  "
            f"({last.get('at')}, {last.get('trigger')}){busy}"
        )
        for row in last.get("rows", []):
            if not row.get("passed"):
                lines.append(f"          {row.get('flow')}: {row.get('reason')}")
        if last.get("error"):
            lines.append(f"          {last['error']}")
    egress = outbound.get("egress") or {}
    if egress.get("mode") == "allowlist":
        drops = egress.get("drops") or {}
        parts = []
        for side in ("router", "lan"):
            counted = {f: n for f, n in (drops.get(side) or {}).items() if n}
            if counted:
                parts.append(f"{side} " + ", ".join(f"{f} {n}" for f, n in sorted(counted.items())))
        lines.append(
            f"egress    allowlist  broker {', '.join(egress.get('broker_addresses') or []) or '-'}"
            f"  dns {', '.join(egress.get('dns_servers') or []) or '-'}"
            f"  s3 {egress.get('s3_prefixes', 0)} prefixes"
        )
        lines.append(f"          dropped: {'; '.join(parts) if parts else 'nothing'}")
        for key in ("broker_error", "ip_ranges_error", "sets_error"):
            if egress.get(key):
                lines.append(f"          {key.replace('_', ' ')}: {egress[key]}")
    else:
        lines.append("egress    open")
    tunnel = outbound.get("tunnel") or {}
    text = f"tunnel    {tunnel.get('mode', 'disabled')}"
    if tunnel.get("mode", "disabled") != "disabled":
        text += f" {tunnel.get('state')}  {tunnel.get('gateway')}"
        text += f"  restarts {tunnel.get('restarts')}"
        if tunnel.get("expires_in_s") is not None:
            text += f"  expires in {_duration(tunnel['expires_in_s'])}"
        if tunnel.get("last_exit"):
            text += f"  last exit: {tunnel['last_exit']}"
    lines.append(text)
    return lines


def render_tunnel(result: dict[str, Any]) -> str:
    """The ``tunnel`` answer: what the supervisor does now, in one line."""
    tunnel = result.get("tunnel") or {}
    text = (
        f"tunnel {tunnel.get('mode', '-')} {tunnel.get('state', '-')}  "
        f"gateway {tunnel.get('gateway', '-')}  remote port {tunnel.get('remote_port', '-')}"
    )
    if tunnel.get("pid"):
        text += f"  pid {tunnel['pid']}"
    if tunnel.get("expires_in_s") is not None:
        text += f"  closes in {_duration(tunnel['expires_in_s'])}"
    if result.get("action") == "close" and tunnel.get("last_exit"):
        text += f"  ({tunnel['last_exit']})"
    return text


def render_diagnose(result: dict[str, Any]) -> str:
    """The ``diagnose`` answer as a table: flow, result, latency, reason."""
    if "rows" not in result:  # --no-wait: the run was only requested
        return (
            f"diagnostics run {result.get('run')} {result.get('state', 'requested')}; "
            "see 'energyhubctl status' for its result"
        )
    rows = result.get("rows") or []
    lines = [
        f"diagnostics run {result.get('run')} at {result.get('at')} "
        f"({result.get('seconds')} s); DNS servers "
        f"{', '.join(result.get('dns_servers') or []) or 'none'} ({result.get('dns_source')}), "
        f"fallback {', '.join(result.get('fallback') or []) or 'none'}",
        f"{'FLOW':13} {'RESULT':6} {'LATENCY':>8}  REASON",
    ]
    for row in rows:
        lines.append(
            f"{row.get('flow', '-'):13} {'PASS' if row.get('passed') else 'FAIL':6} "
            f"{_latency(row.get('latency_ms')):>8}  {row.get('reason')}"
        )
    if result.get("error"):
        lines.append(f"error: {result['error']}")
    failed = result.get("failed_flows") or []
    lines.append(
        "all flows pass" if result.get("passed") else f"FAILING: {', '.join(dict.fromkeys(failed))}"
    )
    return "\n".join(lines)


def render_summary(inv: dict[str, Any]) -> str:
    display = inv.get("display") or {}
    shown = f"present {display.get('ip')}" if display.get("present") else "MISSING"
    units = inv.get("units") or {}
    unknown = inv.get("unknown") or {}
    pool = inv.get("pool") or {}
    text = (
        f"display {shown}  units {units.get('text', '-')}  unknown {unknown.get('count', 0)}"
        f"  pool {pool.get('used', '-')}/{pool.get('size', '-')} ({pool.get('percent', '-')}%)"
    )
    if inv.get("identifying"):
        text += f"  identifying {inv['identifying']}"
    for conflict in inv.get("conflicts") or []:
        text += f"  CONFLICT {conflict['ip']} claimed by {', '.join(conflict['macs'])}"
    for dup in inv.get("duplicates") or []:
        text += f"  DUPLICATE MAC {dup['mac']} ({dup['name']}) at {', '.join(dup['ips'])}"
        if dup.get("evidence"):
            text += f": {dup['evidence']}"
    if pool.get("exhausted"):
        text += "  POOL EXHAUSTED: new devices get no address"
    return text


def render_devices(result: dict[str, Any], now: float | None = None) -> str:
    """A table of devices; every string from a device went through the sanitiser already."""
    devices = result.get("devices", [])
    summary = result.get("summary") or {}
    lines = [render_summary(summary)] if summary else []
    if not devices:
        lines.append("no devices seen on the internal network")
        return "\n".join(lines)
    now = time.time() if now is None else now
    lines.append(
        f"{'ROLE':8} {'NAME':20} {'MAC':17} {'IP':15} {'PRESENT':7} {'NEIGHBOUR':10} "
        f"{'LEASE LEFT':10} HOSTNAME"
    )
    for dev in devices:
        expiry = dev.get("lease_expiry")
        left = _duration(int(expiry - now)) if expiry else "-"
        lines.append(
            f"{dev.get('role') or '-':8} {str(dev.get('name') or '-')[:20]:20} "
            f"{dev.get('mac') or '-':17} {dev.get('ip') or '-':15} "
            f"{'yes' if dev.get('present') else 'no':7} {dev.get('neighbour') or '-':10} "
            f"{left:10} {dev.get('hostname') or '-'}"
        )
    return "\n".join(lines)
