"""NTP servers and the DNS fallback rendered as ``uci batch`` changes (system, dhcp)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from energyhubd.config.load import parse_document
from energyhubd.openwrt.platform_sync import plan_changes, sync_platform
from energyhubd.openwrt.uci import Package, parse, render
from energyhubd.openwrt.uci_dhcp import dns_changes
from energyhubd.openwrt.uci_system import apply_ntp_changes, ntp_changes
from tests.real_uci import uci_batch

OPENWRT_SYSTEM = """\
config system
	option hostname 'OpenWrt'
	option timezone 'UTC'

config timeserver 'ntp'
	option enabled '1'
	option enable_server '0'
	list server '0.openwrt.pool.ntp.org'
	list server '1.openwrt.pool.ntp.org'
	list server '2.openwrt.pool.ntp.org'
	list server '3.openwrt.pool.ntp.org'
"""

OPENWRT_DHCP = """\
config dnsmasq
	option domainneeded '1'
	option leasefile '/tmp/dhcp.leases'
	option resolvfile '/tmp/resolv.conf.d/resolv.conf.auto'
	list server '/corp.example/10.0.0.53'

config dhcp 'lan'
	option interface 'lan'
	option start '200'
	option limit '45'
	option leasetime '24h'

config host 'energyhub_display'
	option name 'display'
	option ip '192.168.254.200'
"""


def test_ntp_servers_replace_the_pool_and_nothing_else() -> None:
    current = parse(OPENWRT_SYSTEM)
    commands = ntp_changes(current, ["ntp1.example.net", "192.0.2.123"])
    assert commands == [
        "delete system.ntp.server",
        "add_list system.ntp.server='ntp1.example.net'",
        "add_list system.ntp.server='192.0.2.123'",
    ]
    after = uci_batch(current, commands)
    ntp = after.named("ntp")
    assert ntp is not None
    assert ntp.options["server"] == ["ntp1.example.net", "192.0.2.123"]
    assert ntp.options["enable_server"] == "0"  # the site's option is kept
    assert ntp_changes(after, ["ntp1.example.net", "192.0.2.123"]) == []  # applied: no restart


def test_ntp_client_is_switched_on_and_a_missing_section_created() -> None:
    off = parse(OPENWRT_SYSTEM.replace("option enabled '1'", "option enabled '0'"))
    assert ntp_changes(off, ["0.openwrt.pool.ntp.org", "1.openwrt.pool.ntp.org"]) == [
        "set system.ntp.enabled='1'",
        "delete system.ntp.server",
        "add_list system.ntp.server='0.openwrt.pool.ntp.org'",
        "add_list system.ntp.server='1.openwrt.pool.ntp.org'",
    ]
    bare = parse("config system\n\toption hostname 'x'\n")
    commands = ntp_changes(bare, ["pool.example"])
    assert commands[0] == "set system.ntp='timeserver'"
    after = uci_batch(bare, commands)
    assert ntp_changes(after, ["pool.example"]) == []
    anonymous = parse("config timeserver\n\toption enabled '1'\n\toption server 'a.example b'\n")
    assert ntp_changes(anonymous, ["a.example", "b"]) == []  # a space-separated option counts
    assert ntp_changes(anonymous, ["c.example"])[0] == "delete system.@timeserver[0].server"


def test_apply_ntp_changes_restarts_sysntpd_only_for_a_change() -> None:
    calls: list[tuple[list[str], str | None]] = []

    def run(argv: Sequence[str], stdin: str | None) -> None:
        calls.append((list(argv), stdin))

    assert apply_ntp_changes([], run) is False and calls == []
    assert apply_ntp_changes(["set system.ntp.enabled='1'"], run) is True
    assert [argv for argv, _ in calls] == [
        ["uci", "batch"],
        ["uci", "commit", "system"],
        ["/etc/init.d/sysntpd", "restart"],
    ]


def test_dns_fallback_joins_the_server_list_after_the_sites_entries() -> None:
    current = parse(OPENWRT_DHCP)
    commands = dns_changes(current, ["8.8.8.8"])
    assert commands == [
        "delete dhcp.@dnsmasq[0].server",
        "add_list dhcp.@dnsmasq[0].server='/corp.example/10.0.0.53'",
        "add_list dhcp.@dnsmasq[0].server='8.8.8.8'",
    ]
    after = uci_batch(current, commands)
    assert dns_changes(after, ["8.8.8.8"]) == []
    # A changed fallback replaces the old one; the site's domain entry stays.
    changed = uci_batch(after, dns_changes(after, ["9.9.9.9", "1.1.1.1"]))
    section = changed.of_type("dnsmasq")[0]
    assert section.options["server"] == ["/corp.example/10.0.0.53", "9.9.9.9", "1.1.1.1"]
    # No fallback at all: only the site's entry is left.
    emptied = uci_batch(changed, dns_changes(changed, []))
    assert emptied.of_type("dnsmasq")[0].options["server"] == ["/corp.example/10.0.0.53"]
    # A file without a server list gets one; without a dnsmasq section, one is added.
    plain = parse("config dnsmasq\n\toption domainneeded '1'\n")
    assert dns_changes(plain, ["8.8.8.8"]) == ["add_list dhcp.@dnsmasq[0].server='8.8.8.8'"]
    assert dns_changes(parse(""), ["8.8.8.8"]) == [
        "add dhcp dnsmasq",
        "add_list dhcp.@dnsmasq[0].server='8.8.8.8'",
    ]
    assert dns_changes(plain, []) == []


def test_platform_sync_applies_each_package_once_and_only_when_changed(tmp_path: Path) -> None:
    dhcp, system = tmp_path / "dhcp", tmp_path / "system"
    dhcp.write_text(OPENWRT_DHCP)
    system.write_text(OPENWRT_SYSTEM)
    config = parse_document(
        {
            "platform": "openwrt",
            "dns": {"fallback": ["8.8.8.8"]},
            "outbound": {"ntp_servers": ["ntp.example.net"]},
        }
    )
    calls: list[list[str]] = []

    def run(argv: Sequence[str], stdin: str | None) -> None:
        calls.append(list(argv))
        if argv[:2] == ["uci", "batch"]:  # the real uci applies each package's lines
            assert stdin is not None
            for path in (dhcp, system):
                package = parse(path.read_text())
                mine = [c for c in stdin.splitlines() if c.split(" ")[1].startswith(path.name)]
                path.write_text(render(uci_batch(package, mine)))

    result = sync_platform(config, str(dhcp), str(system), run, network_file=None)
    assert result.dhcp == (
        "delete dhcp.@dnsmasq[0].server",
        "add_list dhcp.@dnsmasq[0].server='/corp.example/10.0.0.53'",
        "add_list dhcp.@dnsmasq[0].server='8.8.8.8'",
    )
    assert "add_list system.ntp.server='ntp.example.net'" in result.system
    assert ["/etc/init.d/dnsmasq", "reload"] in calls
    assert ["/etc/init.d/sysntpd", "restart"] in calls
    calls.clear()
    again = sync_platform(config, str(dhcp), str(system), run, network_file=None)
    assert again.dhcp == () and again.system == () and calls == []
    # Missing files: everything is created.
    fresh = plan_changes(config, Package(), Package())
    assert "set dhcp.lan='dhcp'" in fresh.dhcp and "set system.ntp='timeserver'" in fresh.system
