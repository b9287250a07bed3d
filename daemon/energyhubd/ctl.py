"""``energyhubctl``: query a running energyhubd.

Uses ubus on OpenWrt (``ubus call energyhub <method>``) and the local control socket
elsewhere; both reach the same method table, so the output is the same.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from energyhubd.control.client import ControlError, call
from energyhubd.control.render import (
    render_devices,
    render_diagnose,
    render_status,
    render_tunnel,
)

UBUS_SOCKET = "/var/run/ubus/ubus.sock"
EXIT_FLOW_FAILED = 3


def _socket_path(args: argparse.Namespace) -> str:
    if args.socket:
        return str(args.socket)
    from energyhubd import paths
    from energyhubd.config.errors import ConfigError
    from energyhubd.configfile import load_file

    path = args.config or paths.default_config_path()
    if path:
        try:
            return load_file(path).control_socket
        except ConfigError:
            pass
    from energyhubd.config.model import DEFAULT_SOCKET

    return DEFAULT_SOCKET


def _use_ubus(args: argparse.Namespace) -> bool:
    if args.socket or args.config or not os.path.exists(UBUS_SOCKET):
        return False
    try:
        import ubus  # noqa: F401  (python3-ubus, OpenWrt only)
    except ImportError:
        return False
    return True


def invoke(
    args: argparse.Namespace,
    method: str,
    params: dict[str, Any] | None = None,
    timeout: float = 35.0,
) -> dict[str, Any]:
    if _use_ubus(args):
        from energyhubd.control.ubus_client import call_ubus

        return call_ubus(method, params or {}, timeout)
    return call(_socket_path(args), method, params, timeout=timeout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="energyhubctl", description=__doc__)
    parser.add_argument("--socket", "-s", help="control socket of the daemon")
    parser.add_argument("--config", "-c", help="read the socket path from this configuration")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("status", "daemon, policy, WAN, LAN and forwards"),
        ("devices", "devices on the internal network"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("--json", action="store_true", help="machine-readable output")
    sub.add_parser("config", help="the running configuration (secrets redacted)")
    sub.add_parser("reload", help="re-read the configuration and apply it")
    diag = sub.add_parser(
        "diagnose",
        help="check every required outbound flow (exit 0 all pass, 3 a flow fails)",
    )
    diag.add_argument("--json", action="store_true", help="machine-readable output")
    diag.add_argument("--timeout", type=int, default=60, help="seconds to wait (1-300)")
    diag.add_argument("--no-wait", action="store_true", help="start a run and return; see status")
    tunnel = sub.add_parser("tunnel", help="open or close the support tunnel to the gateway")
    actions = tunnel.add_subparsers(dest="action", required=True)
    opener = actions.add_parser("open", help="open it (on demand: for --hours, then it closes)")
    opener.add_argument(
        "--hours", type=float, help="hours until it closes (default outbound.tunnel.expiry_hours)"
    )
    actions.add_parser("close", help="close it now")
    for p in (opener, actions.choices["close"]):
        p.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args(argv)
    params: dict[str, Any] = {}
    timeout = 35.0
    if args.command == "diagnose":
        params = {"wait": not args.no_wait, "timeout": args.timeout}
        timeout = args.timeout + 10.0
    if args.command == "tunnel":
        params = {"action": args.action}
        if getattr(args, "hours", None) is not None:
            params["hours"] = args.hours
    try:
        result = invoke(args, args.command, params, timeout)
    except ControlError as exc:
        print(f"energyhubctl: {exc}", file=sys.stderr)
        return 1
    if args.command == "reload":
        return _report_reload(result)
    if args.command == "diagnose":
        print(
            json.dumps(result, indent=2, sort_keys=True) if args.json else render_diagnose(result)
        )
        return 0 if result.get("passed", True) else EXIT_FLOW_FAILED
    if args.command == "tunnel" and not args.json:
        print(render_tunnel(result))
        return 0
    if args.command == "config" or getattr(args, "json", False):
        print(json.dumps(result, indent=2, sort_keys=True))
    elif args.command == "status":
        print(render_status(result))
    else:
        print(render_devices(result))
    return 0


def _report_reload(result: dict[str, Any]) -> int:
    if result.get("applied"):
        print(
            f"configuration version {result.get('version')} applied (digest {result.get('digest')})"
        )
        return 0
    print("energyhubctl: reload rejected, the running policy is kept:", file=sys.stderr)
    for error in result.get("errors", []):
        field = f"{error.get('field')}: " if error.get("field") else ""
        print(f"  {field}{error.get('reason')}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
