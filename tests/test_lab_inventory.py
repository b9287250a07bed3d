"""Device inventory on the running lab: real dnsmasq serving real udhcpc clients."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from energyhub_lab import checks, netns
from energyhub_lab.site import UNIT2_FORWARD_PORT, UNIT_VENDOR_CLASS, Client, Site
from energyhubd.control.client import call

pytestmark = [pytest.mark.netns]


def status(site: Site) -> dict[str, Any]:
    return call(site.socket, "status")


def events(site: Site, kind: str, mac: str) -> list[dict[str, Any]]:
    return [e for e in status(site)["events"] if e["kind"] == kind and e["data"].get("mac") == mac]


def forward(site: Site, name: str) -> dict[str, Any]:
    return next(f for f in status(site)["forwards"] if f["name"] == name)


def test_devices_table_names_display_and_units(lab: Site) -> None:
    exe = Path(sys.executable).parent / "energyhubctl"
    out = subprocess.run(
        [str(exe), "--socket", lab.socket, "devices"], capture_output=True, text=True, timeout=30
    ).stdout
    assert "display present 192.168.254.200  units 3/3" in out
    rows = {line.split()[1]: line.split()[0] for line in out.splitlines()[2:]}
    assert rows["display"] == "display"
    assert rows["unit1"] == "unit"
    assert rows["energyhub-unit2"] == "unit"


def test_unknown_device_is_reported_once_across_renewals(lab: Site) -> None:
    stranger = Client("intruder", "02:66:00:00:00:77", "laptop")
    try:
        lab.add_client(stranger)
        lab.wait_for(
            lambda: bool(events(lab, "unknown_device", stranger.mac)),
            checks.STRANGER_ALERT,
            "not reported",
        )
        reads = status(lab)["inventory"]["lease_reads"]
        # dnsmasq stores expiry in whole seconds: a renewal within the second of the grant
        # changes nothing, so it writes no file and runs no hook. Renew in a later second.
        time.sleep(1.1)
        pid = int((lab.dir / f"{stranger.name}-udhcpc.pid").read_text())
        netns.run(["kill", "-USR1", str(pid)])  # udhcpc: renew the lease now
        log = lab.dir / f"{stranger.name}-udhcpc.log"
        lab.wait_for(lambda: log.read_text().count("obtained") >= 2, 10, "no renewal")
        # dnsmasq's hook tells the daemon about the renewal; it re-reads the leases.
        lab.wait_for(lambda: status(lab)["inventory"]["lease_reads"] > reads, 5, "not re-read")
        assert len(events(lab, "unknown_device", stranger.mac)) == 1
    finally:
        lab.remove_client(stranger.name)


def test_unit_whose_cable_is_pulled_leaves(lab: Site) -> None:
    unit = lab.client("unit3")
    address = lab.address_of(lab.ns("unit3"), "eth0")
    assert address
    try:
        lab.remove_client("unit3")

        def left() -> bool:
            # Someone talks to it (the daemon probes quiet devices the same way, slower).
            netns.ns_run(lab.router, ["ping", "-c", "1", "-W", "1", address], check=False)
            return bool(events(lab, "device_left", unit.mac))

        lab.wait_for(left, 30, "device_left did not follow")
        units = status(lab)["inventory"]["units"]
        assert units["text"] == "2/3" and units["complete"] is False
        device = next(d for d in status(lab)["devices"] if d["mac"] == unit.mac)
        assert device["present"] is False and device["neighbour"] in ("failed", "incomplete")
    finally:
        lab.add_client(unit)
    lab.wait_for(lambda: status(lab)["inventory"]["units"]["text"] == "3/3", 10, "not back")


def test_forward_follows_a_device_whose_lease_moves(lab: Site) -> None:
    unit2 = lab.client("unit2")
    wan = checks.wan_address(lab)
    old = lab.address_of(lab.ns("unit2"), "eth0")
    ok, text = lab.probe_connect(lab.ns("scada"), wan, UNIT2_FORWARD_PORT)
    assert ok and text.startswith("unit2"), text
    new = "192.168.254.240" if old != "192.168.254.240" else "192.168.254.241"
    try:
        lab.stop_dhcp_client(unit2)  # releases the lease: the device is gone
        lab.wait_for(
            lambda: forward(lab, "unit2-modbus")["state"] == "closed",
            5,
            "forward stayed open for a device that is gone",
        )
        ok, text = lab.probe_connect(lab.ns("scada"), wan, UNIT2_FORWARD_PORT, timeout=1.0)
        assert not ok, text
        lab.start_dhcp_client(unit2, request=new)
        lab.wait_for(lambda: lab.address_of(lab.ns("unit2"), "eth0") == new, 10, "no new lease")
        lab.wait_for(
            lambda: forward(lab, "unit2-modbus")["address"] == new,
            5,
            "forward did not follow the new lease",
        )
        ok, text = lab.probe_connect(lab.ns("scada"), wan, UNIT2_FORWARD_PORT)
        assert ok and text.startswith("unit2"), text
    finally:
        if lab.address_of(lab.ns("unit2"), "eth0") is None:
            lab.start_dhcp_client(unit2)


def test_unit_recognised_by_its_dhcp_vendor_class(lab: Site) -> None:
    """Neither MAC nor host name says "unit": the vendor class dnsmasq reports does."""
    newcomer = Client("vendorunit", "02:77:00:00:00:09", "box", UNIT_VENDOR_CLASS)
    try:
        lab.add_client(newcomer)
        lab.wait_for(
            lambda: any(d["mac"] == newcomer.mac for d in status(lab)["devices"]), 10, "not seen"
        )
        device = next(d for d in status(lab)["devices"] if d["mac"] == newcomer.mac)
        assert device["role"] == "unit", device
        assert not events(lab, "unknown_device", newcomer.mac)
        assert status(lab)["inventory"]["units"]["online"] == 4
    finally:
        lab.remove_client(newcomer.name)
