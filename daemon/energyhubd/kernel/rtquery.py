"""Read-only rtnetlink queries the daemon makes on every apply and every snapshot.

Why not pyroute2's ``IPRoute`` for these: on pyroute2 0.9 each query runs an asyncio event
loop round, receives into a fresh 256 KiB buffer and decodes every attribute of every message
into Python objects; the process's RSS grows by a few KiB per link query and does not come
back (about 4 MiB per 1,000 applies, measured with ``bench/memory.py``). The daemon needs four
facts: a link's index, whether it is up, its IPv4 addresses and the default gateway. This
module asks the kernel for exactly those over one socket that lives as long as the daemon,
receives into one reused buffer and reads only the attributes it needs. Changes (address,
link state, route) still go through pyroute2, which the daemon does rarely.

Threading: one ``RtQuery`` belongs to one thread (the daemon's event loop); no locking.
The socket is bound in the network namespace of the thread that creates it.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass

NETLINK_ROUTE = 0
RTM_GETLINK = 18
RTM_GETADDR = 22
RTM_GETROUTE = 26
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
NLMSG_ERROR = 2
NLMSG_DONE = 3
IFLA_IFNAME = 3
IFLA_OPERSTATE = 16
IFA_ADDRESS = 1
RTA_DST = 1
RTA_GATEWAY = 5
RTA_TABLE = 15
RT_TABLE_MAIN = 254
RTN_UNICAST = 1
AF_INET = 2
IFF_UP = 0x1
# IF_OPER_* from linux/if.h, as pyroute2 names them.
OPERSTATES = ("UNKNOWN", "NOTPRESENT", "DOWN", "LOWERLAYERDOWN", "TESTING", "DORMANT", "UP")

_NLMSGHDR = struct.Struct("=IHHII")
_IFINFOMSG = struct.Struct("=BxHiII")
_IFADDRMSG = struct.Struct("=BBBBI")
_RTMSG = struct.Struct("=BBBBBBBBI")
_RTATTR = struct.Struct("=HH")
# A dump datagram is at most 32 KiB unless the receive buffer asks for more; 64 KiB is safe.
BUFFER = 1 << 16


class RtQueryError(OSError):
    """The kernel answered a query with an error (``errno`` set)."""


@dataclass(frozen=True)
class LinkInfo:
    index: int
    flags: int
    operstate: str

    @property
    def up(self) -> bool:
        return bool(self.flags & IFF_UP)


def _align(length: int) -> int:
    return (length + 3) & ~3


def _attrs(view: memoryview, offset: int, end: int) -> Iterator[tuple[int, memoryview]]:
    while offset + _RTATTR.size <= end:
        length, kind = _RTATTR.unpack_from(view, offset)
        if length < _RTATTR.size:
            return
        yield kind & 0x3FFF, view[offset + _RTATTR.size : offset + length]
        offset += _align(length)


def _attr(kind: int, payload: bytes) -> bytes:
    length = _RTATTR.size + len(payload)
    return _RTATTR.pack(length, kind) + payload + b"\0" * (_align(length) - length)


class RtQuery:
    """One rtnetlink socket and one receive buffer for the daemon's whole life."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC)
        self._sock.bind((0, 0))
        self._buffer = bytearray(BUFFER)
        self._view = memoryview(self._buffer)
        self._seq = 0

    def close(self) -> None:
        self._view.release()
        self._sock.close()

    # -- the four questions ---------------------------------------------------------------
    def link(self, ifname: str) -> LinkInfo | None:
        """Index, flags and operstate of ``ifname``; None if there is no such link."""
        request = _IFINFOMSG.pack(0, 0, 0, 0, 0) + _attr(IFLA_IFNAME, ifname.encode() + b"\0")
        try:
            for offset, end in self._request(RTM_GETLINK, 0, request):
                _family, _type, index, flags, _change = _IFINFOMSG.unpack_from(self._view, offset)
                state = "UNKNOWN"
                for kind, value in _attrs(self._view, offset + _IFINFOMSG.size, end):
                    if kind == IFLA_OPERSTATE and len(value) >= 1:
                        code = value[0]
                        state = OPERSTATES[code] if code < len(OPERSTATES) else "UNKNOWN"
                return LinkInfo(index, flags, state)
        except RtQueryError as exc:
            if exc.errno in (errno.ENODEV, errno.EINVAL):
                return None
            raise
        return None

    def ipv4_addresses(self, index: int) -> list[tuple[str, int]]:
        """(address, prefix length) of every IPv4 address on link ``index``, kernel order."""
        request = _IFADDRMSG.pack(AF_INET, 0, 0, 0, 0)
        found: list[tuple[str, int]] = []
        for offset, end in self._request(RTM_GETADDR, NLM_F_DUMP, request):
            family, prefixlen, _flags, _scope, link = _IFADDRMSG.unpack_from(self._view, offset)
            if family != AF_INET or link != index:
                continue
            for kind, value in _attrs(self._view, offset + _IFADDRMSG.size, end):
                if kind == IFA_ADDRESS and len(value) == 4:
                    found.append((socket.inet_ntoa(value), prefixlen))
        return found

    def default_gateway(self) -> str | None:
        """The gateway of the first IPv4 default route in the main table, if any."""
        request = _RTMSG.pack(AF_INET, 0, 0, 0, 0, 0, 0, 0, 0)
        gateway: str | None = None
        for offset, end in self._request(RTM_GETROUTE, NLM_F_DUMP, request):
            fields = _RTMSG.unpack_from(self._view, offset)
            family, dst_len, table, kind_of_route = fields[0], fields[1], fields[4], fields[7]
            if gateway is not None or family != AF_INET or dst_len != 0:
                continue
            if kind_of_route != RTN_UNICAST:
                continue
            candidate = None
            for kind, value in _attrs(self._view, offset + _RTMSG.size, end):
                if kind == RTA_TABLE and len(value) == 4:
                    table = struct.unpack("=I", value)[0]
                elif kind == RTA_GATEWAY and len(value) == 4:
                    candidate = socket.inet_ntoa(value)
            if table == RT_TABLE_MAIN and candidate:
                gateway = candidate
        return gateway

    # -- one request, its answers ---------------------------------------------------------
    def _request(self, kind: int, flags: int, payload: bytes) -> Iterator[tuple[int, int]]:
        """Send; yield (payload offset, end) of each answer message in the shared buffer.

        A consumer must finish with one message before asking for the next (the buffer is
        reused), and must run the iterator to its end so the socket is left drained.
        """
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        seq = self._seq
        header = _NLMSGHDR.pack(_NLMSGHDR.size + len(payload), kind, NLM_F_REQUEST | flags, seq, 0)
        self._sock.send(header + payload)
        dump = bool(flags & NLM_F_DUMP)
        while True:
            size = self._sock.recv_into(self._buffer, BUFFER, socket.MSG_TRUNC)
            if size > BUFFER:
                raise RtQueryError(errno.EMSGSIZE, "rtnetlink answer larger than the buffer")
            offset = 0
            done = False
            while offset + _NLMSGHDR.size <= size:
                length, msg_type, _flags, msg_seq, _pid = _NLMSGHDR.unpack_from(self._view, offset)
                if length < _NLMSGHDR.size:
                    break
                body, end = offset + _NLMSGHDR.size, min(offset + length, size)
                offset += _align(length)
                if msg_seq != seq:
                    continue  # a late answer to an abandoned request
                if msg_type == NLMSG_DONE:
                    done = True
                elif msg_type == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", self._view, body)[0]
                    if code:
                        raise RtQueryError(code, os.strerror(code))
                    done = True
                else:
                    yield body, end
                    if not dump:
                        done = True
            if done:
                return
