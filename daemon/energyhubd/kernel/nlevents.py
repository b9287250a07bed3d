"""Event-driven notice of kernel changes through netlink multicast groups.

A raw netlink socket joined to a few multicast groups receives one message per change; the
daemon only needs to know *that* something changed and then re-reads the state it cares
about. Reading the socket ourselves until EAGAIN is exact on every pyroute2 version (pyroute2
0.9's IPRoute may buffer messages in its own asyncio loop, hiding them from a selector).
"""

from __future__ import annotations

import socket
from collections.abc import Callable

from energyhubd.loop import EventLoop, Timer

NETLINK_ROUTE = 0
NETLINK_NETFILTER = 12
NFNLGRP_NFTABLES = 7
RTNLGRP_LINK = 1
RTNLGRP_IPV4_IFADDR = 5
RTNLGRP_IPV4_ROUTE = 7
SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1


class NetlinkGroups:
    """A selectable socket that counts messages on the given multicast groups."""

    def __init__(self, protocol: int, groups: tuple[int, ...]) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, protocol)
        self._sock.bind((0, 0))
        for group in groups:
            self._sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, group)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self._sock.setblocking(False)

    def fileno(self) -> int:
        return self._sock.fileno()

    def drain(self) -> int:
        """Read everything pending; return how many datagrams arrived (0: spurious wake-up).

        An overrun (ENOBUFS) still counts as a change: events were lost, so the caller
        re-checks.
        """
        count = 0
        while True:
            try:
                data = self._sock.recv(65536)
            except BlockingIOError:
                return count
            except OSError:
                count += 1
                continue
            if not data:
                return count
            count += 1

    def close(self) -> None:
        self._sock.close()


class NftMonitor(NetlinkGroups):
    """Every committed nftables change in this namespace (e.g. ``fw4 flush``)."""

    def __init__(self) -> None:
        super().__init__(NETLINK_NETFILTER, (NFNLGRP_NFTABLES,))


class LinkEvents(NetlinkGroups):
    """Links, IPv4 addresses and IPv4 routes appearing, changing or going away."""

    def __init__(self) -> None:
        super().__init__(NETLINK_ROUTE, (RTNLGRP_LINK, RTNLGRP_IPV4_IFADDR, RTNLGRP_IPV4_ROUTE))


def watch(
    loop: EventLoop, source: NetlinkGroups, debounce: float, handler: Callable[[], None]
) -> Callable[[], None]:
    """Call ``handler`` on the loop once per burst of changes (``debounce`` seconds after the
    first); returns the function that stops watching and closes ``source``."""
    timer: list[Timer | None] = [None]

    def fired() -> None:
        timer[0] = None
        handler()

    def on_event() -> None:
        if source.drain() and timer[0] is None:
            timer[0] = loop.call_later(debounce, fired)

    def close() -> None:
        loop.remove_reader(source)
        source.close()

    loop.add_reader(source, on_event)
    return close
