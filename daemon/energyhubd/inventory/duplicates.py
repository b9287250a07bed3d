"""A reserved device's MAC answering from two places at once (a cloned display). Pure.

The display's reservation is by MAC, so a second host using that MAC would be taken for the
display and could receive its port forwards. Over DHCP the clone is handed the same reserved
address and the two are indistinguishable on the wire; a clone with a static address shows up
as one MAC at two addresses, both alive. A device that simply moved does too, for a while (its
old entry goes STALE, not FAILED), and one that moved back shows A, B, A. So two addresses
count only when **each was heard from again after the other was heard** (A, B, A, B): a clone
and the original keep answering side by side, a device that moves does not alternate.

Only the MACs given to :meth:`DuplicateMacs.watch` are tracked (the reservations with a MAC,
a handful), so a flood of hostile MACs costs nothing here.
"""

from __future__ import annotations

import ipaddress
from collections import deque
from dataclasses import dataclass, field

REPEAT_S = 3600.0  # the same duplicate is reported again after this long
HISTORY = 16  # address changes remembered per watched MAC


@dataclass
class DuplicateMacs:
    """Per watched MAC: the addresses alive now and the order it was heard at them."""

    _watched: dict[str, str] = field(default_factory=dict)  # mac -> reservation name
    _alive: dict[str, set[str]] = field(default_factory=dict)
    _heard: dict[str, deque[str]] = field(default_factory=dict)  # address changes, in order
    _reported: dict[tuple[str, frozenset[str]], float] = field(default_factory=dict)
    _active: dict[str, frozenset[str]] = field(default_factory=dict)

    def watch(self, macs: dict[str, str]) -> None:
        self._watched = {m.lower(): name for m, name in macs.items()}
        self._alive = {m: a for m, a in self._alive.items() if m in self._watched}
        self._heard = {m: h for m, h in self._heard.items() if m in self._watched}

    def note(self, mac: str, ip: str, alive: bool, heard: bool, now: float) -> None:
        """A neighbour update: ``alive`` (not FAILED/gone), ``heard`` (the MAC itself spoke)."""
        del now  # order is what matters; kept in the signature for the registry's style
        if mac not in self._watched:
            return
        addresses = self._alive.setdefault(mac, set())
        if not alive:
            addresses.discard(ip)
            return
        addresses.add(ip)
        history = self._heard.setdefault(mac, deque(maxlen=HISTORY))
        if heard and (not history or history[-1] != ip):
            history.append(ip)

    def forget(self, mac: str, ip: str) -> None:
        self._alive.get(mac, set()).discard(ip)

    def current(self) -> dict[str, frozenset[str]]:
        """MAC -> the addresses it answers from side by side (only MACs with two or more)."""
        found: dict[str, frozenset[str]] = {}
        for mac, history in self._heard.items():
            alive = self._alive.get(mac, set())
            # An address heard twice with another heard in between: alternation (A, B, A, B
            # gives both; a move back A, B, A gives only A).
            again = {ip for i, ip in enumerate(history) if ip in alive and ip in list(history)[:i]}
            if len(again) > 1:
                found[mac] = frozenset(again)
        return found

    def events(self, now: float) -> list[tuple[str, dict[str, object]]]:
        """(kind, data) for new duplicates (``duplicate_mac``) and ended ones (``..._cleared``)."""
        current = self.current()
        out: list[tuple[str, dict[str, object]]] = []
        for mac, ips in sorted(current.items()):
            data = self._data(mac, ips)
            last = self._reported.get((mac, ips))
            if self._active.get(mac) == ips and last is not None and now - last < REPEAT_S:
                continue
            self._reported[(mac, ips)] = now
            out.append(("duplicate_mac", data))
        for mac in sorted(set(self._active) - set(current)):
            cleared: dict[str, object] = {
                "mac": mac,
                "name": self._watched.get(mac, mac),
                "signal": "address",
            }
            out.append(("duplicate_mac_cleared", cleared))
        self._active = current
        if len(self._reported) > 256:
            self._reported = {k: t for k, t in self._reported.items() if now - t < REPEAT_S}
        return out

    def status(self) -> list[dict[str, object]]:
        return [self._data(mac, ips) for mac, ips in sorted(self._active.items())]

    def _data(self, mac: str, ips: frozenset[str]) -> dict[str, object]:
        listed = _sorted(ips)
        return {
            "mac": mac,
            "name": self._watched.get(mac, mac),
            "ips": listed,
            "signal": "address",
            "evidence": f"answers from {', '.join(listed)} in turn (neighbour table)",
        }


def _sorted(ips: frozenset[str]) -> list[str]:
    return sorted(ips, key=lambda ip: int(ipaddress.IPv4Address(ip)))
