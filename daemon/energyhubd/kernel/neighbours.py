"""Watch the kernel's IPv4 neighbour (ARP) table of the LAN device over netlink.

Why two sockets: events arrive on a plain non-blocking ``AF_NETLINK`` socket bound to the
RTMGRP_NEIGH multicast group and are decoded with pyroute2's ``ndmsg``; requests (dump,
probe) go through a separate pyroute2 ``IPRoute``. pyroute2 0.9's ``IPRoute`` reads the
socket from an internal asyncio loop and may keep received messages in its own queue, so a
selector on its ``fileno()`` can miss them; 0.7.9 buffers multicast messages that arrive
during a dump in a backlog in the same way. Reading the event socket ourselves until
``EAGAIN`` is exact on both versions, and a kernel buffer overflow (``ENOBUFS``) is seen
directly and answered with a full re-dump.

The same socket carries the LAN bridge's forwarding-database (FDB) updates: when frames from
one MAC arrive on another bridge port the kernel moves the entry and says so. Only the MACs
given to ``watch_macs`` (the reserved devices') pass the socket filter; their moves are kept
for ``take_ports`` (a clone of the display's MAC on another port makes the entry swing).

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
from collections.abc import Collection, Iterator
from typing import Any

from ..inventory.neighbour import NeighbourUpdate, PortUpdate, state_name
from .rtnl import IPRoute, ndmsg

__all__ = ["NeighbourUpdate", "NeighbourWatcher", "PortUpdate"]

RTMGRP_LINK = 0x1
RTMGRP_NEIGH = 0x4
RTM_NEWLINK = 16
RTM_DELLINK = 17
IFLA_IFNAME = 3
RTM_NEWNEIGH = 28
RTM_DELNEIGH = 29
NDA_LLADDR = 2
AF_BRIDGE = 7
MAX_WATCHED_MACS = 32  # each costs 4 filter instructions; jumps must stay below 256
_NDMSG_SIZE = 12
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
_BPF_LDB_ABS = 0x30
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


def neighbour_filter(ifindex: int | None, macs: Collection[str] = ()) -> bytes:
    """A socket filter passing link messages, neighbour messages of ``ifindex``, and bridge
    FDB messages about one of ``macs``.

    Why in the kernel: the socket is subscribed to every interface's neighbour changes, and
    with the portal connected the WAN gateway's entry cycles (REACHABLE, STALE, DELAY) as
    MQTT traffic uses it; each change woke the event loop only to be thrown away here. The
    offsets are those of a single-message datagram, as the kernel sends each notification:
    ``nlmsg_type`` at 4, ``ndm_family`` at 16, ``ndm_ifindex`` at 16 + 4, and in a bridge's
    FDB message the MAC (``NDA_LLADDR``, the first attribute) at 16 + 12 + 4. A MAC flood
    teaches the bridge thousands of MACs: none of them wakes the event loop. ``None``: no
    neighbour message passes.
    """
    index = _wire("=i", ifindex) if ifindex is not None else _wire("=i", 0)
    wanted = [bytes.fromhex(m.replace(":", "")) for m in sorted(macs)[:MAX_WATCHED_MACS]]
    attr = _NLMSGHDR.size + _NDMSG_SIZE
    # Layout: 0-7 the checks below, 8 the FDB attribute check, four per watched MAC, then
    # DROP and PASS. A jump counts from the next instruction.
    drop = 9 + 4 * len(wanted)
    end = drop + 1  # PASS
    insns: list[tuple[int, int, int, int]] = [
        (_BPF_LDH_ABS, 0, 0, 4),  # 0: A = nlmsg_type
        (_BPF_JEQ_K, 1, 0, _wire("=H", RTM_NEWNEIGH)),  # 1: neighbour message -> 3
        (_BPF_JEQ_K, 0, end - 3, _wire("=H", RTM_DELNEIGH)),  # 2: anything else: pass
        (_BPF_LDB_ABS, 0, 0, _NLMSGHDR.size),  # 3: A = ndm_family
        (_BPF_JEQ_K, 2, 0, AF_BRIDGE),  # 4: a bridge FDB message -> 7
        (_BPF_LDW_ABS, 0, 0, _NLMSGHDR.size + 4),  # 5: A = ndm_ifindex
        (_BPF_JEQ_K, end - 7, drop - 7, index),  # 6: ours: pass, another's: drop
        (_BPF_LDH_ABS, 0, 0, attr + 2),  # 7: A = type of the first attribute
        (_BPF_JEQ_K, 0, drop - 9, _wire("=H", NDA_LLADDR)),  # 8: no MAC first: drop
    ]
    at = 9
    for mac in wanted:  # A = MAC bytes 0-3, then 4-5; a mismatch tries the next MAC
        nxt = at + 4
        insns += [
            (_BPF_LDW_ABS, 0, 0, attr + 4),
            (_BPF_JEQ_K, 0, nxt - (at + 2), int.from_bytes(mac[:4], "big")),
            (_BPF_LDH_ABS, 0, 0, attr + 8),
            (_BPF_JEQ_K, end - (at + 4), nxt - (at + 4), int.from_bytes(mac[4:], "big")),
        ]
        at = nxt
    insns += [(_BPF_RET_K, 0, 0, 0), (_BPF_RET_K, 0, 0, 0xFFFFFFFF)]  # DROP, PASS
    return b"".join(_SOCK_FILTER.pack(*insn) for insn in insns)


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
        self._macs: frozenset[str] = frozenset()  # FDB moves of these pass the filter
        self._ports: list[PortUpdate] = []
        self._port_names: dict[int, str] = {}
        self._ifindex: int | None = None
        with in_netns(netns):
            self._ipr = IPRoute()
            try:
                self._sock = socket.socket(
                    socket.AF_NETLINK,
                    socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC,
                    socket.NETLINK_ROUTE,
                )
            except OSError:
                self._ipr.close()
                raise
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            attach_filter(self._sock, neighbour_filter(None))
            self._sock.bind((0, RTMGRP_NEIGH | RTMGRP_LINK))
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
            attach_filter(self._sock, neighbour_filter(value, self._macs))
        self._ifindex = value

    def watch_macs(self, macs: Collection[str]) -> None:
        """Report the LAN bridge's FDB moves of ``macs`` (at most ``MAX_WATCHED_MACS``)."""
        wanted = frozenset(m.lower() for m in macs)
        if wanted != self._macs:
            self._macs = wanted
            attach_filter(self._sock, neighbour_filter(self._ifindex, wanted))

    def take_ports(self) -> list[PortUpdate]:
        """The FDB moves of watched MACs read by ``drain`` since the last call, in order."""
        ports, self._ports = self._ports, []
        return ports

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
                if msg is not None and msg["family"] == AF_BRIDGE:
                    if msg_type == RTM_NEWNEIGH:
                        self._port_message(msg)
                elif (
                    msg is not None
                    and msg["family"] == socket.AF_INET
                    and msg["ifindex"] == self.ifindex
                ):
                    update = _update_from(msg, msg_type == RTM_DELNEIGH)
                    if update is not None:
                        yield update
            offset += (length + 3) & ~3

    def _port_message(self, msg: Any) -> None:
        """A bridge FDB entry created or moved: keep it if it is a watched MAC on one of our
        bridge's ports (the bridge's own entries name the bridge itself)."""
        mac = msg.get_attr("NDA_LLADDR")
        port = int(msg["ifindex"])
        if msg.get_attr("NDA_MASTER") != self.ifindex or port == self.ifindex or not mac:
            return
        mac = str(mac).lower()
        if mac in self._macs:
            self._ports.append(PortUpdate(mac, self._port_name(port), port))
            del self._ports[:-4096]  # nobody took them: keep the newest

    def _port_name(self, index: int) -> str:
        name = self._port_names.get(index)
        if name is None:
            try:
                links = self._ipr.get_links(index)
                name = str(links[0].get_attr("IFLA_IFNAME"))
            except Exception:  # gone already: its index still tells the ports apart
                name = f"if{index}"
            if len(self._port_names) > 256:
                self._port_names.clear()
            self._port_names[index] = name
        return name

    def _link_message(self, data: bytes, offset: int, length: int, msg_type: int) -> None:
        """Follow our interface by name across deletion, re-creation and renames."""
        body = offset + _NLMSGHDR.size
        if length < _NLMSGHDR.size + _IFINFOMSG.size:
            return
        _family, _type, index, _flags, _change = _IFINFOMSG.unpack_from(data, body)
        name = _link_name(data, body + _IFINFOMSG.size, offset + length)
        self._port_names.pop(index, None)  # a port renamed or gone: look it up again
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
