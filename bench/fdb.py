"""Bridge FDB watcher benchmark: what a swinging clone of the display's MAC costs.

Two hosts on two ports of a bridge send Ethernet frames with one MAC as fast as they can (a
clone and the display at their worst: every frame moves the bridge's FDB entry, and the
kernel announces each move). For ``--seconds`` s each, in the same run:

1. ``FdbWatcher`` read as ``InventoryMonitor`` reads it: at most once a second, the moves fed
   to a ``DeviceRegistry`` watching the MAC; CPU time of this process, moves decoded, wakes,
   and whether the clone was reported;
2. the floor: the same socket and filter read as often, every message dropped undecoded
   (``recv`` only) - what emptying the queue costs at all.

Run as root: ``.venv/bin/python bench/fdb.py [--json]`` (``make bench``). Namespaces
``ehF<random>*`` are created and removed, also on failure. No assertions: this reports.
"""

from __future__ import annotations

import argparse
import json
import platform
import secrets
import select
import subprocess
import sys
import time
from typing import Any

from energyhubd.inventory.registry import DeviceRegistry
from energyhubd.kernel.fdb import FdbWatcher

MAC = "02:eb:00:00:00:01"
# Frames with the MAC as source, an experimental EtherType (a bridge with br_netfilter drops
# malformed IPv4 before it learns), broadcast so the bridge floods them.
BLAST = """
import socket, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
frame = bytes.fromhex("ffffffffffff02eb0000000188b5") + bytes(46)
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    for _ in range(100):
        s.send(frame)
"""


def sh(*args: str, check: bool = True) -> None:
    subprocess.run(args, check=check, capture_output=True, timeout=30)


def blast(prefix: str, seconds: float) -> list[subprocess.Popen[bytes]]:
    return [
        subprocess.Popen(
            ["ip", "netns", "exec", f"{prefix}h{n}", sys.executable, "-c", BLAST, str(seconds)]
        )
        for n in (1, 2)
    ]


def measure(prefix: str, seconds: float, decode: bool) -> dict[str, Any]:
    router = prefix + "r"
    registry = DeviceRegistry(reservations=[("display", MAC, "192.168.254.200")])
    with FdbWatcher("br0", netns=router) as watcher:
        watcher.watch_macs(registry.watched_macs())
        procs = blast(prefix, seconds)
        start, cpu = time.monotonic(), time.process_time()
        moves = wakes = 0
        reported: float | None = None
        rest = 0.0
        while time.monotonic() - start < seconds + 0.5:
            timeout = max(0.0, rest - time.monotonic())
            if timeout:
                time.sleep(timeout)  # the monitor's rest between reads
            if not select.select([watcher.fileno()], [], [], 0.5)[0]:
                continue
            wakes += 1
            if decode:
                updates = watcher.drain()
                moves += len(updates)
                events = registry.apply_ports(updates, time.time())
                if reported is None and any(e.kind == "duplicate_mac" for e in events):
                    reported = time.monotonic() - start
            else:
                watcher.drain(max_messages=0)
            rest = time.monotonic() + 1.0
        used = time.process_time() - cpu
        for proc in procs:
            proc.wait(10)
        return {
            "cpu_s": round(used, 3),
            "cpu_percent": round(100 * used / (seconds + 0.5), 2),
            "wakes": wakes,
            "moves_decoded": moves,
            "dropped_undecoded": watcher.skipped,
            "overflows": watcher.lost,
            "reported_after_s": None if reported is None else round(reported, 2),
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    prefix = "ehF" + secrets.token_hex(3)
    made: list[str] = []
    try:
        for ns in (prefix + "r", prefix + "h1", prefix + "h2"):
            sh("ip", "netns", "add", ns)
            made.append(ns)
        router = prefix + "r"
        sh("ip", "-n", router, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", router, "link", "set", "br0", "up")
        for n in (1, 2):
            sh("ip", "-n", router, "link", "add", f"p{n}", "type", "veth", "peer", "name",
               "eth0", "address", MAC, "netns", f"{prefix}h{n}")  # fmt: skip
            sh("ip", "-n", router, "link", "set", f"p{n}", "master", "br0", "up")
            sh("ip", "-n", f"{prefix}h{n}", "link", "set", "eth0", "up")
        time.sleep(1.0)  # IPv6 link-up frames settle
        watcher = measure(prefix, args.seconds, decode=True)
        floor = measure(prefix, args.seconds, decode=False)
    finally:
        for ns in made:
            sh("ip", "netns", "del", ns, check=False)
    ratio = watcher["cpu_s"] / floor["cpu_s"] if floor["cpu_s"] else None
    result = {
        "python": platform.python_version(),
        "seconds": args.seconds,
        "watcher": watcher,
        "floor_recv_only": floor,
        "ratio": None if ratio is None else round(ratio, 2),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"two hosts blasting one MAC on two bridge ports, {args.seconds:g} s each")
        print(f"  watcher (as the monitor reads it): {watcher}")
        print(f"  floor (same reads, recv only):     {floor}")
        print(f"  CPU ratio watcher/floor: {result['ratio']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
