"""Addresses, links and routes through rtnetlink (pyroute2).

Works with pyroute2 0.7.9 (OpenWrt feed) and 0.9.x: changes use only the long-stable
synchronous IPRoute calls; the frequent reads use ``rtquery`` (see there why).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from .rtnl import IPRoute, NetlinkError
from .rtquery import LinkInfo, RtQuery

AF_INET = 2


FORWARDING_SYSCTL = "/proc/sys/net/ipv4/ip_forward"


def ensure_ipv4_forwarding(path: str = FORWARDING_SYSCTL) -> bool:
    """A NAT router forwards: turn IPv4 forwarding on in this namespace. True if changed.

    The sysctl belongs to the network namespace of the process writing it.
    """
    with open(path) as handle:
        if handle.read().strip() == "1":
            return False
    with open(path, "w") as handle:
        handle.write("1\n")
    return True


class LinkMissing(Exception):
    """The named network device does not exist (yet)."""


@dataclass(frozen=True)
class WanState:
    device: str
    present: bool
    up: bool
    addresses: tuple[str, ...] = ()
    gateway: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "present": self.present,
            "link": "up" if self.up else "down",
            "addresses": list(self.addresses),
            "gateway": self.gateway,
        }


class Netlink:
    """Synchronous rtnetlink operations; owned by the daemon's event loop.

    Reads (asked on every apply and snapshot) go through ``RtQuery``: one socket, one buffer,
    nothing kept per call. Changes go through pyroute2's ``IPRoute``. Both sockets are opened
    here, together: a socket belongs to the network namespace of the thread that opens it, so
    opening one later (say, on the first change) could reach a different namespace.
    """

    def __init__(self) -> None:
        self._query = RtQuery()
        self.ipr = IPRoute()

    def index(self, ifname: str) -> int:
        return self._link(ifname).index

    def _link(self, ifname: str) -> LinkInfo:
        found = self._query.link(ifname)
        if found is None:
            raise LinkMissing(ifname)
        return found

    def ipv4_addresses(self, index: int) -> list[ipaddress.IPv4Interface]:
        return [
            ipaddress.IPv4Interface(f"{address}/{prefixlen}")
            for address, prefixlen in self._query.ipv4_addresses(index)
        ]

    def ensure_address(
        self, ifname: str, address: ipaddress.IPv4Interface, exclusive: bool
    ) -> bool:
        """Make ``address`` present (and the link up); with ``exclusive`` remove other IPv4s.

        Returns True when something changed.
        """
        link = self._link(ifname)
        index = link.index
        changed = False
        if not link.up:
            self.ipr.link("set", index=index, state="up")
            changed = True
        present = self.ipv4_addresses(index)
        if exclusive:
            for other in present:
                if other != address:
                    self.ipr.addr(
                        "del", index=index, address=str(other.ip), prefixlen=other.network.prefixlen
                    )
                    changed = True
        if address not in present:
            try:
                self.ipr.addr(
                    "add", index=index, address=str(address.ip), prefixlen=address.network.prefixlen
                )
            except NetlinkError as exc:
                if exc.code != 17:  # EEXIST: raced with someone adding the same address
                    raise
            changed = True
        return changed

    def remove_address(self, ifname: str, address: ipaddress.IPv4Interface) -> bool:
        """Remove ``address`` from ``ifname`` if present (routes through it go with it)."""
        index = self.index(ifname)
        if address not in self.ipv4_addresses(index):
            return False
        self.ipr.addr(
            "del", index=index, address=str(address.ip), prefixlen=address.network.prefixlen
        )
        return True

    def ensure_default_route(self, gateway: ipaddress.IPv4Address) -> bool:
        current = self.default_gateway()
        if current == str(gateway):
            return False
        if current is not None:
            self.ipr.route("del", dst="0.0.0.0/0")
        self.ipr.route("add", dst="0.0.0.0/0", gateway=str(gateway))
        return True

    def default_gateway(self) -> str | None:
        return self._query.default_gateway()

    def wan_state(self, ifname: str) -> WanState:
        link = self._query.link(ifname)
        if link is None:
            return WanState(ifname, present=False, up=False)
        up = link.up and link.operstate in ("UP", "UNKNOWN")
        addrs = tuple(f"{a}/{p}" for a, p in self._query.ipv4_addresses(link.index))
        return WanState(
            ifname, present=True, up=up, addresses=addrs, gateway=self.default_gateway()
        )

    def close(self) -> None:
        self._query.close()
        self.ipr.close()
