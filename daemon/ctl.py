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
from energyhubd.control.render import render_devices, render_status

UBUS_SOCKET = "/var/run/ubus/ubus.sock"


def _socket_path(args: argparse.Namespace) -> str:
    if args.socket:
        return str(args.socket)
    from energyhubd import paths
    from energyhubd.config.errors import ConfigError
    from energyhubd.config.load import load_file

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
    args: argparse.Namespace, method: str, params: dict[str, Any] | None = None
) -> dict[str, Any]:
    if _use_ubus(args):
        from energyhubd.control.ubus_client import call_ubus

        return call_ubus(method, params or {})
    return call(_socket_path(args), method, params)


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
    args = parser.parse_args(argv)
    try:
        result = invoke(args, args.command)
    except ControlError as exc:
        print(f"energyhubctl: {exc}", file=sys.stderr)
        return 1
    if args.command == "reload":
        return _report_reload(result)
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
