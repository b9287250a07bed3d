"""A clone of the display's MAC on the display's own reserved address, with real parts.

``energyhubd run`` in a MiniLab router whose LAN ``lan`` is made a bridge here. Hosts in
namespaces of their own (named under the MiniLab prefix, so the lab's teardown removes them
too) run busybox ``udhcpc`` against the daemon's real dnsmasq: the display, and a clone with
the same MAC that dnsmasq hands the same reserved address (192.168.254.200). The neighbour
table never changes (one address, one MAC); what shows the clone is the bridge port the MAC
is learnt on, or, behind one switch port, the DHCP client identifier in its lease.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from energyhub_lab import internet, netns
from energyhub_lab.internet import MiniLab
from energyhubd.control.client import call

from .conftest import unique
from .realdaemon import RealDaemons, wait_for

pytestmark = pytest.mark.netns

MAC = "02:eb:00:00:00:01"
RESERVED = "192.168.254.200"
ROUTER_LAN = internet.LAN_ROUTER_IP
DISPLAY_ID = "01:02:eb:00:00:00:01"  # what udhcpc sends by default: type 1, the MAC
OTHER_ID = "ff00000001000100012c3a4b5c02eb00000001"  # a DUID-style id, as systemd sends
WAIT = 45.0

UDHCPC_SCRIPT = """#!/bin/sh
case "$1" in
  bound|renew) ip addr flush dev "$interface"; ip addr add "$ip/${mask:-24}" dev "$interface" ;;
  deconfig) ip addr flush dev "$interface" ;;
esac
echo "$1 $ip" >> "$0.$interface.log"
"""


@dataclass
class Host:
    """A namespace with one interface ``eth0`` carrying the display's MAC, and its udhcpc."""

    ns: str
    script: Path
    proc: subprocess.Popen[bytes] | None = None
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = Path(f"{self.script}.eth0.log")

    def start(self, *options: str) -> None:
        """Boot: a fresh udhcpc (DISCOVER/REQUEST), until it holds its lease."""
        self.stop()
        bound = self.bound()
        cmd = ["udhcpc", "-f", "-i", "eth0", "-s", str(self.script), "-t", "10", "-T", "1"]
        self.proc = subprocess.Popen(
            netns.ns_cmd(self.ns, [*cmd, *options]),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )
        wait_for(lambda: self.bound() > bound, WAIT, f"{self.ns}: no lease")

    def renew(self) -> None:
        assert self.proc is not None
        bound = self.bound()
        self.proc.send_signal(signal.SIGUSR1)
        wait_for(lambda: self.bound() > bound, WAIT, f"{self.ns}: no renewal")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()  # no release (no -R): as when the power goes
            self.proc.wait(10)
            self.proc = None

    def bound(self) -> int:
        try:
            lines = self.log.read_text().splitlines()
        except FileNotFoundError:
            return 0
        return sum(1 for line in lines if line.split()[:2] in (["bound", RESERVED],
                                                              ["renew", RESERVED]))  # fmt: skip

    def ping(self) -> None:
        netns.ns_run(self.ns, ["ping", "-c", "1", "-W", "1", ROUTER_LAN], check=False)


@dataclass
class Lan:
    minilab: MiniLab
    tmp: Path
    hosts: list[Host] = field(default_factory=list)

    def host(self, port: str, bridge_ns: str | None = None) -> Host:
        """A host on a new port of the router's LAN bridge, or of a switch (``bridge_ns``)."""
        ns = f"{self.minilab.prefix}-{unique('h')}"
        netns.add_namespace(ns)
        self.plug(ns, port, bridge_ns)
        script = self.tmp / f"udhcpc-{ns}.sh"
        script.write_text(UDHCPC_SCRIPT)
        script.chmod(0o755)
        host = Host(ns, script)
        self.hosts.append(host)
        return host

    def plug(self, ns: str, port: str, bridge_ns: str | None = None) -> None:
        """A cable from ``ns``'s ``eth0`` (the display's MAC) to a new bridge port."""
        where = bridge_ns or self.minilab.router
        netns.run(["ip", "-n", where, "link", "add", port, "type", "veth", "peer", "name",
                   "eth0", "address", MAC, "netns", ns])  # fmt: skip
        netns.ip(where, "link", "set", port, "master", "lan" if bridge_ns is None else "sw")
        netns.ip(where, "link", "set", port, "up")
        netns.ip(ns, "link", "set", "eth0", "up")

    def switch(self, uplink: str) -> str:
        """An unmanaged switch: a namespace with a bridge ``sw``, one cable to the router."""
        ns = f"{self.minilab.prefix}-{unique('sw')}"
        netns.add_namespace(ns)
        netns.veth(self.minilab.router, uplink, ns, "up0")
        netns.ip(self.minilab.router, "link", "set", uplink, "master", "lan")
        netns.bridge(ns, "sw", ["up0"])
        return ns


@pytest.fixture
def lan(minilab: MiniLab, tmp_path: Path) -> Iterator[Lan]:
    """The router's ``lan`` becomes a bridge (the MiniLab's single LAN host is unplugged)."""
    netns.ip(minilab.router, "link", "del", "lan", check=False)
    netns.ip(minilab.router, "link", "add", "lan", "type", "bridge")
    netns.ip(minilab.router, "link", "set", "lan", "up")
    made = Lan(minilab, tmp_path)
    try:
        yield made
    finally:
        for host in made.hosts:
            host.stop()
        for ns in netns.list_namespaces():
            if ns.startswith(f"{minilab.prefix}-h") or ns.startswith(f"{minilab.prefix}-sw"):
                netns.delete_namespace(ns)
        netns.ip(minilab.router, "link", "del", "lan", check=False)


@pytest.fixture
def daemon(lan: Lan, real_daemons: RealDaemons) -> str:
    """energyhubd with its own dnsmasq on the bridge; the display reserved by MAC. Stopped
    (by ``real_daemons``) before ``lan`` takes the bridge down."""
    reservation = {"name": "display", "mac": MAC, "ip": RESERVED}
    config = real_daemons.config(
        lan={"device": "lan", "dhcp": {"reservations": [reservation]}},
        portal={"enabled": False},
    )
    return real_daemons.start(config, wan_dns=None).socket


def events(sock: str, prefix: str = "duplicate_mac") -> list[dict[str, Any]]:
    return [e for e in call(sock, "status")["events"] if e["kind"].startswith(prefix)]


def lease_line(tmp_path: Path) -> list[str]:
    text = (tmp_path / "state" / "dnsmasq" / "dhcp.leases").read_text()
    return next(line.split() for line in text.splitlines() if MAC in line)


def test_one_display_that_reboots_renews_and_is_renamed_once_is_no_clone(
    lan: Lan, daemon: str, tmp_path: Path
) -> None:
    display = lan.host("port1")
    display.start("-x", "hostname:display")
    for _ in range(3):
        display.renew()
        display.ping()
    display.stop()  # power cycle: the cable's link goes down and up, a fresh DISCOVER
    netns.ip(display.ns, "link", "set", "eth0", "down")
    netns.ip(display.ns, "link", "set", "eth0", "up")
    display.start("-x", "hostname:display")
    display.ping()
    display.stop()
    display.start("-x", "hostname:panel")  # renamed once (a firmware update), then stays
    for _ in range(2):
        display.renew()
        display.ping()
    display.stop()  # re-plugged into another port of the router, once
    netns.ip(lan.minilab.router, "link", "del", "port1")
    lan.plug(display.ns, "port3")
    display.start("-x", "hostname:panel")
    for _ in range(3):
        display.ping()

    def inventory() -> dict[str, Any] | None:
        summary: dict[str, Any] = call(daemon, "status")["inventory"]
        return summary if summary["display"]["present"] else None

    summary = wait_for(inventory, WAIT, "display not present")
    assert summary["display"]["ip"] == RESERVED and summary["display"]["mac"] == MAC
    assert lease_line(tmp_path)[2:] == [RESERVED, "display", DISPLAY_ID]
    time.sleep(2)  # let any late event arrive
    assert events(daemon) == []
    assert summary["duplicates"] == []


def test_clone_on_another_bridge_port_is_flagged_by_the_port_swinging(
    lan: Lan, daemon: str, tmp_path: Path
) -> None:
    """The same MAC, the same client identifier, the same host name: to dnsmasq one client.
    Every frame from the other host moves the bridge's FDB entry between the two ports."""
    display = lan.host("port1")
    display.start("-x", "hostname:display")
    display.ping()
    plugged = time.time()
    clone = lan.host("port2")  # its link up: IPv6 and then DHCP frames from the MAC
    clone.start("-x", "hostname:display")
    assert lease_line(tmp_path)[2:] == [RESERVED, "display", DISPLAY_ID]  # nothing unusual

    def both_talk() -> list[dict[str, Any]]:
        display.ping()
        clone.ping()
        return events(daemon)

    found = wait_for(both_talk, WAIT, "no duplicate_mac event")
    event = found[0]
    print(f"clone on another port flagged {event['time'] - plugged:.2f} s after it was plugged")
    assert event["kind"] == "duplicate_mac" and event["severity"] == "error"
    data = event["data"]
    assert (data["mac"], data["ip"], data["signal"]) == (MAC, RESERVED, "port")
    assert sorted(data["values"]) == ["port1", "port2"]
    assert "bridge port alternates between" in data["evidence"]
    status = subprocess.run(
        [sys.executable, "-m", "energyhubd.ctl", "--socket", daemon, "status"],
        capture_output=True, text=True, timeout=30,
    ).stdout  # fmt: skip
    assert f"DUPLICATE MAC {MAC} (display) at {RESERVED}: bridge port alternates" in status


def test_clone_behind_one_switch_port_is_flagged_by_its_client_identifier(
    lan: Lan, daemon: str, tmp_path: Path
) -> None:
    """Both behind one unmanaged switch: the router's bridge sees one port. The clone's DHCP
    client sends another client identifier; dnsmasq takes the lease over for whoever asked
    last, so the identifier in the lease swings at each renewal of either host."""
    switch = lan.switch("port1")
    display = lan.host("d0", bridge_ns=switch)
    clone = lan.host("c0", bridge_ns=switch)
    display.start("-x", "hostname:display")
    clone.start("-C", "-x", f"0x3d:{OTHER_ID}", "-x", "hostname:laptop")
    assert lease_line(tmp_path)[4].replace(":", "") == OTHER_ID
    display.renew()
    assert events(daemon) == []  # A, B, A: could still be one device that changed back
    clone.renew()
    found = wait_for(lambda: events(daemon), WAIT, "no duplicate_mac event")
    data = found[0]["data"]
    assert (data["mac"], data["ip"], data["signal"]) == (MAC, RESERVED, "client_id")
    assert data["values"][0] == DISPLAY_ID and data["changes"] == 3
    assert "DHCP client identifier alternates" in data["evidence"]
    assert not [e for e in events(daemon) if e["data"]["signal"] == "port"]
