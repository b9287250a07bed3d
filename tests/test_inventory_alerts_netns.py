"""A cloned display MAC and an exhausted DHCP pool, on a real daemon with its real dnsmasq.

``energyhubd run`` in a MiniLab router; the LAN host (one veth) plays the devices: a second
address on the display's MAC (on the wire exactly what a clone with a static address looks
like) and three macvlan clients with their own MACs that take every address of a three-address
pool over DHCP.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from energyhub_lab import internet, netns
from energyhub_lab.internet import MiniLab
from tests.realdaemon import RealDaemon, RealDaemons, wait_for

pytestmark = pytest.mark.netns

ROUTER_LAN = "192.168.254.1"
WAIT = 45  # seconds; each wait returns as soon as its condition holds


@pytest.fixture
def daemon(real_daemons: RealDaemons) -> Callable[[dict[str, Any]], RealDaemon]:
    """Starts a daemon (portal off, no WAN resolv file) with ``lan.dhcp`` as given."""

    def start(dhcp: dict[str, Any]) -> RealDaemon:
        config = real_daemons.config(lan={"device": "lan", "dhcp": dhcp}, portal={"enabled": False})
        return real_daemons.start(config, wan_dns=None)

    return start


def host_mac(minilab: MiniLab) -> str:
    link = json.loads(netns.ip(minilab.lanhost, "-j", "link", "show", "eth0"))
    return str(link[0]["address"])


def events(daemon: RealDaemon, kind: str) -> list[dict[str, Any]]:
    return [e for e in daemon.status()["events"] if e["kind"] == kind]


def test_display_mac_answering_from_a_second_address_is_flagged(
    minilab: MiniLab, daemon: Callable[[dict[str, Any]], RealDaemon]
) -> None:
    mac = host_mac(minilab)
    reservation = {"name": "display", "mac": mac, "ip": "192.168.254.200"}
    running = daemon({"reservations": [reservation]})
    clone = "192.168.254.150"
    # Short neighbour timers, as the lab site uses: the kernel re-confirms each address
    # within seconds (REACHABLE again), so the alternation shows quickly.
    netns.ns_run(
        minilab.router,
        ["sysctl", "-qw", "net.ipv4.neigh.lan.base_reachable_time_ms=2000",
         "net.ipv4.neigh.lan.delay_first_probe_time=1"],
    )  # fmt: skip
    netns.ip(minilab.lanhost, "addr", "add", f"{clone}/24", "dev", "eth0")
    try:

        def both_talk() -> bool:
            for source in (internet.LAN_HOST_IP, clone):
                netns.ns_run(
                    minilab.lanhost,
                    ["ping", "-c", "1", "-W", "1", "-I", source, ROUTER_LAN],
                    check=False,
                )
            return bool(events(running, "duplicate_mac"))

        wait_for(both_talk, WAIT, "no duplicate_mac event")
        event = events(running, "duplicate_mac")[0]
        assert event["severity"] == "error"
        assert event["data"]["name"] == "display"
        assert event["data"]["ips"] == [internet.LAN_HOST_IP, clone]
        assert f"DUPLICATE MAC {mac} (display)" in running.ctl("status").stdout
    finally:
        netns.ip(minilab.lanhost, "addr", "del", f"{clone}/24", "dev", "eth0", check=False)


def test_exhausted_pool_raises_a_clear_event_and_a_status_line(
    minilab: MiniLab, daemon: Callable[[dict[str, Any]], RealDaemon], tmp_path: Path
) -> None:
    running = daemon({"start": "192.168.254.210", "end": "192.168.254.212", "reservations": []})
    script = tmp_path / "udhcpc-noop.sh"
    script.write_text("#!/bin/sh\nexit 0\n")  # the lease is all we need, not the address
    script.chmod(0o755)
    names = [f"fake{i}" for i in range(3)]
    try:
        for i, name in enumerate(names):
            netns.ip(minilab.lanhost, "link", "add", name, "link", "eth0", "address",
                     f"02:fa:ce:00:00:0{i}", "type", "macvlan", "mode", "bridge")  # fmt: skip
            netns.ip(minilab.lanhost, "link", "set", name, "up")
            netns.ns_run(
                minilab.lanhost,
                ["udhcpc", "-i", name, "-q", "-n", "-t", "10", "-T", "1", "-s", str(script)],
                timeout=60,
            )
        exhausted = wait_for(lambda: events(running, "pool_exhausted"), WAIT, "no pool_exhausted")
        data = exhausted[0]["data"]
        assert exhausted[0]["severity"] == "error"
        assert (data["used"], data["size"], data["unknown_leases"]) == (3, 3, 3)
        assert "a new device gets no address" in data["message"]
        assert running.status()["inventory"]["pool"]["exhausted"] is True
        assert "POOL EXHAUSTED" in running.ctl("status").stdout
    finally:
        for name in names:
            netns.ip(minilab.lanhost, "link", "del", name, check=False)
