"""A rack powering up on the running lab: no false ``unknown_device``, a stranger still seen.

Each round plugs in 8 new units (identified only by their DHCP vendor class, which reaches the
daemon through dnsmasq's lease hook after the lease itself) and re-powers the display, all
within one second, while two busy loops keep both cores loaded. A unit is "new" every round
(fresh MACs), so each round is a first sighting, exactly as at a site's first power-up.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from energyhub_lab import netns
from energyhub_lab.site import UNIT_VENDOR_CLASS, Client, Site
from energyhubd.control.client import call
from tests.conftest import unique

pytestmark = [pytest.mark.netns]

ROUNDS = 20
UNITS = 8
ROUND_WAIT = 90  # seconds for every device of a round to be identified, under load
STRANGER_ALERT = 15  # seconds: a real stranger must still be reported within this
EVENT = re.compile(r'event seq=\d+ kind="(?P<kind>[a-z_]+)" severity=\w+ data=(?P<data>\{.*\})$')


@pytest.fixture(scope="module")
def lab() -> Iterator[Site]:
    """A site of its own: 20 rounds of devices leave neighbour entries and leases behind that
    the session's shared lab must not see."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces")
    site = Site(prefix=unique("ehp"))
    try:
        site.up()
        yield site
    finally:
        site.down()


def logged_events(site: Site, kind: str) -> list[dict[str, Any]]:
    """Every event of ``kind`` the daemon logged (status keeps only the newest 20)."""
    found = []
    for line in (site.dir / "energyhubd.log").read_text(errors="replace").splitlines():
        match = EVENT.search(line)
        if match and match["kind"] == kind:
            found.append(json.loads(match["data"]))
    return found


def history(site: Site, alerts: list[dict[str, Any]]) -> str:
    """The daemon's log lines about the alerted devices, and lease hook facts, for a failure."""
    macs = {a["mac"] for a in alerts}
    lines = [
        line
        for line in (site.dir / "energyhubd.log").read_text(errors="replace").splitlines()
        if any(mac in line for mac in macs) or "lease file" in line
    ]
    vendor_dir = site.dir / "router-state" / "dnsmasq" / "vendor-class"
    vendor = {mac: (vendor_dir / mac).exists() for mac in macs}
    return "\n".join([*lines[-40:], f"vendor class files: {vendor}"])


@contextlib.contextmanager
def cpu_load(seconds: float) -> Iterator[None]:
    """Two busy loops (both cores), bounded in time even if the test dies."""
    code = f"import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end: pass"
    procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(2)]
    try:
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(5)


def devices(site: Site) -> dict[str, dict[str, Any]]:
    return {d["mac"]: d for d in call(site.socket, "devices")["devices"]}


def all_identified(site: Site, macs: frozenset[str]) -> bool:
    found = devices(site)
    units = [found.get(mac) for mac in macs]
    if not all(d is not None and d["present"] and d["role"] == "unit" for d in units):
        return False
    return bool(call(site.socket, "status")["inventory"]["display"]["present"])


def plug_in_dark(site: Site, client: Client) -> str:
    """Namespace and cable ready, switch port down: the device has no power yet."""
    ns = site.ns(client.name)
    netns.add_namespace(ns)
    port = f"p-{client.name}"[:15]
    netns.veth(site.ns("sw"), port, ns, "eth0", mac_b=client.mac)
    netns.ip(site.ns("sw"), "link", "set", port, "master", "sw")
    netns.ip(site.ns("sw"), "link", "set", port, "down")
    return port


def power_up(site: Site, port: str, client: Client) -> None:
    netns.ip(site.ns("sw"), "link", "set", port, "up")
    site.start_dhcp_client(client)


def unplug(site: Site, client: Client) -> None:
    """Release the lease (so 20 rounds do not fill the pool), then remove the device."""
    with contextlib.suppress(Exception):
        site.stop_dhcp_client(client)
    site.remove_client(client.name)


def test_rack_power_up_under_load_raises_no_false_alert(lab: Site) -> None:
    display = lab.client("display")
    display_port = "p-display"
    before = len(logged_events(lab, "unknown_device"))
    for round_no in range(ROUNDS):
        units = [
            Client(
                f"pu{i}",
                f"02:eb:7{round_no // 16:x}:{round_no % 16:x}0:00:{i:02x}",
                f"rack-node-{i}",  # no unit host name: only the vendor class identifies it
                vendor_class=UNIT_VENDOR_CLASS,
            )
            for i in range(1, UNITS + 1)
        ]
        ports = [plug_in_dark(lab, unit) for unit in units]
        try:
            # The display loses power too: its lease is released and its port goes dark.
            lab.stop_dhcp_client(display)
            netns.ip(lab.ns("sw"), "link", "set", display_port, "down")
            with cpu_load(ROUND_WAIT + 30):
                power_up(lab, display_port, display)
                for port, unit in zip(ports, units, strict=True):
                    power_up(lab, port, unit)
                macs = frozenset(u.mac for u in units)
                lab.wait_for(
                    lambda macs=macs: all_identified(lab, macs),
                    ROUND_WAIT,
                    f"round {round_no}: not every unit identified",
                )
        finally:
            for unit in units:
                unplug(lab, unit)
            netns.ip(lab.ns("sw"), "link", "set", display_port, "up", check=False)
        false = logged_events(lab, "unknown_device")[before:]
        assert false == [], f"round {round_no}: false alerts {false}\n{history(lab, false)}"
    cleared = logged_events(lab, "unknown_device_cleared")
    assert not [c for c in cleared if c["mac"].startswith("02:eb:7")]


def test_stranger_is_still_alerted_within_15_s(lab: Site) -> None:
    stranger = Client("pustranger", "02:66:00:00:00:99", "laptop")
    started = time.monotonic()
    try:
        lab.add_client(stranger)
        lab.wait_for(
            lambda: any(e["mac"] == stranger.mac for e in logged_events(lab, "unknown_device")),
            max(0.0, STRANGER_ALERT - (time.monotonic() - started)),
            f"stranger not alerted within {STRANGER_ALERT} s",
        )
    finally:
        unplug(lab, stranger)
