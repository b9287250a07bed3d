"""``energyhubd lab up|check|down|push FILE``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from energyhub_lab import netns
from energyhub_lab import portal as lab_portal
from energyhub_lab.netns import LabError
from energyhub_lab.site import CONFIRM_WINDOW, Site


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "action",
        choices=("up", "check", "down", "push"),
        help="up: build and leave running; check: build, prove, tear down; down: remove "
        "everything; push FILE: publish FILE as the portal's desired configuration",
    )
    parser.add_argument(
        "file",
        nargs="?",
        help="push: a JSON document (the configuration without the device-local keys); "
        "'-' reads standard input; an empty file clears the retained document",
    )
    parser.add_argument(
        "--prefix",
        default=None,
        help="namespace name prefix (default eh; for check: the first free of eh, eh2, eh3, "
        "..., and 'auto' asks for that explicitly)",
    )
    parser.add_argument("--keep", action="store_true", help="check: leave the site running")
    parser.add_argument(
        "--openwrt",
        action="store_true",
        help="check: the router on OpenWrt's own userland (procd, ubus, rpcd, netifd, fw4), "
        "built by scripts/openwrt/build.sh",
    )


def run(argv: list[str]) -> int:
    """``energyhubd lab ARGS`` (dispatched here by the daemon's CLI in a development install)."""
    from energyhubd import logsetup

    parser = argparse.ArgumentParser(prog="energyhubd lab", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    add_arguments(parser)
    # Intermixed: ``lab push --prefix P FILE`` puts the positional FILE after an option,
    # which plain parse_args cannot give to the second positional.
    args, extra = parser.parse_known_args(argv)
    if extra and args.file is None:
        args.file, extra = extra[0], extra[1:]
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    logsetup.setup(args.verbose)
    return main(args)


def _progress(message: str) -> None:
    print(f"lab: {message}", file=sys.stderr, flush=True)


def lab_in_use(prefix: str) -> bool:
    """A lab with this prefix is up: its namespaces exist and its daemon runs."""
    site = Site(prefix=prefix)
    if not site.namespaces():
        return False
    pid = site.daemon_pid()
    return pid is not None and netns.process_alive(pid)


def free_prefix(base: str = "eh", tries: int = 50) -> str:
    """The first of ``eh``, ``eh2``, ``eh3``, ... that no running lab uses."""
    for n in range(1, tries + 1):
        prefix = base if n == 1 else f"{base}{n}"
        if not lab_in_use(prefix):
            return prefix
    raise LabError(f"no free lab prefix among {base}..{base}{tries}")


def main(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        print("energyhubd lab: needs root (it creates network namespaces)", file=sys.stderr)
        return 1
    if args.prefix in (None, "auto"):
        if args.action == "check" or args.prefix == "auto":
            args.prefix = free_prefix()
            note = "" if args.prefix == "eh" else " (eh is in use by a running lab)"
            _progress(f"using prefix {args.prefix}{note}; choose one with --prefix / PREFIX=")
        else:
            args.prefix = "eh"
    if getattr(args, "openwrt", False):
        if args.action != "check":
            print("energyhubd lab: --openwrt goes with check", file=sys.stderr)
            return 2
        return _check_openwrt(args)
    site = Site(prefix=args.prefix)
    if args.action == "down":
        site.down()
        print(f"lab {args.prefix}: removed")
        return 0
    if args.action == "push":
        return _push(site, args.file)
    if args.action == "up":
        try:
            site.up(_progress)
        except LabError as exc:
            print(f"energyhubd lab: {exc}", file=sys.stderr)
            return 1
        print(_how_to_look(site))
        return 0
    from energyhub_lab.checks import render, run_checks

    if lab_in_use(site.prefix):
        print(
            f"energyhubd lab: lab {site.prefix} is up (its daemon runs); use another --prefix "
            f"or 'energyhubd lab down --prefix {site.prefix}'",
            file=sys.stderr,
        )
        return 1
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


def _check_openwrt(args: argparse.Namespace) -> int:
    import shutil
    import tempfile

    from energyhub_lab.checks import render
    from energyhub_lab.openwrt import OpenWrtError, OpenWrtRouter
    from energyhub_lab.openwrt_checks import run_openwrt_checks

    run_dir = Path(tempfile.mkdtemp(prefix=f"energyhub-openwrt-{args.prefix}-"))
    router = OpenWrtRouter(prefix=f"{args.prefix}w", run_dir=run_dir)
    try:
        _progress("building (or reusing) the OpenWrt userland and booting it")
        router.up()
        _progress(f"booted in {router.boot_seconds:.1f} s; run dir {run_dir}")
        results = run_openwrt_checks(router)
        print(render(results))
        if args.keep:
            print(f"left running: nsenter -t {router.procd_pid} -m -u -i -n -p -r -w /bin/ash -l")
        return 0 if all(r.passed for r in results) else 1
    except (OpenWrtError, LabError) as exc:
        print(f"energyhubd lab: {exc}", file=sys.stderr)
        return 1
    finally:
        if not args.keep:
            router.down()
            shutil.rmtree(run_dir, ignore_errors=True)


def _push(site: Site, file: str | None) -> int:
    """Publish as-is: the daemon, not this tool, judges the document (as with the portal)."""
    if file is None:
        print("energyhubd lab push: name a FILE (or '-')", file=sys.stderr)
        return 2
    if not site.namespaces():
        print(f"energyhubd lab push: lab {site.prefix} is not up", file=sys.stderr)
        return 1
    try:
        data = sys.stdin.buffer.read() if file == "-" else Path(file).read_bytes()
    except OSError as exc:
        print(f"energyhubd lab push: {file}: {exc.strerror}", file=sys.stderr)
        return 1
    mark = len(lab_portal.read_messages(site.portal_log, "config/reported"))
    try:
        site.push(data if data.strip() else None)
        if not data.strip():
            print("retained desired configuration cleared")
            return 0
        reported = lab_portal.wait_for_message(
            site.portal_log,
            "config/reported",
            lambda v: isinstance(v, dict) and v.get("state") != "pending_confirm",
            CONFIRM_WINDOW + 20,
            after=mark,
        )
    except LabError as exc:
        print(f"energyhubd lab push: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(reported, indent=2, sort_keys=True))
    return 0 if reported.get("state") in ("applied", "noop") else 1


def _how_to_look(site: Site) -> str:
    venv_bin = os.path.dirname(site.python)
    return "\n".join(
        [
            f"lab {site.prefix} is up (state in {site.dir})",
            f"  {venv_bin}/energyhubctl --socket {site.socket} status",
            f"  ip netns exec {site.router} nft list table inet energyhub",
            f"  ip netns exec {site.ns('scada')} {site.python} -m energyhub_lab.probe connect "
            f"<router WAN address> 502",
            f"  ip netns exec {site.ns('display')} ip addr show eth0",
            f"  energyhubd lab push --prefix {site.prefix} FILE   (as the portal would)",
            f"  portal's view: {site.portal_log}",
            f"  logs: {site.dir}/*.log",
            f"  energyhubd lab down --prefix {site.prefix}",
        ]
    )


def entry() -> int:
    return run(sys.argv[1:])
