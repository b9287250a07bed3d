"""``energyhubd``: the daemon and its admin verbs.

Exit status: 0 success, 1 a runtime failure (kernel refused, daemon unreachable), 2 a bad
configuration or bad arguments (nothing was applied).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from energyhubd import __version__, logsetup, paths
from energyhubd.config.errors import ConfigError
from energyhubd.config.model import Config
from energyhubd.configfile import load_file, parse_document

log = logging.getLogger("energyhubd")

EXIT_OK, EXIT_FAIL, EXIT_CONFIG = 0, 1, 2


def _load(path: str | None) -> Config:
    path = path or paths.default_config_path()
    if path is None:
        return parse_document({}, "built-in defaults")
    return load_file(path)


def cmd_plan(args: argparse.Namespace) -> int:
    from energyhubd.policy import nft

    config = _load(args.config)
    print(json.dumps(nft.compile_ruleset(config), indent=2))
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    from energyhubd.policy import nft

    config = _load(args.config)
    lan, dhcp = config.lan, config.lan.dhcp
    wan = config.wan
    print(
        f"configuration OK: version {config.version}, device {config.device_id}, "
        f"platform {config.platform}"
    )
    wan_text = (
        f"{wan.device} by DHCP"
        if wan.proto == "dhcp"
        else (f"{wan.device} static {wan.address} via {wan.gateway}")
    )
    print(f"  WAN      {wan_text}")
    print(
        f"  LAN      {lan.device} {lan.address}, DHCP {dhcp.start}-{dhcp.end}, "
        f"lease {dhcp.lease_seconds // 3600}h{(dhcp.lease_seconds % 3600) // 60:02d}m"
    )
    for r in dhcp.reservations:
        print(f"  reserve  {r.name} {r.ip} ({r.mac or 'by host name ' + r.name})")
    targets = nft.resolve_targets(config)
    for f in config.forwards:
        src = "any source" if f.allow_any_source else ", ".join(str(n) for n in f.allow_from)
        where = targets.get(f.name)
        print(
            f"  forward  {f.name} {f.proto}/{f.port} -> {f.target}"
            f"{' (' + str(where) + ')' if where else ' (follows the device)'}:{f.target_port}"
            f" from {src}"
        )
    if not config.forwards:
        print("  inbound  closed: no port forwards")
    print(f"  egress   {config.egress_mode}; NAT masquerade {lan.address.network} -> {wan.device}")
    print(f"  ruleset  digest {nft.digest(nft.compile_ruleset(config))}")
    return EXIT_OK


def cmd_apply(args: argparse.Namespace) -> int:
    from energyhubd.inventory.monitor import lease_addresses, lease_file_for
    from energyhubd.kernel.apply import apply_policy
    from energyhubd.kernel.netlink import Netlink
    from energyhubd.kernel.table import NftError, Table
    from energyhubd.policy import nft

    config = _load(args.config)
    # Forwards that follow a device resolve from the current leases, as the daemon does.
    live = lease_addresses(lease_file_for(config))
    ruleset = nft.compile_ruleset(config, nft.resolve_targets(config, live))
    try:
        outcome = apply_policy(config, ruleset, Table(), Netlink())
    except NftError as exc:
        print(f"energyhubd: nftables refused the policy, nothing changed: {exc}", file=sys.stderr)
        return EXIT_FAIL
    state = "applied" if outcome.changed else "unchanged (kernel already matches)"
    print(f"policy {state}: digest {outcome.digest}, {outcome.seconds * 1000:.1f} ms")
    return EXIT_OK


def cmd_flush(_args: argparse.Namespace) -> int:
    from energyhubd.kernel.table import Table

    Table().delete()
    print("table inet energyhub removed")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from energyhubd import lean, memory

    lean.install()  # before the libraries load: leaves out the parts the daemon never uses
    memory.one_arena()  # before any thread: see energyhubd.memory
    from energyhubd.kernel.table import NftError
    from energyhubd.service import Daemon

    config_path = args.config or paths.default_config_path()
    if args.wan_dhcp and not args.resolv_file:
        log.error("--wan-dhcp needs --resolv-file (where the client writes the WAN's DNS servers)")
        return EXIT_CONFIG
    daemon = Daemon(
        config_path, pid_file=args.pid_file, resolv_file=args.resolv_file, wan_dhcp=args.wan_dhcp
    )
    try:
        daemon.start()
    except NftError as exc:
        log.error("nftables refused the policy: %s", exc)
        daemon.shutdown()
        return EXIT_FAIL
    except ConfigError:
        daemon.shutdown()
        raise
    daemon.run()
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="energyhubd", description=__doc__)
    parser.add_argument("--version", action="version", version=f"energyhubd {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "--config",
            "-c",
            help="configuration file (JSON or UCI); default: "
            f"{paths.OPENWRT_CONFIG} on OpenWrt, {paths.LINUX_CONFIG} elsewhere",
        )
        return p

    with_config(
        sub.add_parser("plan", help="print the nftables JSON that would be applied")
    ).set_defaults(func=cmd_plan)
    with_config(
        sub.add_parser("check", help="validate and summarise the configuration")
    ).set_defaults(func=cmd_check)
    with_config(
        sub.add_parser("apply", help="apply the policy once in this network namespace")
    ).set_defaults(func=cmd_apply)
    sub.add_parser("flush", help="remove energyhubd's nftables table").set_defaults(func=cmd_flush)
    run = with_config(sub.add_parser("run", help="run the daemon"))
    run.add_argument("--pid-file", default=paths.PID_FILE)
    run.add_argument(
        "--resolv-file",
        default=None,
        help="upstream DNS servers written by the WAN DHCP client (linux)",
    )
    run.add_argument(
        "--wan-dhcp",
        action="store_true",
        help="linux, wan.proto dhcp: run the WAN DHCP client (udhcpc) under the daemon; it "
        "writes --resolv-file",
    )
    run.set_defaults(func=cmd_run)
    sub.add_parser(
        "lab", help="development installs only: a whole EnergyHub site in network namespaces"
    )
    return parser


def run_lab(argv: list[str]) -> int:
    """``energyhubd lab …`` belongs to the development install (package ``energyhub_lab``).

    The router package does not contain the lab, so it is found only when asked for: the
    daemon's start never imports it.
    """
    try:
        from energyhub_lab import cli as lab_cli
    except ImportError:
        print(
            "energyhubd lab: the lab is a development tool and is not installed here "
            "(make setup installs it from lab/)",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    code: int = lab_cli.run(argv)
    return code


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["lab"]:
        return run_lab(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    logsetup.setup(args.verbose)
    try:
        code: int = args.func(args)
        return code
    except ConfigError as exc:
        print(
            f"energyhubd: configuration rejected, nothing applied:\n{exc.render()}", file=sys.stderr
        )
        return EXIT_CONFIG
    except PermissionError as exc:
        print(f"energyhubd: {exc} (this command needs root or CAP_NET_ADMIN)", file=sys.stderr)
        return EXIT_FAIL
    except KeyboardInterrupt:
        return EXIT_FAIL


if __name__ == "__main__":
    sys.exit(main())
