"""Event-driven notice of kernel changes through netlink multicast groups.

A raw netlink socket joined to a few multicast groups receives one message per change; the
daemon only needs to know *that* something changed and then re-reads the state it cares
about. Reading the socket ourselves until EAGAIN is exact on every pyroute2 version (pyroute2
0.9's IPRoute may buffer messages in its own asyncio loop, hiding them from a selector).

nftables changes are filtered before they wake anyone: every notification names the table it
touched and carries the netlink port id of the socket that committed it, so the table owner
can ignore its own writes and other tables' changes (``NftMonitor``'s ``relevant``).
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Callable
from typing import NamedTuple

from energyhubd.loop import EventLoop, Timer

NETLINK_ROUTE = 0
NETLINK_NETFILTER = 12
NFNLGRP_NFTABLES = 7
RTNLGRP_LINK = 1
RTNLGRP_IPV4_IFADDR = 5
RTNLGRP_IPV4_ROUTE = 7
SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_NEWGEN = 15  # one per committed transaction; names no table
NLA_TYPE_MASK = 0x3FFF
_NLMSGHDR = struct.Struct("=IHHII")  # length, type, flags, seq, port id
_NLATTR = struct.Struct("=HH")  # length, type


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
        """Read everything pending; return how many changes arrived that matter (0: a
        spurious wake-up, or nothing relevant).

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
            count += self.changes_in(data)

    def changes_in(self, datagram: bytes) -> int:
        """How many changes one datagram reports (here: any datagram is one)."""
        return 1

    def close(self) -> None:
        self._sock.close()


class NftChange(NamedTuple):
    """One nftables notification: who committed it and which table it touched."""

    port: int  # netlink port id of the committing socket
    family: int  # NFPROTO_* (1: inet)
    table: str | None  # None when the message could not be read


class NftMonitor(NetlinkGroups):
    """Committed nftables changes in this namespace (e.g. ``fw4 flush``) that ``relevant``
    accepts; without it, every change."""

    def __init__(self, relevant: Callable[[NftChange], bool] | None = None) -> None:
        super().__init__(NETLINK_NETFILTER, (NFNLGRP_NFTABLES,))
        self._relevant = relevant

    def changes_in(self, datagram: bytes) -> int:
        changes = nft_changes(datagram)
        if self._relevant is None:
            return len(changes)
        return sum(1 for change in changes if self._relevant(change))


def nft_changes(datagram: bytes) -> list[NftChange]:
    """The table changes in one NFNLGRP_NFTABLES datagram (generation markers left out).

    Every nf_tables object message (table, chain, rule, set, element list, object,
    flowtable) carries its table's name as attribute 1 after the 4-byte nfgenmsg; a message
    cut short is reported with ``table`` None, so a caller re-checks rather than misses it.
    """
    changes: list[NftChange] = []
    offset = 0
    while offset + _NLMSGHDR.size <= len(datagram):
        length, kind, _flags, _seq, port = _NLMSGHDR.unpack_from(datagram, offset)
        end = offset + length
        if length < _NLMSGHDR.size or end > len(datagram):
            changes.append(NftChange(port, 0, None))
            break
        if kind >> 8 == NFNL_SUBSYS_NFTABLES and kind & 0xFF != NFT_MSG_NEWGEN:
            body = offset + _NLMSGHDR.size
            family = datagram[body] if body < end else 0
            changes.append(NftChange(port, family, _table_name(datagram, body + 4, end)))
        offset += (length + 3) & ~3
    return changes


def _table_name(data: bytes, offset: int, end: int) -> str | None:
    while offset + _NLATTR.size <= end:
        length, kind = _NLATTR.unpack_from(data, offset)
        if length < _NLATTR.size or offset + length > end:
            return None
        if kind & NLA_TYPE_MASK == 1:
            raw = data[offset + _NLATTR.size : offset + length]
            return raw.split(b"\0", 1)[0].decode("ascii", "replace")
        offset += (length + 3) & ~3
    return None


def own_ports(protocol: int) -> set[int]:
    """Port ids of this process's netlink sockets of ``protocol`` in its network namespace.

    Library sockets (libnftables opens its own on first use and keeps it) are found by
    their inode: ``/proc/self/fd`` names each socket's inode and ``/proc/self/net/netlink``
    maps inodes to port ids. Empty when /proc cannot say (then no change looks like ours).
    """
    inodes: set[int] = set()
    try:
        for fd in os.listdir("/proc/self/fd"):
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
        ports: set[int] = set()
        with open("/proc/self/net/netlink", encoding="ascii") as table:
            next(table, None)  # header: sk Eth Pid Groups Rmem Wmem Dump Locks Drops Inode
            for line in table:
                fields = line.split()
                if len(fields) >= 10 and int(fields[1]) == protocol and int(fields[9]) in inodes:
                    ports.add(int(fields[2]))
        return ports
    except (OSError, ValueError):
        return set()


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
