"""Watch the kernel's IPv4 neighbour (ARP) table of the LAN device over netlink.

Why two sockets: events arrive on a plain non-blocking ``AF_NETLINK`` socket bound to the
RTMGRP_NEIGH multicast group and are decoded with pyroute2's ``ndmsg``; requests (dump,
probe) go through a separate pyroute2 ``IPRoute``. pyroute2 0.9's ``IPRoute`` reads the
socket from an internal asyncio loop and may keep received messages in its own queue, so a
selector on its ``fileno()`` can miss them; 0.7.9 buffers multicast messages that arrive
during a dump in a backlog in the same way. Reading the event socket ourselves until
``EAGAIN`` is exact on both versions, and a kernel buffer overflow (``ENOBUFS``) is seen
directly and answered with a full re-dump.

``probe(ip)`` asks the kernel to (re)resolve an address with ``NTF_USE``: for an unknown or
FAILED entry an ARP request goes out at once; a STALE entry goes through DELAY/PROBE. The
answer arrives as ordinary neighbour events. No external tools are needed.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import ipaddress
import os
import socket
import struct
from collections.abc import Iterator
from typing import Any

from ..inventory.neighbour import NeighbourUpdate, state_name
from .rtnl import IPRoute, ndmsg

__all__ = ["NeighbourUpdate", "NeighbourWatcher"]

RTMGRP_LINK = 0x1
RTMGRP_NEIGH = 0x4
RTM_NEWLINK = 16
RTM_DELLINK = 17
IFLA_IFNAME = 3
RTM_NEWNEIGH = 28
RTM_DELNEIGH = 29
NLMSG_ERROR = 2
NLMSG_OVERRUN = 4
NTF_USE = 0x01
CLONE_NEWNET = 0x40000000
_NLMSGHDR = struct.Struct("=IHHII")
_IFINFOMSG = struct.Struct("=BxHiII")
_RTATTR = struct.Struct("=HH")
RCVBUF = 1 << 20
SO_ATTACH_FILTER = 26
# Classic BPF opcodes (linux/filter.h) for the kernel-side neighbour filter.
_BPF_LDH_ABS, _BPF_LDW_ABS, _BPF_JEQ_K, _BPF_RET_K = 0x28, 0x20, 0x15, 0x06
_SOCK_FILTER = struct.Struct("=HBBI")

_libc = ctypes.CDLL(None, use_errno=True)


@contextlib.contextmanager
def in_netns(netns: str | None) -> Iterator[None]:
    """Run the block in network namespace ``netns`` (a name under /run/netns or a path).

    Sockets keep the namespace they were created in, so a watcher for a namespace can be
    built without moving the whole process (tests, and a daemon run inside a lab namespace).
    Only the calling thread switches, and it always switches back.
    """
    if netns is None:
        yield
        return
    path = netns if "/" in netns else f"/run/netns/{netns}"
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            if _libc.setns(target, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"setns {path}: {os.strerror(err)}")
        finally:
            os.close(target)
        try:
            yield
        finally:
            if _libc.setns(own, CLONE_NEWNET) != 0:  # pragma: no cover - cannot really fail
                err = ctypes.get_errno()
                raise OSError(err, f"setns back: {os.strerror(err)}")
    finally:
        os.close(own)


def _link_name(data: bytes, start: int, end: int) -> str | None:
    """IFLA_IFNAME from a link message's attributes (no full decode for every link event)."""
    offset = start
    while offset + _RTATTR.size <= end:
        length, kind = _RTATTR.unpack_from(data, offset)
        if length < _RTATTR.size or offset + length > end:
            return None
        if kind == IFLA_IFNAME:
            raw = data[offset + _RTATTR.size : offset + length].split(b"\0", 1)[0]
            return raw.decode("utf-8", "replace")
        offset += (length + 3) & ~3
    return None


def _wire(fmt: str, value: int) -> int:
    """``value`` as a BPF absolute load sees it: host-order bytes read in network order."""
    return int.from_bytes(struct.pack(fmt, value), "big")


def neighbour_filter(ifindex: int | None) -> bytes:
    """A socket filter passing link messages and neighbour messages of ``ifindex`` only.

    Why in the kernel: the socket is subscribed to every interface's neighbour changes, and
    with the portal connected the WAN gateway's entry cycles (REACHABLE, STALE, DELAY) as
    MQTT traffic uses it; each change woke the event loop only to be thrown away here. The
    offsets are those of a single-message datagram, as the kernel sends each notification:
    ``nlmsg_type`` at 4, ``ndm_ifindex`` at 16 + 4. ``None``: no neighbour message passes.
    """
    index = _wire("=i", ifindex) if ifindex is not None else _wire("=i", 0)
    insns = [
        (_BPF_LDH_ABS, 0, 0, 4),  # 0: A = nlmsg_type
        (_BPF_JEQ_K, 1, 0, _wire("=H", RTM_NEWNEIGH)),  # 1: neighbour message -> 3
        (_BPF_JEQ_K, 0, 2, _wire("=H", RTM_DELNEIGH)),  # 2: anything else -> 5 (pass)
        (_BPF_LDW_ABS, 0, 0, _NLMSGHDR.size + 4),  # 3: A = ndm_ifindex
        (_BPF_JEQ_K, 0, 1, index),  # 4: ours -> 5, another interface's -> 6
        (_BPF_RET_K, 0, 0, 0xFFFFFFFF),  # 5: pass whole
        (_BPF_RET_K, 0, 0, 0),  # 6: drop
    ]
    return b"".join(_SOCK_FILTER.pack(*insn) for insn in insns)


def open_filtered(
    netns: str | None, rcvbuf: int, program: bytes, groups: int
) -> tuple[IPRoute, socket.socket]:
    """An ``IPRoute`` for requests and a raw rtnetlink socket joined to ``groups``, both in
    ``netns``. The kernel filter ``program`` is attached before the socket joins, so no
    unfiltered message is ever queued. Both are closed again when anything fails."""
    with in_netns(netns):
        ipr = IPRoute()
        try:
            sock = socket.socket(
                socket.AF_NETLINK,
                socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC,
                socket.NETLINK_ROUTE,
            )
        except OSError:
            ipr.close()
            raise
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        attach_filter(sock, program)
        sock.bind((0, groups))
    except BaseException:
        sock.close()
        ipr.close()
        raise
    return ipr, sock


def attach_filter(sock: socket.socket, program: bytes) -> None:
    """SO_ATTACH_FILTER: the kernel copies the program; it replaces any filter before it."""
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = struct.pack("HP", len(program) // _SOCK_FILTER.size, ctypes.addressof(buffer))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


def _update_from(msg: Any, deleted: bool) -> NeighbourUpdate | None:
    ip = msg.get_attr("NDA_DST")
    if not ip:
        return None
    mac = msg.get_attr("NDA_LLADDR")
    nud = int(msg["state"])
    return NeighbourUpdate(
        ip=str(ip),
        mac=str(mac).lower() if mac else None,
        state=state_name(nud),
        ifindex=int(msg["ifindex"]),
        deleted=deleted,
        nud=nud,
    )


class NeighbourWatcher:
    """IPv4 neighbour entries of one interface: a selectable event feed plus dump and probe.

    The interface is followed by name: OpenWrt recreates ``br-lan`` on a network restart (new
    ifindex), and the daemon may start before it exists. While it is missing, ``ifindex`` is
    None and nothing is reported; when it (re)appears, ``drain`` returns ``deleted`` updates
    for the old entries and a dump of the new device. A socket filter (``neighbour_filter``)
    keeps other interfaces' neighbour changes in the kernel; it follows ``ifindex``.
    """

    def __init__(self, ifname: str, netns: str | None = None, rcvbuf: int = RCVBUF) -> None:
        self.ifname = ifname
        self.netns = netns
        self.resyncs = 0  # table re-reads: events lost (ENOBUFS) or the interface re-created
        self._known: set[str] = set()
        self._relinked = False
        self._ifindex: int | None = None
        self._ipr, self._sock = open_filtered(
            netns, rcvbuf, neighbour_filter(None), RTMGRP_NEIGH | RTMGRP_LINK
        )
        try:
            # Looked up after subscribing, so a link created meanwhile is not missed.
            found = self._ipr.link_lookup(ifname=ifname)
            self.ifindex = int(found[0]) if found else None
        except BaseException:
            self.close()
            raise

    @property
    def ifindex(self) -> int | None:
        return self._ifindex

    @ifindex.setter
    def ifindex(self, value: int | None) -> None:
        if value != self._ifindex:
            attach_filter(self._sock, neighbour_filter(value))
        self._ifindex = value

    def fileno(self) -> int:
        return self._sock.fileno()

    def drain(self, max_messages: int = 4096) -> list[NeighbourUpdate]:
        """Every pending update for our interface, without blocking.

        After ``max_messages`` it stops (the socket stays readable, so the selector calls
        again): a flood cannot starve the event loop. When the kernel dropped events
        (ENOBUFS), whatever is still queued is older than the table itself, so it is read and
        thrown away and the result is a full dump plus ``deleted`` updates for addresses that
        vanished meanwhile: the registry converges to the kernel's table.
        """
        updates: list[NeighbourUpdate] = []
        overflow = False
        datagrams = 0
        while len(updates) < max_messages and datagrams < 16 * max_messages:
            try:
                data = self._sock.recv(65536)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                if exc.errno != errno.ENOBUFS:
                    raise
                overflow = True
                updates.clear()
                continue
            datagrams += 1
            if not overflow:
                updates.extend(self._parse(data))
        if overflow or self._relinked:
            self._relinked = False
            return self._resync()
        for update in updates:
            self._remember(update)
        return updates

    def _parse(self, data: bytes) -> Iterator[NeighbourUpdate]:
        offset = 0
        while offset + _NLMSGHDR.size <= len(data):
            length, msg_type, _flags, _seq, _pid = _NLMSGHDR.unpack_from(data, offset)
            if length < _NLMSGHDR.size or offset + length > len(data):
                return  # malformed: drop the rest of this datagram
            if msg_type in (RTM_NEWLINK, RTM_DELLINK):
                self._link_message(data, offset, length, msg_type)
            elif msg_type in (RTM_NEWNEIGH, RTM_DELNEIGH) and self.ifindex is not None:
                try:
                    msg = ndmsg(data[offset : offset + length])
                    msg.decode()
                except Exception:  # a message we cannot decode must not kill the loop
                    msg = None
                if (
                    msg is not None
                    and msg["family"] == socket.AF_INET
                    and msg["ifindex"] == self.ifindex
                ):
                    update = _update_from(msg, msg_type == RTM_DELNEIGH)
                    if update is not None:
                        yield update
            offset += (length + 3) & ~3

    def _link_message(self, data: bytes, offset: int, length: int, msg_type: int) -> None:
        """Follow our interface by name across deletion, re-creation and renames."""
        body = offset + _NLMSGHDR.size
        if length < _NLMSGHDR.size + _IFINFOMSG.size:
            return
        _family, _type, index, _flags, _change = _IFINFOMSG.unpack_from(data, body)
        name = _link_name(data, body + _IFINFOMSG.size, offset + length)
        if msg_type == RTM_DELLINK:
            if index == self.ifindex:
                self.ifindex = None
                self._relinked = True
        elif name == self.ifname and index != self.ifindex:
            self.ifindex = index
            self._relinked = True
        elif index == self.ifindex and name is not None and name != self.ifname:
            self.ifindex = None  # renamed away
            self._relinked = True

    def _remember(self, update: NeighbourUpdate) -> None:
        if update.deleted:
            self._known.discard(update.ip)
        else:
            self._known.add(update.ip)

    def _resync(self) -> list[NeighbourUpdate]:
        self.resyncs += 1
        found = self._ipr.link_lookup(ifname=self.ifname)  # link events may have been lost too
        self.ifindex = int(found[0]) if found else None
        table = self.dump()
        present = {u.ip for u in table}
        gone = [
            NeighbourUpdate(
                ip=ip, mac=None, state="unknown", ifindex=self.ifindex or 0, deleted=True
            )
            for ip in sorted(self._known - present)
        ]
        self._known = present
        return table + gone

    def dump(self) -> list[NeighbourUpdate]:
        """The current IPv4 neighbour table of our interface (call once at start-up)."""
        updates: list[NeighbourUpdate] = []
        if self.ifindex is None:
            return updates
        for msg in self._ipr.neigh("dump", family=socket.AF_INET):
            if msg["ifindex"] != self.ifindex:
                continue
            update = _update_from(msg, False)
            if update is not None:
                updates.append(update)
        for update in updates:
            self._remember(update)
        return updates

    def probe(self, ip: str) -> None:
        """Ask the kernel to verify ``ip`` now (ARP); the result arrives through ``drain``."""
        ipaddress.IPv4Address(ip)  # ValueError for anything but a dotted quad
        if self.ifindex is None:
            raise OSError(errno.ENODEV, f"network device {self.ifname!r} does not exist")
        self._ipr.neigh("replace", dst=ip, ifindex=self.ifindex, flags=NTF_USE, state=0)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._sock.close()
        with contextlib.suppress(Exception):
            self._ipr.close()

    def __enter__(self) -> NeighbourWatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
