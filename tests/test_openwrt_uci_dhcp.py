"""The DHCP plan rendered as ``uci batch`` changes of /etc/config/dhcp."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any

from energyhubd.config.load import parse_document
from energyhubd.openwrt.uci import parse
from energyhubd.openwrt.uci_dhcp import (
    apply_dhcp_changes,
    dhcp_changes,
    leasetime_text,
)
from energyhubd.policy.dhcp import DhcpHost, DhcpPlan, build_plan
from tests.real_uci import uci_batch

OPENWRT_DHCP = """\
config dnsmasq
	option domainneeded '1'
	option leasefile '/tmp/dhcp.leases'

config dhcp 'lan'
	option interface 'lan'
	option start '100'
	option limit '150'
	option leasetime '12h'

config dhcp 'wan'
	option interface 'wan'
	option ignore '1'

config host 'printer'
	option name 'printer'
	option mac '02:00:5e:00:00:99'
	option ip '192.168.254.50'
"""


def plan(doc: dict[str, Any]) -> DhcpPlan:
    return build_plan(parse_document(doc))


def test_default_policy_on_a_stock_openwrt_dhcp_file() -> None:
    current = parse(OPENWRT_DHCP)
    commands = dhcp_changes(current, plan({}))
    assert commands == [
        "set dhcp.lan.start='200'",
        "set dhcp.lan.limit='45'",
        "set dhcp.lan.leasetime='24h'",
        "set dhcp.energyhub_display='host'",
        "set dhcp.energyhub_display.name='display'",
        "set dhcp.energyhub_display.ip='192.168.254.200'",
    ]
    after = uci_batch(current, commands)
    assert dhcp_changes(after, plan({})) == []  # applied: nothing left to do, no reload
    assert after.named("printer") == current.named("printer")  # the site's own host stays
    assert after.named("wan") == current.named("wan")


def test_only_differences_are_emitted() -> None:
    doc = {
        "lan": {
            "dhcp": {
                "lease_time": "90m",
                "reservations": [
                    {"name": "display", "mac": "02:00:5E:10:00:01", "ip": "192.168.254.200"},
                    {"name": "unit-1", "ip": "192.168.254.201"},
                ],
            }
        }
    }
    current = uci_batch(parse(OPENWRT_DHCP), dhcp_changes(parse(OPENWRT_DHCP), plan({})))
    commands = dhcp_changes(current, plan(doc))
    assert commands == [
        "set dhcp.lan.leasetime='90m'",
        "set dhcp.energyhub_display.mac='02:00:5e:10:00:01'",
        "set dhcp.energyhub_unit_1='host'",
        "set dhcp.energyhub_unit_1.name='unit-1'",
        "set dhcp.energyhub_unit_1.ip='192.168.254.201'",
    ]
    current = uci_batch(current, commands)
    # the display loses its MAC and unit-1 goes: the stale option and section are deleted
    doc2 = {
        "lan": {
            "dhcp": {
                "lease_time": "90m",
                "reservations": [{"name": "display", "ip": "192.168.254.200"}],
            }
        }
    }
    commands = dhcp_changes(current, plan(doc2))
    assert commands == ["delete dhcp.energyhub_display.mac", "delete dhcp.energyhub_unit_1"]
    assert dhcp_changes(uci_batch(current, commands), plan(doc2)) == []


def test_missing_lan_section_is_created() -> None:
    current = parse("config dnsmasq\n")
    hosts = (
        DhcpHost("a_b", ipaddress.IPv4Address("10.0.0.20"), None),
        DhcpHost("a-b", ipaddress.IPv4Address("10.0.0.21"), None),
    )
    router = ipaddress.IPv4Interface("10.0.0.1/24")
    start, end = ipaddress.IPv4Address("10.0.0.10"), ipaddress.IPv4Address("10.0.0.14")
    commands = dhcp_changes(current, DhcpPlan("br-lan", router, start, end, 3600, hosts, (), ()))
    assert commands[2:5] == [
        "set dhcp.lan.start='10'",
        "set dhcp.lan.limit='5'",
        "set dhcp.lan.leasetime='1h'",
    ]
    assert commands[:2] == ["set dhcp.lan='dhcp'", "set dhcp.lan.interface='lan'"]
    after = uci_batch(current, commands)
    # two names that sanitise alike still get two sections
    assert {s.name for s in after.of_type("host")} == {"energyhub_a_b", "energyhub_a_b_2"}


def test_leasetime_spelling() -> None:
    assert [leasetime_text(s) for s in (86400, 7200, 5400, 150)] == ["24h", "2h", "90m", "150"]


def test_apply_runs_uci_only_when_something_changed() -> None:
    calls: list[tuple[list[str], str | None]] = []

    def run(argv: Sequence[str], stdin: str | None) -> None:
        calls.append((list(argv), stdin))

    assert apply_dhcp_changes([], run) is False
    assert calls == []
    assert apply_dhcp_changes(["set dhcp.lan.limit='45'"], run) is True
    assert calls == [
        (["uci", "batch"], "set dhcp.lan.limit='45'\n"),
        (["uci", "commit", "dhcp"], None),
        (["/etc/init.d/dnsmasq", "reload"], None),
    ]
