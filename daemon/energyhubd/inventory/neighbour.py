"""Neighbour-table updates as plain data, shared by the netlink watcher and the registry.

Kept free of pyroute2 so the registry stays pure and testable without a kernel.
"""

from __future__ import annotations

from dataclasses import dataclass

# Kernel NUD_* bits (include/uapi/linux/neighbour.h).
NUD_INCOMPLETE = 0x01
NUD_REACHABLE = 0x02
NUD_STALE = 0x04
NUD_DELAY = 0x08
NUD_PROBE = 0x10
NUD_FAILED = 0x20
NUD_NOARP = 0x40
NUD_PERMANENT = 0x80

REACHABLE = "reachable"
STALE = "stale"
DELAY = "delay"
PROBE = "probe"
FAILED = "failed"
UNKNOWN = "unknown"
STATES = (REACHABLE, STALE, DELAY, PROBE, FAILED, UNKNOWN)
# States in which the kernel has recently heard from (or is actively checking) the device.
ALIVE_STATES = frozenset({REACHABLE, STALE, DELAY, PROBE})


def state_name(nud: int) -> str:
    """Kernel NUD bits -> one of ``STATES``.

    INCOMPLETE (address being resolved) counts as ``probe``. PERMANENT/NOARP entries are
    configuration, not evidence that a device is there, so they are ``unknown``.
    """
    if nud & NUD_FAILED:
        return FAILED
    if nud & NUD_REACHABLE:
        return REACHABLE
    if nud & NUD_STALE:
        return STALE
    if nud & NUD_DELAY:
        return DELAY
    if nud & (NUD_PROBE | NUD_INCOMPLETE):
        return PROBE
    return UNKNOWN


@dataclass(frozen=True)
class NeighbourUpdate:
    """One IPv4 neighbour entry as reported by the kernel.

    ``mac`` is None when the kernel has no link-layer address (FAILED, INCOMPLETE).
    ``deleted`` is True for RTM_DELNEIGH: the entry is gone from the table.
    """

    ip: str
    mac: str | None
    state: str
    ifindex: int = 0
    deleted: bool = False
    nud: int = 0

    def as_dict(self) -> dict[str, object]:
        return {
            "ip": self.ip,
            "mac": self.mac,
            "state": self.state,
            "ifindex": self.ifindex,
            "deleted": self.deleted,
        }


@dataclass(frozen=True)
class PortUpdate:
    """The LAN bridge learnt ``mac`` on bridge port ``port`` (an AF_BRIDGE FDB update).

    Only new or moved entries are reported: the kernel announces an FDB entry when it is
    created and whenever frames from its MAC arrive on another port.
    """

    mac: str
    port: str
    port_index: int = 0
