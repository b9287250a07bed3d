"""Watch the LAN bridge's forwarding database (FDB) for moves of a few MACs, over netlink.

When frames from one MAC arrive on another bridge port, the kernel moves the FDB entry and
announces it (RTM_NEWNEIGH, family AF_BRIDGE). Two hosts sharing a MAC on two ports make the
entry swing at every frame from the other one: a clone of the display's MAC.

Why a socket of its own (not the neighbour watcher's): two hosts blasting frames with one
MAC produced 54,000 such messages in 5 s (measured, two namespaces on a Linux bridge), which
overflowed the shared socket 199 times, each overflow costing a full neighbour-table re-dump,
and took 2.4 s of CPU. Here a kernel-side filter passes only the watched MACs (a flood of
other MACs wakes nothing), an overflow is harmless (what is still queued keeps its order, and
a swing shows in any part of it), only the first 256 queued messages of a read are decoded,
and the monitor reads this socket at most once a second (``InventoryMonitor``). The same
blast then cost 0.06-0.07 s of CPU in 5.5 s (two runs), no neighbour re-dump.
"""

from __future__ import annotations

import contextlib
import errno
import struct
from collections.abc import Collection
from typing import Any

from ..inventory.neighbour import PortUpdate
from .neighbours import RCVBUF, attach_filter, open_filtered
from .rtnl import ndmsg

__all__ = ["FdbWatcher", "PortUpdate", "fdb_filter"]

RTMGRP_NEIGH = 0x4
RTM_NEWNEIGH = 28
NDA_LLADDR = 2
AF_BRIDGE = 7
MAX_WATCHED_MACS = 32  # four filter instructions each; jumps must stay below 256
_NLMSGHDR = struct.Struct("=IHHII")
_NDMSG_SIZE = 12
# Classic BPF opcodes (linux/filter.h).
_LDB, _LDH, _LDW, _JEQ, _RET = 0x30, 0x28, 0x20, 0x15, 0x06
_SOCK_FILTER = struct.Struct("=HBBI")


def _host_u16(value: int) -> int:
    """``value`` as a BPF absolute load sees a host-order u16 (it reads network order)."""
    return int.from_bytes(struct.pack("=H", value), "big")


def fdb_filter(macs: Collection[str]) -> bytes:
    """A socket filter passing only new/moved bridge FDB entries of ``macs``.

    Offsets are those of a single-message datagram, as the kernel sends each notification:
    ``nlmsg_type`` at 4, ``ndm_family`` at 16, and the MAC - ``NDA_LLADDR``, the first
    attribute the bridge puts in its FDB messages - at 16 + 12 + 4.
    """
    wanted = [bytes.fromhex(m.replace(":", "")) for m in sorted(macs)[:MAX_WATCHED_MACS]]
    attr = _NLMSGHDR.size + _NDMSG_SIZE
    drop = 6 + 4 * len(wanted)  # then PASS; a jump counts from the next instruction
    insns: list[tuple[int, int, int, int]] = [
        (_LDH, 0, 0, 4),  # 0: A = nlmsg_type
        (_JEQ, 0, drop - 2, _host_u16(RTM_NEWNEIGH)),  # 1
        (_LDB, 0, 0, _NLMSGHDR.size),  # 2: A = ndm_family
        (_JEQ, 0, drop - 4, AF_BRIDGE),  # 3
        (_LDH, 0, 0, attr + 2),  # 4: A = type of the first attribute
        (_JEQ, 0, drop - 6, _host_u16(NDA_LLADDR)),  # 5
    ]
    at = 6
    for mac in wanted:  # MAC bytes 0-3, then 4-5; a mismatch tries the next MAC
        nxt = at + 4
        insns += [
            (_LDW, 0, 0, attr + 4),
            (_JEQ, 0, nxt - (at + 2), int.from_bytes(mac[:4], "big")),
            (_LDH, 0, 0, attr + 8),
            (_JEQ, drop + 1 - (at + 4), nxt - (at + 4), int.from_bytes(mac[4:], "big")),
        ]
        at = nxt
    insns += [(_RET, 0, 0, 0), (_RET, 0, 0, 0xFFFFFFFF)]  # DROP, PASS
    return b"".join(_SOCK_FILTER.pack(*insn) for insn in insns)


class FdbWatcher:
    """Moves of watched MACs between the ports of bridge ``bridge``: a selectable feed.

    The bridge is followed by name (OpenWrt re-creates ``br-lan`` on a network restart): a
    message naming another master makes the next ``drain`` look the name up again.
    """

    def __init__(self, bridge: str, netns: str | None = None, rcvbuf: int = RCVBUF) -> None:
        self.bridge = bridge
        self.lost = 0  # overflows: moves the kernel could not queue (harmless, counted)
        self.skipped = 0  # messages read past ``drain``'s limit and dropped undecoded
        self._macs: frozenset[str] = frozenset()
        self._index: int | None = None
        self._names: dict[int, str] = {}
        self._ipr, self._sock = open_filtered(netns, rcvbuf, fdb_filter(()), RTMGRP_NEIGH)

    def fileno(self) -> int:
        return self._sock.fileno()

    def watch_macs(self, macs: Collection[str]) -> None:
        """Report moves of ``macs`` only (at most ``MAX_WATCHED_MACS``)."""
        wanted = frozenset(m.lower() for m in macs)
        if wanted != self._macs:
            self._macs = wanted
            attach_filter(self._sock, fdb_filter(wanted))

    def drain(self, max_messages: int = 256) -> list[PortUpdate]:
        """The moves queued now, oldest first, without blocking. Only the first
        ``max_messages`` are decoded; the rest of the queue is read and dropped (``skipped``):
        a swing shows in any part of it, and decoding is what costs."""
        updates: list[PortUpdate] = []
        relooked = False
        decoded = 0
        for _ in range(1 << 16):
            try:
                data = self._sock.recv(65536)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    self.lost += 1
                    continue
                if exc.errno == errno.EINTR:
                    continue
                raise
            if decoded >= max_messages:
                self.skipped += 1
                continue
            decoded += 1
            for msg in self._messages(data):
                master = msg.get_attr("NDA_MASTER")
                if master != self._index and not relooked:
                    relooked = True  # our bridge may have been re-created: look once
                    self._index = self._lookup()
                update = self._update(msg)
                if update is not None:
                    updates.append(update)
        return updates

    def _messages(self, data: bytes) -> list[Any]:
        found = []
        offset = 0
        while offset + _NLMSGHDR.size <= len(data):
            length, msg_type = _NLMSGHDR.unpack_from(data, offset)[:2]
            if length < _NLMSGHDR.size or offset + length > len(data):
                break  # malformed: drop the rest of this datagram
            if msg_type == RTM_NEWNEIGH:
                try:
                    msg = ndmsg(data[offset : offset + length])
                    msg.decode()
                    if msg["family"] == AF_BRIDGE:
                        found.append(msg)
                except Exception:  # a message we cannot decode must not kill the loop
                    pass
            offset += (length + 3) & ~3
        return found

    def _update(self, msg: Any) -> PortUpdate | None:
        """A watched MAC on one of our bridge's ports (the bridge's own entries name the
        bridge itself)."""
        mac = msg.get_attr("NDA_LLADDR")
        port = int(msg["ifindex"])
        if self._index is None or msg.get_attr("NDA_MASTER") != self._index:
            return None
        if port == self._index or not mac or str(mac).lower() not in self._macs:
            return None
        return PortUpdate(str(mac).lower(), self._port_name(port), port)

    def _lookup(self) -> int | None:
        self._names.clear()  # indexes may have been reused
        found = self._ipr.link_lookup(ifname=self.bridge)
        return int(found[0]) if found else None

    def _port_name(self, index: int) -> str:
        name = self._names.get(index)
        if name is None:
            try:
                name = str(self._ipr.get_links(index)[0].get_attr("IFLA_IFNAME"))
            except Exception:  # gone already: its index still tells the ports apart
                name = f"if{index}"
            self._names[index] = name
        return name

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._sock.close()
        with contextlib.suppress(Exception):
            self._ipr.close()

    def __enter__(self) -> FdbWatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
