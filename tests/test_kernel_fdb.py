"""The bridge FDB watcher against a real kernel: a bridge in a namespace, hosts on its ports."""

from __future__ import annotations

import secrets
import select
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from energyhubd.kernel.fdb import MAX_WATCHED_MACS, FdbWatcher, fdb_filter

pytestmark = [pytest.mark.netns, pytest.mark.feed]

ROUTER_IP = "192.168.254.1"
WATCHED = "02:eb:00:00:00:01"


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, check=check, capture_output=True, text=True, timeout=30)


def test_filter_fits_classic_bpf_jumps() -> None:
    """Every jump offset fits in 8 bits even with the most MACs watched."""
    macs = [f"02:eb:00:00:00:{n:02x}" for n in range(MAX_WATCHED_MACS + 5)]
    program = fdb_filter(macs)
    assert len(program) == 8 * (6 + 4 * MAX_WATCHED_MACS + 2)


@dataclass
class BridgeLab:
    router: str
    bridge: str
    hosts: list[tuple[str, str]]  # (namespace, its port's name in the router namespace)


@pytest.fixture
def bridge_lab() -> Iterator[BridgeLab]:
    """A router namespace whose LAN is a bridge with two ports, one host namespace on each."""
    prefix = "ehT" + secrets.token_hex(3)
    router = prefix + "r"
    hosts = [(prefix + "h1", prefix + "p1"), (prefix + "h2", prefix + "p2")]
    made = [router]
    try:
        sh("ip", "netns", "add", router)
        sh("ip", "-n", router, "link", "add", prefix + "br", "type", "bridge")
        sh("ip", "-n", router, "addr", "add", f"{ROUTER_IP}/24", "dev", prefix + "br")
        sh("ip", "-n", router, "link", "set", prefix + "br", "up")
        for n, (ns, port) in enumerate(hosts):
            sh("ip", "netns", "add", ns)
            made.append(ns)
            sh("ip", "-n", router, "link", "add", port, "type", "veth",
               "peer", "name", "eth0", "netns", ns)  # fmt: skip
            sh("ip", "-n", router, "link", "set", port, "master", prefix + "br", "up")
            sh("ip", "-n", ns, "addr", "add", f"192.168.254.{20 + n}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
        yield BridgeLab(router, prefix + "br", hosts)
    finally:
        for ns in made:
            sh("ip", "netns", "del", ns, check=False)


def test_bridge_port_moves_of_a_watched_mac_are_reported(bridge_lab: BridgeLab) -> None:
    """Two hosts with one MAC on two bridge ports: every frame from the other one moves the
    bridge's FDB entry, and the kernel's announcement of each move reaches the watcher."""
    watched = WATCHED
    for ns, _port in bridge_lab.hosts:
        sh("ip", "-n", ns, "link", "set", "eth0", "address", watched)
    with FdbWatcher(bridge_lab.bridge, netns=bridge_lab.router) as watcher:
        watcher.watch_macs([watched])
        seen: list[str] = []
        for _round in range(3):
            for ns, _port in bridge_lab.hosts:
                sh("ip", "netns", "exec", ns, "ping", "-c", "1", "-W", "1", ROUTER_IP, check=False)
                while select.select([watcher.fileno()], [], [], 0.5)[0]:
                    seen += [u.port for u in watcher.drain() if u.mac == watched]
        ports = [port for _ns, port in bridge_lab.hosts]
        collapsed = [p for i, p in enumerate(seen) if i == 0 or seen[i - 1] != p]
        assert collapsed[-4:] == ports * 2, seen


def test_bridge_entries_of_other_macs_do_not_wake_the_watcher(bridge_lab: BridgeLab) -> None:
    """The socket filter keeps FDB news of unwatched MACs (a MAC flood) in the kernel."""
    with FdbWatcher(bridge_lab.bridge, netns=bridge_lab.router) as watcher:
        watcher.watch_macs([WATCHED])
        for n in range(20):
            sh("ip", "netns", "exec", bridge_lab.router, "bridge", "fdb", "add",
               f"02:66:00:00:00:{n:02x}", "dev", bridge_lab.hosts[0][1], "master")  # fmt: skip
        assert select.select([watcher.fileno()], [], [], 0.5)[0] == []
        sh("ip", "netns", "exec", bridge_lab.router, "bridge", "fdb", "add",
           WATCHED, "dev", bridge_lab.hosts[1][1], "master")  # fmt: skip
        assert select.select([watcher.fileno()], [], [], 5)[0] != []
        moves = watcher.drain()
        assert [(u.mac, u.port) for u in moves] == [(WATCHED, bridge_lab.hosts[1][1])]
