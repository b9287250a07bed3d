"""End to end with real programs: dnsmasq hands out leases to udhcpc clients in namespaces,
the lease file it writes is noticed (inotify), parsed, and the registry recognises the
display, a unit and a stranger.

Namespaces: ``<p>r`` is the router (bridge 192.168.254.1/24 + dnsmasq); one namespace per
client, each joined to the bridge by a veth pair. Everything is removed afterwards.
"""

from __future__ import annotations

import contextlib
import secrets
import select
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from energyhubd.config.sections.inventory import InventorySettings
from energyhubd.inventory.events import Event
from energyhubd.inventory.leases import LeaseSnapshot, read_lease_file
from energyhubd.inventory.registry import DeviceRegistry
from energyhubd.kernel.filewatch import FileWatch

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(
        not (shutil.which("dnsmasq") and shutil.which("busybox")), reason="needs dnsmasq, busybox"
    ),
]

DISPLAY_MAC = "02:00:5e:10:00:01"
UDHCPC_SCRIPT = """#!/bin/sh
case "$1" in
    bound|renew) ip addr flush dev "$interface"; ip addr add "$ip/${mask:-24}" dev "$interface" ;;
    deconfig) ip addr flush dev "$interface" ;;
esac
exit 0
"""


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, check=check, capture_output=True, text=True, timeout=30)


@dataclass
class DhcpLab:
    prefix: str
    router: str
    lease_file: Path
    script: Path
    namespaces: list[str] = field(default_factory=list)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    n: int = 0

    def client(self, mac: str | None = None) -> tuple[str, str]:
        """A new client namespace on the LAN; returns (namespace, interface)."""
        self.n += 1
        ns, host_if, peer_if = f"{self.prefix}c{self.n}", f"{self.prefix}h{self.n}", "lan0"
        sh("ip", "netns", "add", ns)
        self.namespaces.append(ns)
        sh(
            "ip", "-n", self.router, "link", "add", host_if, "type", "veth",
            "peer", "name", peer_if, "netns", ns,
        )  # fmt: skip
        sh("ip", "-n", self.router, "link", "set", host_if, "master", "br0", "up")
        if mac:
            sh("ip", "-n", ns, "link", "set", peer_if, "address", mac)
        sh("ip", "-n", ns, "link", "set", peer_if, "up")
        return ns, peer_if

    def dhcp(self, ns: str, ifname: str, *extra: str) -> None:
        """One DHCP exchange with busybox udhcpc, which configures the address it gets."""
        sh(
            "ip", "netns", "exec", ns, "busybox", "udhcpc", "-i", ifname, "-f", "-q", "-n",
            "-t", "5", "-T", "1", "-s", str(self.script), *extra,
        )  # fmt: skip

    def running_client(self, ns: str, ifname: str, *extra: str) -> subprocess.Popen[bytes]:
        """udhcpc staying in the foreground: SIGUSR1 renews, SIGUSR2 releases the lease.

        ``ip netns exec`` execs udhcpc, so the Popen pid is udhcpc's own.
        """
        proc = subprocess.Popen(
            [
                "ip", "netns", "exec", ns, "busybox", "udhcpc", "-i", ifname, "-f",
                "-t", "5", "-T", "1", "-s", str(self.script), *extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.processes.append(proc)
        return proc


@pytest.fixture
def dhcp_lab(tmp_path: Path) -> Iterator[DhcpLab]:
    prefix = "ehT" + secrets.token_hex(2)
    router = prefix + "r"
    lease_file = tmp_path / "dhcp.leases"
    script = tmp_path / "udhcpc.script"
    script.write_text(UDHCPC_SCRIPT)
    script.chmod(0o755)
    lab = DhcpLab(prefix, router, lease_file, script)
    proc: subprocess.Popen[bytes] | None = None
    sh("ip", "netns", "add", router)
    try:
        sh("ip", "-n", router, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", router, "addr", "add", "192.168.254.1/24", "dev", "br0")
        sh("ip", "-n", router, "link", "set", "br0", "up")
        proc = subprocess.Popen(
            [
                "ip", "netns", "exec", router, "dnsmasq", "--keep-in-foreground",
                "--conf-file=/dev/null", "--port=0", "--user=root", "--no-ping",
                "--interface=br0", "--bind-interfaces", "--dhcp-authoritative",
                "--dhcp-range=192.168.254.200,192.168.254.244,2m",
                f"--dhcp-host={DISPLAY_MAC},192.168.254.200,display",
                f"--dhcp-leasefile={lease_file}", f"--pid-file={tmp_path / 'dnsmasq.pid'}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while not lease_file.exists() and time.monotonic() < deadline:
            assert proc.poll() is None, "dnsmasq exited"
            time.sleep(0.05)
        yield lab
    finally:
        if proc is not None:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for client in lab.processes:
            if client.poll() is None:
                client.kill()
            client.wait()
        for ns in lab.namespaces:
            sh("ip", "netns", "del", ns, check=False)
        sh("ip", "netns", "del", router, check=False)


class Inventory:
    """What the daemon's loop will do: on inotify, settle, read, apply, collect events."""

    def __init__(self, lease_file: Path) -> None:
        self.watch = FileWatch(str(lease_file))
        self.path = str(lease_file)
        self.registry = DeviceRegistry(
            InventorySettings(expected_units=1),
            [("display", DISPLAY_MAC, "192.168.254.200")],
            ("192.168.254.200", "192.168.254.244"),
        )
        self.events: list[Event] = []
        self.snapshot = LeaseSnapshot()
        self.events += self.registry.apply_leases(read_lease_file(self.path), time.time())

    def until(self, predicate: Callable[[], bool], timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            left = deadline - time.monotonic()
            assert left > 0, f"timed out; events: {[e.as_dict() for e in self.events]}"
            due = self.registry.next_deadline()
            wait = left if due is None else max(0.0, min(left, due - time.time()))
            ready, _, _ = select.select([self.watch.fileno()], [], [], wait)
            if due is not None and time.time() >= due:  # the settle window ended
                self.events += self.registry.expire(time.time())
            if ready and self.watch.drain():
                time.sleep(0.1)  # let the writer finish (dnsmasq truncates, then writes)
                self.watch.drain()
                self.snapshot = read_lease_file(self.path)
                self.events += self.registry.apply_leases(self.snapshot, time.time())

    def snapshot_expiry(self, mac: str) -> int | None:
        return next((lease.expiry for lease in self.snapshot.leases if lease.mac == mac), None)

    def kinds(self, mac: str) -> list[str]:
        return [e.kind for e in self.events if e.data.get("mac") == mac]


def test_real_dnsmasq_leases_are_recognised(dhcp_lab: DhcpLab) -> None:
    inv = Inventory(dhcp_lab.lease_file)
    try:
        display_ns, display_if = dhcp_lab.client(DISPLAY_MAC)
        dhcp_lab.dhcp(display_ns, display_if, "-x", "hostname:disp")
        inv.until(lambda: inv.registry.summary()["display"]["present"])
        assert inv.registry.summary()["display"]["ip"] == "192.168.254.200"

        unit_mac = "02:00:5e:20:00:11"
        unit_ns, unit_if = dhcp_lab.client(unit_mac)
        dhcp_lab.dhcp(unit_ns, unit_if, "-x", "hostname:energyhub-1")
        inv.until(lambda: inv.registry.summary()["units"]["text"] == "1/1")

        stranger = "de:ad:be:ef:00:07"
        s_ns, s_if = dhcp_lab.client(stranger)
        client = dhcp_lab.running_client(s_ns, s_if, "-x", "hostname:laptop")
        inv.until(lambda: "unknown_device" in inv.kinds(stranger))
        devices = {d["mac"]: d for d in inv.registry.devices()}
        assert devices[stranger]["role"] == "unknown" and devices[stranger]["hostname"] == "laptop"
        assert devices[unit_mac]["name"] == "energyhub-1"
        assert inv.snapshot.rejected_count == 0
        first_expiry = devices[stranger]["lease_expiry"]

        # The stranger renews (a new expiry in the file): no second unknown_device.
        time.sleep(1.1)  # so the renewed expiry differs from the first
        client.send_signal(signal.SIGUSR1)
        inv.until(lambda: inv.snapshot_expiry(stranger) not in (None, first_expiry))
        # ...then releases its lease: it leaves, and forwards to it close.
        client.send_signal(signal.SIGUSR2)
        inv.until(lambda: "device_left" in inv.kinds(stranger))
        assert inv.kinds(stranger) == ["device_joined", "unknown_device", "device_left"]
        assert inv.registry.address_of(stranger) is None
        assert inv.registry.summary()["pool"]["used"] == 2
    finally:
        inv.watch.close()
