"""Neighbour watching against a real kernel, in namespaces these tests create and remove.

Namespace ``<p>r`` plays the router (the watcher's side), ``<p>d`` a device on the LAN; they
are joined by a veth pair. Neighbour timers in the router namespace are shortened so that
REACHABLE -> STALE -> FAILED takes seconds, not minutes.
"""

from __future__ import annotations

import secrets
import select
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from energyhubd.inventory.neighbour import NeighbourUpdate
from energyhubd.inventory.registry import DeviceRegistry
from energyhubd.kernel.neighbours import NeighbourWatcher

pytestmark = [pytest.mark.netns, pytest.mark.feed]

ROUTER_IP = "192.168.254.1"
DEVICE_IP = "192.168.254.201"


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, check=check, capture_output=True, text=True, timeout=30)


@dataclass
class Lab:
    router: str
    device: str
    lan_if: str
    dev_if: str
    device_mac: str

    def in_router(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", self.router, *cmd, check=check)

    def in_device(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", self.device, *cmd, check=check)

    def recreate_link(self) -> None:
        """(Re)create the veth pair: addresses, a fixed device MAC, short neighbour timers."""
        sh(
            "ip", "-n", self.router, "link", "add", self.lan_if, "type", "veth",
            "peer", "name", self.dev_if, "netns", self.device,
        )  # fmt: skip
        sh("ip", "-n", self.router, "addr", "add", f"{ROUTER_IP}/24", "dev", self.lan_if)
        sh("ip", "-n", self.device, "addr", "add", f"{DEVICE_IP}/24", "dev", self.dev_if)
        sh("ip", "-n", self.device, "link", "set", self.dev_if, "address", self.device_mac)
        for ns, ifname in ((self.router, self.lan_if), (self.device, self.dev_if)):
            sh("ip", "-n", ns, "link", "set", ifname, "up")
        neigh = f"net.ipv4.neigh.{self.lan_if}"
        for key, value in (
            ("base_reachable_time_ms", "1000"),
            ("delay_first_probe_time", "1"),
            ("retrans_time_ms", "200"),
            ("ucast_solicit", "2"),
            ("mcast_solicit", "2"),
        ):
            self.in_router("sysctl", "-q", "-w", f"{neigh}.{key}={value}")


@pytest.fixture
def lab() -> Iterator[Lab]:
    prefix = "ehT" + secrets.token_hex(3)
    router, device = prefix + "r", prefix + "d"
    lan_if, dev_if = prefix + "a", prefix + "b"
    sh("ip", "netns", "add", router)
    try:
        sh("ip", "netns", "add", device)
        for ns in (router, device):
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        lab = Lab(router, device, lan_if, dev_if, "02:00:5e:10:00:42")
        lab.recreate_link()
        yield lab
    finally:
        sh("ip", "netns", "del", device, check=False)
        sh("ip", "netns", "del", router, check=False)


def wait_for(
    watcher: NeighbourWatcher,
    predicate: Callable[[NeighbourUpdate], bool],
    seen: list[NeighbourUpdate],
    timeout: float = 20.0,
    kick: Callable[[], object] | None = None,
) -> NeighbourUpdate:
    """Wait on the watcher's fd (as the daemon's selector does) until an update matches."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if kick is not None:
            kick()
        ready, _, _ = select.select([watcher.fileno()], [], [], 0.5)
        if ready:
            for update in watcher.drain():
                seen.append(update)
                if predicate(update):
                    return update
    raise AssertionError(f"no matching neighbour update; saw {[u.as_dict() for u in seen]}")


def test_traffic_makes_reachable_and_a_silent_device_fails(lab: Lab) -> None:
    with NeighbourWatcher(lab.lan_if, netns=lab.router) as watcher:
        assert watcher.dump() == []
        assert watcher.drain() == []
        registry = DeviceRegistry()
        seen: list[NeighbourUpdate] = []

        lab.in_router("ping", "-c", "1", "-W", "2", DEVICE_IP)
        update = wait_for(watcher, lambda u: u.state == "reachable", seen)
        assert (update.ip, update.mac) == (DEVICE_IP, lab.device_mac)
        assert update.ifindex == watcher.ifindex
        now = time.time()
        events = [e.kind for u in seen for e in registry.apply_neighbour(u, now)]
        assert events == ["device_joined"]
        # Not identified once the settle window is over: a stranger.
        due = registry.next_deadline()
        assert due is not None
        assert [e.kind for e in registry.expire(due)] == ["unknown_device"]
        assert registry.address_of(lab.device_mac) == DEVICE_IP

        (entry,) = watcher.dump()
        assert entry.ip == DEVICE_IP and entry.mac == lab.device_mac

        # The device goes silent: it drops its address and no longer answers ARP. Traffic
        # from the router makes the kernel re-check it (STALE -> DELAY -> PROBE -> FAILED).
        lab.in_device("ip", "addr", "flush", "dev", lab.dev_if)
        seen.clear()
        failed = wait_for(
            watcher,
            lambda u: u.ip == DEVICE_IP and u.state == "failed",
            seen,
            kick=lambda: lab.in_router("ping", "-c", "1", "-W", "1", DEVICE_IP, check=False),
        )
        assert failed.mac is None or failed.mac == lab.device_mac
        states = [u.state for u in seen]
        assert "probe" in states or "delay" in states  # the kernel really re-checked
        events = []
        for u in seen:
            events += registry.apply_neighbour(u, time.time())
        left = [e for e in events if e.kind == "device_left"]
        assert len(left) == 1 and left[0].data["reason"] == "neighbour failed"
        assert registry.address_of(lab.device_mac) is None


def test_probe_finds_a_device_that_came_back(lab: Lab) -> None:
    with NeighbourWatcher(lab.lan_if, netns=lab.router) as watcher:
        seen: list[NeighbourUpdate] = []
        lab.in_device("ip", "addr", "flush", "dev", lab.dev_if)
        watcher.probe(DEVICE_IP)  # nobody answers
        wait_for(watcher, lambda u: u.ip == DEVICE_IP and u.state == "failed", seen)
        lab.in_device("ip", "addr", "add", f"{DEVICE_IP}/24", "dev", lab.dev_if)
        seen.clear()
        watcher.probe(DEVICE_IP)  # no traffic of ours: the probe alone must find it
        update = wait_for(watcher, lambda u: u.state == "reachable", seen)
        assert update.mac == lab.device_mac


def test_link_down_removes_entries(lab: Lab) -> None:
    with NeighbourWatcher(lab.lan_if, netns=lab.router) as watcher:
        seen: list[NeighbourUpdate] = []
        lab.in_router("ping", "-c", "1", "-W", "2", DEVICE_IP)
        wait_for(watcher, lambda u: u.state == "reachable", seen)
        # The cable is pulled on the device side: carrier loss flushes the router's entries.
        lab.in_device("ip", "link", "set", lab.dev_if, "down")
        gone = wait_for(
            watcher, lambda u: u.ip == DEVICE_IP and (u.deleted or u.state == "failed"), seen
        )
        assert gone.ip == DEVICE_IP
        assert watcher.dump() == [] or all(u.state == "failed" for u in watcher.dump())


def test_other_interfaces_are_ignored(lab: Lab) -> None:
    with NeighbourWatcher(lab.lan_if, netns=lab.router) as watcher:
        lab.in_router("ip", "neigh", "add", "127.0.0.5", "lladdr", "00:00:00:00:00:01",
                      "dev", "lo", check=False)  # fmt: skip
        lab.in_router("ip", "neigh", "add", "192.168.254.77", "lladdr", "02:00:5e:10:00:77",
                      "dev", lab.lan_if, "nud", "stale")  # fmt: skip
        seen: list[NeighbourUpdate] = []
        update = wait_for(watcher, lambda u: u.ip == "192.168.254.77", seen)
        assert update.state == "stale" and update.mac == "02:00:5e:10:00:77"
        assert all(u.ifindex == watcher.ifindex for u in seen)


def test_other_interfaces_do_not_wake_the_watcher(lab: Lab) -> None:
    """The kernel filters them: another interface's neighbour change leaves the fd quiet."""
    lab.in_router("ip", "link", "add", "wan", "type", "veth", "peer", "name", "wan-peer")
    lab.in_router("ip", "link", "set", "wan", "up")
    with NeighbourWatcher(lab.lan_if, netns=lab.router) as watcher:
        for n in range(5):
            lab.in_router("ip", "neigh", "add", f"203.0.113.{n + 1}", "lladdr",
                          f"02:00:5e:99:00:0{n}", "dev", "wan", "nud", "stale")  # fmt: skip
        assert select.select([watcher.fileno()], [], [], 0.5)[0] == []
        lab.in_router("ip", "neigh", "add", "192.168.254.78", "lladdr", "02:00:5e:10:00:78",
                      "dev", lab.lan_if, "nud", "stale")  # fmt: skip
        assert select.select([watcher.fileno()], [], [], 5)[0] != []
        assert [u.ip for u in watcher.drain()] == ["192.168.254.78"]


def test_interface_followed_across_recreation(lab: Lab) -> None:
    """OpenWrt recreates br-lan on a network restart; the watcher must keep working."""
    with NeighbourWatcher(lab.lan_if, netns=lab.router) as watcher:
        seen: list[NeighbourUpdate] = []
        lab.in_router("ping", "-c", "1", "-W", "2", DEVICE_IP)
        wait_for(watcher, lambda u: u.state == "reachable", seen)
        old_index = watcher.ifindex
        lab.in_router("ip", "link", "del", lab.lan_if)  # takes the peer end with it
        wait_for(watcher, lambda u: u.ip == DEVICE_IP and u.deleted, seen)
        assert watcher.ifindex is None
        with pytest.raises(OSError):
            watcher.probe(DEVICE_IP)
        lab.recreate_link()
        lab.in_router("ping", "-c", "1", "-W", "2", DEVICE_IP)
        update = wait_for(watcher, lambda u: u.state == "reachable", seen)
        assert watcher.ifindex not in (None, old_index)
        assert update.ifindex == watcher.ifindex and update.mac == lab.device_mac


def test_interface_missing_at_start(lab: Lab) -> None:
    name = lab.lan_if[:-1] + "x"
    with NeighbourWatcher(name, netns=lab.router) as watcher:
        assert watcher.ifindex is None and watcher.dump() == [] and watcher.drain() == []
        lab.in_router("ip", "link", "set", lab.lan_if, "down")
        lab.in_router("ip", "link", "set", lab.lan_if, "name", name)
        lab.in_router("ip", "link", "set", name, "up")
        lab.lan_if = name
        seen: list[NeighbourUpdate] = []
        wait_for(
            watcher,
            lambda u: u.state == "reachable",
            seen,
            kick=lambda: lab.in_router("ping", "-c", "1", "-W", "1", DEVICE_IP, check=False),
        )
        assert watcher.ifindex is not None


def test_lost_events_are_recovered_by_a_resync(lab: Lab) -> None:
    """A tiny receive buffer overflows (ENOBUFS); the watcher must still converge."""
    with NeighbourWatcher(lab.lan_if, netns=lab.router, rcvbuf=4096) as watcher:
        ips = [f"192.168.254.{i}" for i in range(10, 250)]
        first_batch = "".join(
            f"neigh add {ip} lladdr 02:00:5e:10:01:{i:02x} dev {lab.lan_if} nud stale\n"
            for i, ip in enumerate(ips[:5])
        )
        subprocess.run(
            ["ip", "-n", lab.router, "-batch", "-"], input=first_batch, text=True, check=True
        )
        seen: list[NeighbourUpdate] = []
        wait_for(watcher, lambda u: u.ip == ips[4], seen)  # the watcher knows five entries
        batch = "".join(
            f"neigh add {ip} lladdr 02:00:5e:10:00:{i % 256:02x} dev {lab.lan_if} nud stale\n"
            for i, ip in enumerate(ips[5:])
        ) + "".join(f"neigh del {ip} dev {lab.lan_if}\n" for ip in ips[:100])
        subprocess.run(["ip", "-n", lab.router, "-batch", "-"], input=batch, text=True, check=True)
        registry = DeviceRegistry()
        now = time.time()
        for update in seen:
            registry.apply_neighbour(update, now)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            ready, _, _ = select.select([watcher.fileno()], [], [], 0.5)
            if not ready:
                break
            for update in watcher.drain():
                registry.apply_neighbour(update, now)
        assert watcher.resyncs >= 1  # the buffer really overflowed
        present = {d["ip"] for d in registry.devices() if d["present"]}
        assert present == set(ips[100:])
