"""Event-driven notice of ruleset changes (e.g. ``fw4 flush`` deleting every table).

A raw NETLINK_NETFILTER socket joined to the NFNLGRP_NFTABLES multicast group receives one
message per committed nftables change in this network namespace. The daemon re-checks its
table only when something arrives: no polling.
"""

from __future__ import annotations

import socket

NETLINK_NETFILTER = 12
NFNLGRP_NFTABLES = 7
SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1


class NftMonitor:
    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self._sock.bind((0, 0))
        self._sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, NFNLGRP_NFTABLES)
        self._sock.setblocking(False)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)

    def fileno(self) -> int:
        return self._sock.fileno()

    def drain(self) -> int:
        """Read everything pending; return how many datagrams arrived (0: spurious wake-up).

        An overrun (ENOBUFS) still counts as a change: we lost events, so the caller re-checks.
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
