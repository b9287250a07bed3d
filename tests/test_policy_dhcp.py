"""The Linux dnsmasq rendering: pool and reservations, and the order of the upstream servers.

dnsmasq's ``strict-order`` asks ``server=`` lines before the servers of its resolv file
(measured with dnsmasq 2.90), so with a DHCP WAN the fallback is merged into one resolv file
after the DHCP-provided servers; the netns test is in test_outbound_daemon.py.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from energyhubd.config.load import parse_document
from energyhubd.kernel.upstream import UpstreamFile
from energyhubd.policy.dhcp import build_plan, render_dnsmasq, render_upstream, upstream_servers

FALLBACK = (ipaddress.IPv4Address("8.8.8.8"),)


def render(doc: dict[str, object], resolv: str | None = "/state/upstream.resolv") -> list[str]:
    plan = build_plan(parse_document({"platform": "linux", **doc}))
    return render_dnsmasq(plan, "/state/leases", "/state/pid", None, resolv).splitlines()


def test_dhcp_wan_reads_the_merged_file_and_no_server_line_jumps_ahead() -> None:
    lines = render({})
    assert "strict-order" in lines
    assert "resolv-file=/state/upstream.resolv" in lines
    assert not [line for line in lines if line.startswith("server=")]
    assert "no-resolv" not in lines
    assert "dhcp-range=192.168.254.200,192.168.254.244,255.255.255.0,86400" in lines


def test_static_wan_lists_its_servers_before_the_fallback() -> None:
    lines = render(
        {
            "wan": {
                "proto": "static",
                "address": "198.51.100.10/24",
                "gateway": "198.51.100.1",
                "dns": ["198.51.100.1", "198.51.100.2"],
            },
            "dns": {"fallback": ["8.8.8.8", "8.8.4.4"]},
        }
    )
    servers = [line for line in lines if line.startswith("server=")]
    assert servers == [
        "server=198.51.100.1",
        "server=198.51.100.2",
        "server=8.8.8.8",
        "server=8.8.4.4",
    ]
    assert "no-resolv" in lines and "strict-order" in lines


def test_without_a_resolv_file_only_the_fallback_is_asked() -> None:
    lines = render({}, resolv=None)
    assert [line for line in lines if line.startswith("server=")] == ["server=8.8.8.8"]
    assert "no-resolv" in lines


def test_no_fallback_renders_no_server_line() -> None:
    lines = render({"dns": {"fallback": []}}, resolv=None)
    assert not [line for line in lines if line.startswith("server=")]


def test_upstream_servers_reads_nameserver_lines_only() -> None:
    text = (
        "# udhcpc\nsearch customer.lab\nnameserver 198.51.100.1\nnameserver 127.0.0.1\n"
        "nameserver   198.51.100.1\nnameserver fe80::1%wan\nnameserver bogus\noptions ndots:1\n"
        "nameserver 0.0.0.0\nnameserver 2001:db8::53\n"
    )
    assert upstream_servers(text) == ["198.51.100.1", "fe80::1", "2001:db8::53"]


def test_render_upstream_puts_the_fallback_last_and_once() -> None:
    text = render_upstream(["198.51.100.1", "8.8.8.8"], FALLBACK)
    assert text.splitlines()[1:] == ["nameserver 198.51.100.1", "nameserver 8.8.8.8"]
    text = render_upstream([], FALLBACK)
    assert text.splitlines()[1:] == ["nameserver 8.8.8.8"]


def test_upstream_file_follows_the_wan_resolv_file(tmp_path: Path) -> None:
    wan = tmp_path / "wan.resolv"
    target = tmp_path / "dnsmasq" / "upstream.resolv"
    upstream = UpstreamFile(str(wan), target)  # no loop: written on configure/refresh only
    assert upstream.configure(FALLBACK) is True  # no lease yet: the fallback alone
    assert target.read_text().splitlines()[1:] == ["nameserver 8.8.8.8"]
    wan.write_text("nameserver 198.51.100.1\n")
    assert upstream.refresh() is True
    assert target.read_text().splitlines()[1:] == ["nameserver 198.51.100.1", "nameserver 8.8.8.8"]
    first = os.stat(target)
    assert upstream.refresh() is False  # same text: not rewritten
    assert os.stat(target).st_ino == first.st_ino
    # Rewritten within the same second: the mtime still moves on, so dnsmasq re-reads it.
    wan.write_text("nameserver 198.51.100.2\n")
    assert upstream.refresh() is True
    assert int(os.stat(target).st_mtime) > int(first.st_mtime)
    assert upstream.servers == ["198.51.100.2"]
