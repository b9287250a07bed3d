"""``energyhubd lab up|check|down|status``."""

from __future__ import annotations

import argparse
import os
import sys

from energyhubd.lab.netns import LabError
from energyhubd.lab.site import Site


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "action",
        choices=("up", "check", "down"),
        help="up: build and leave running; check: build, prove, tear down; down: remove everything",
    )
    parser.add_argument("--prefix", default="eh", help="namespace name prefix (default eh)")
    parser.add_argument("--keep", action="store_true", help="check: leave the site running")


def _progress(message: str) -> None:
    print(f"lab: {message}", file=sys.stderr, flush=True)


def main(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        print("energyhubd lab: needs root (it creates network namespaces)", file=sys.stderr)
        return 1
    site = Site(prefix=args.prefix)
    if args.action == "down":
        site.down()
        print(f"lab {args.prefix}: removed")
        return 0
    if args.action == "up":
        try:
            site.up(_progress)
        except LabError as exc:
            print(f"energyhubd lab: {exc}", file=sys.stderr)
            return 1
        print(_how_to_look(site))
        return 0
    from energyhubd.lab.checks import render, run_checks

    if site.namespaces():
        site.down()  # a leftover from a crashed run
    try:
        site.up(_progress)
        results = run_checks(site)
        print(render(results))
        return 0 if all(r.passed for r in results) else 1
    except LabError as exc:
        print(f"energyhubd lab: {exc}", file=sys.stderr)
        return 1
    finally:
        if not args.keep:
            site.down()


def _how_to_look(site: Site) -> str:
    venv_bin = os.path.dirname(site.python)
    return "\n".join(
        [
            f"lab {site.prefix} is up (state in {site.dir})",
            f"  {venv_bin}/energyhubctl --socket {site.socket} status",
            f"  ip netns exec {site.router} nft list table inet energyhub",
            f"  ip netns exec {site.ns('scada')} {site.python} -m energyhubd.lab.probe connect "
            f"<router WAN address> 502",
            f"  ip netns exec {site.ns('display')} ip addr show eth0",
            f"  logs: {site.dir}/*.log",
            f"  energyhubd lab down --prefix {site.prefix}",
        ]
    )
