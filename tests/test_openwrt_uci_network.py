"""The WAN as ``/etc/config/network``'s ``interface 'wan'``: the diff, applied by the real uci.

The ``uci batch`` lines are computed by pure code; the round trip runs OpenWrt's own ``uci``
(from the cached userland build) on a copy of the base files' network configuration.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
from pathlib import Path

import pytest

from energyhubd.config.model import Wan
from energyhubd.openwrt.uci import parse
from energyhubd.openwrt.uci_network import summarize, wan_changes

STOCK = """config interface 'loopback'
\toption device 'lo'
\toption proto 'static'
\toption ipaddr '127.0.0.1'
\toption netmask '255.0.0.0'

config interface 'wan'
\toption device 'wan'
\toption proto 'dhcp'
"""
DHCP = Wan(device="wan", proto="dhcp")
STATIC = Wan(
    device="wan",
    proto="static",
    address=ipaddress.IPv4Interface("198.51.100.10/24"),
    gateway=ipaddress.IPv4Address("198.51.100.1"),
    dns=(ipaddress.IPv4Address("198.51.100.1"), ipaddress.IPv4Address("198.51.100.2")),
)


def test_dhcp_on_a_stock_file_changes_nothing() -> None:
    assert wan_changes(parse(STOCK), DHCP) == []


def test_static_sets_exactly_the_static_options() -> None:
    assert wan_changes(parse(STOCK), STATIC) == [
        "set network.wan.proto='static'",
        "set network.wan.ipaddr='198.51.100.10'",
        "set network.wan.netmask='255.255.255.0'",
        "set network.wan.gateway='198.51.100.1'",
        "add_list network.wan.dns='198.51.100.1'",
        "add_list network.wan.dns='198.51.100.2'",
    ]


def test_missing_wan_section_is_created() -> None:
    changes = wan_changes(parse("config interface 'lan'\n\toption proto 'static'\n"), DHCP)
    assert changes == [
        "set network.wan='interface'",
        "set network.wan.device='wan'",
        "set network.wan.proto='dhcp'",
    ]


def _uci(build: Path, confdir: Path, *args: str, stdin: str | None = None) -> str:
    rootfs = build / "rootfs"
    proc = subprocess.run(
        [str(rootfs / "usr/bin/uci"), "-c", str(confdir), "-t", str(confdir / ".delta"), *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "LD_LIBRARY_PATH": str(rootfs / "usr/lib")},
    )
    return proc.stdout


@pytest.fixture
def confdir(tmp_path: Path) -> Path:
    (tmp_path / ".delta").mkdir()
    (tmp_path / "network").write_text(STOCK)
    return tmp_path


def _apply(build: Path, confdir: Path, wan: Wan) -> list[str]:
    changes = wan_changes(parse((confdir / "network").read_text()), wan)
    if changes:
        _uci(build, confdir, "batch", stdin="\n".join(changes) + "\n")
        _uci(build, confdir, "commit", "network")
    return changes


def test_real_uci_round_trip_static_dhcp_static(openwrt_build: Path, confdir: Path) -> None:
    assert _apply(openwrt_build, confdir, STATIC)
    shown = _uci(openwrt_build, confdir, "show", "network.wan")
    assert "network.wan.ipaddr='198.51.100.10'" in shown
    assert "network.wan.dns='198.51.100.1' '198.51.100.2'" in shown
    assert _apply(openwrt_build, confdir, STATIC) == []  # applied: no second change
    # switching to DHCP leaves no static option behind
    assert _apply(openwrt_build, confdir, DHCP)
    shown = _uci(openwrt_build, confdir, "show", "network.wan")
    assert shown == "network.wan=interface\nnetwork.wan.device='wan'\nnetwork.wan.proto='dhcp'\n"
    assert _apply(openwrt_build, confdir, DHCP) == []
    # the loopback section was never touched
    assert "network.loopback.ipaddr='127.0.0.1'" in _uci(openwrt_build, confdir, "show")


def test_summarize_netifd_status() -> None:
    answer = {
        "up": True,
        "proto": "dhcp",
        "l3_device": "wan",
        "uptime": 12,
        "ipv4-address": [{"address": "198.51.100.120", "mask": 24}],
        "route": [
            {"target": "198.51.100.0", "mask": 24, "nexthop": "0.0.0.0"},
            {"target": "0.0.0.0", "mask": 0, "nexthop": "198.51.100.1"},
        ],
        "dns-server": ["198.51.100.1"],
    }
    assert summarize(answer) == {
        "up": True,
        "proto": "dhcp",
        "device": "wan",
        "addresses": ["198.51.100.120/24"],
        "gateway": "198.51.100.1",
        "dns": ["198.51.100.1"],
        "uptime_s": 12,
    }
    assert summarize({})["addresses"] == [] and summarize({})["up"] is False
