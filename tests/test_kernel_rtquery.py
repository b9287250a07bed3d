"""The lean rtnetlink reads answer what pyroute2 answers, in a throwaway namespace."""

from __future__ import annotations

import ipaddress

import pytest

from energyhub_lab import netns
from energyhubd.kernel.neighbours import in_netns
from energyhubd.kernel.netlink import LinkMissing, Netlink
from energyhubd.kernel.rtnl import IPRoute
from energyhubd.kernel.rtquery import RtQuery

pytestmark = [pytest.mark.netns, pytest.mark.feed]


def test_reads_match_pyroute2(ns: str) -> None:
    netns.ns_run(ns, ["ip", "link", "add", "wan", "type", "veth", "peer", "name", "wan-peer"])
    netns.ns_run(ns, ["ip", "link", "set", "wan", "up"])
    netns.ns_run(ns, ["ip", "link", "set", "wan-peer", "up"])
    netns.ns_run(ns, ["ip", "addr", "add", "203.0.113.9/24", "dev", "wan"])
    netns.ns_run(ns, ["ip", "addr", "add", "203.0.113.10/32", "dev", "wan"])
    netns.ns_run(ns, ["ip", "route", "add", "default", "via", "203.0.113.1"])
    netns.ns_run(ns, ["ip", "link", "add", "br-lan", "type", "bridge"])
    with in_netns(ns):
        query, ipr = RtQuery(), IPRoute()
    try:
        for name in ("wan", "br-lan", "lo"):
            link = query.link(name)
            assert link is not None
            (theirs,) = ipr.get_links(link.index)
            assert theirs.get_attr("IFLA_IFNAME") == name
            assert link.flags == theirs["flags"]
            assert link.operstate == theirs.get_attr("IFLA_OPERSTATE")
            addrs = [
                (m.get_attr("IFA_ADDRESS"), m["prefixlen"])
                for m in ipr.get_addr(index=link.index, family=2)
            ]
            assert query.ipv4_addresses(link.index) == addrs
        assert query.link("nonexistent0") is None
        assert query.default_gateway() == "203.0.113.1"
        netns.ns_run(ns, ["ip", "route", "del", "default"])
        assert query.default_gateway() is None
    finally:
        query.close()
        ipr.close()


def test_netlink_state_and_changes(ns: str) -> None:
    netns.ns_run(ns, ["ip", "link", "add", "br-lan", "type", "bridge"])
    with in_netns(ns):
        nl = Netlink()
    try:
        wanted = ipaddress.IPv4Interface("192.168.254.1/24")
        assert nl.ensure_address("br-lan", wanted, exclusive=True) is True
        assert nl.ensure_address("br-lan", wanted, exclusive=True) is False
        assert nl.ipv4_addresses(nl.index("br-lan")) == [wanted]
        state = nl.wan_state("br-lan")
        assert state.present and state.addresses == ("192.168.254.1/24",)
        assert not nl.wan_state("wan").present
        with pytest.raises(LinkMissing):
            nl.index("wan")
    finally:
        nl.close()


def test_many_queries_reuse_one_socket(ns: str) -> None:
    """A thousand queries keep answering (the buffer is reused, no answer is left behind)."""
    with in_netns(ns):
        query = RtQuery()
    try:
        for _ in range(1000):
            link = query.link("lo")
            assert link is not None and link.index == 1
            assert query.ipv4_addresses(1) == [("127.0.0.1", 8)] or not link.up
    finally:
        query.close()
