"""Addresses, links and routes through rtnetlink (pyroute2).

Works with pyroute2 0.7.9 (OpenWrt feed) and 0.9.x: only the long-stable synchronous IPRoute
calls are used.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from .rtnl import IPRoute, NetlinkError

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


@dataclass
class Netlink:
    """Synchronous rtnetlink operations; owned by the daemon's event loop."""

    ipr: IPRoute = field(default_factory=IPRoute)

    def index(self, ifname: str) -> int:
        found = self.ipr.link_lookup(ifname=ifname)
        if not found:
            raise LinkMissing(ifname)
        return int(found[0])

    def ipv4_addresses(self, index: int) -> list[ipaddress.IPv4Interface]:
        result = []
        for msg in self.ipr.get_addr(index=index, family=AF_INET):
            result.append(
                ipaddress.IPv4Interface(f"{msg.get_attr('IFA_ADDRESS')}/{msg['prefixlen']}")
            )
        return result

    def ensure_address(
        self, ifname: str, address: ipaddress.IPv4Interface, exclusive: bool
    ) -> bool:
        """Make ``address`` present (and the link up); with ``exclusive`` remove other IPv4s.

        Returns True when something changed.
        """
        index = self.index(ifname)
        changed = False
        link = self.ipr.get_links(index)[0]
        if not link["flags"] & 1:  # IFF_UP
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

    def ensure_default_route(self, gateway: ipaddress.IPv4Address) -> bool:
        current = self.default_gateway()
        if current == str(gateway):
            return False
        if current is not None:
            self.ipr.route("del", dst="0.0.0.0/0")
        self.ipr.route("add", dst="0.0.0.0/0", gateway=str(gateway))
        return True

    def default_gateway(self) -> str | None:
        for route in self.ipr.get_default_routes(family=AF_INET):
            gateway = route.get_attr("RTA_GATEWAY")
            if gateway:
                return str(gateway)
        return None

    def wan_state(self, ifname: str) -> WanState:
        try:
            index = self.index(ifname)
        except LinkMissing:
            return WanState(ifname, present=False, up=False)
        link = self.ipr.get_links(index)[0]
        up = bool(link["flags"] & 1) and link.get_attr("IFLA_OPERSTATE") in ("UP", "UNKNOWN")
        addrs = tuple(str(a) for a in self.ipv4_addresses(index))
        return WanState(
            ifname, present=True, up=up, addresses=addrs, gateway=self.default_gateway()
        )

    def close(self) -> None:
        self.ipr.close()
