"""A reserved device's MAC answering from two places at once (a cloned display). Pure.

The display's reservation is by MAC, so a second host using that MAC would be taken for the
display and could receive its port forwards. Over DHCP the clone is handed the same reserved
address and the two are indistinguishable on the wire; a clone with a static address shows up
as one MAC at two addresses, both alive. A device that simply moved does too, for a while (its
old entry goes STALE, not FAILED), so two addresses count only when **each was heard from after
the other appeared**: an old address is never heard from again once the device moved, while a
clone and the original keep answering side by side.

Only the MACs given to :meth:`DuplicateMacs.watch` are tracked (the reservations with a MAC,
a handful), so a flood of hostile MACs costs nothing here.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

REPEAT_S = 3600.0  # the same duplicate is reported again after this long


@dataclass
class _Claim:
    first: float  # when this MAC first appeared at this address
    seen: float  # when it was last heard from there


@dataclass
class DuplicateMacs:
    """MAC -> address -> claim, for the watched MACs only; time passed in."""

    _watched: dict[str, str] = field(default_factory=dict)  # mac -> reservation name
    _claims: dict[str, dict[str, _Claim]] = field(default_factory=dict)
    _reported: dict[tuple[str, frozenset[str]], float] = field(default_factory=dict)
    _active: dict[str, frozenset[str]] = field(default_factory=dict)

    def watch(self, macs: dict[str, str]) -> None:
        self._watched = {m.lower(): name for m, name in macs.items()}
        self._claims = {m: c for m, c in self._claims.items() if m in self._watched}

    def note(self, mac: str, ip: str, alive: bool, heard: bool, now: float) -> None:
        """A neighbour update: ``alive`` (not FAILED/gone), ``heard`` (the MAC itself spoke)."""
        if mac not in self._watched:
            return
        claims = self._claims.setdefault(mac, {})
        if not alive:
            claims.pop(ip, None)
            return
        claim = claims.get(ip)
        if claim is None:
            claims[ip] = _Claim(first=now, seen=now)
        elif heard:
            claim.seen = now

    def forget(self, mac: str, ip: str) -> None:
        claims = self._claims.get(mac)
        if claims is not None:
            claims.pop(ip, None)

    def current(self) -> dict[str, frozenset[str]]:
        """MAC -> the addresses it answers from side by side (only MACs with two or more)."""
        found: dict[str, frozenset[str]] = {}
        for mac, claims in self._claims.items():
            both = {
                a
                for a, ca in claims.items()
                for b, cb in claims.items()
                if a != b and ca.seen > cb.first and cb.seen > ca.first
            }
            if len(both) > 1:
                found[mac] = frozenset(both)
        return found

    def events(self, now: float) -> list[tuple[str, dict[str, object]]]:
        """(kind, data) for new duplicates (``duplicate_mac``) and ended ones (``..._cleared``)."""
        current = self.current()
        out: list[tuple[str, dict[str, object]]] = []
        for mac, ips in sorted(current.items()):
            data: dict[str, object] = {
                "mac": mac,
                "name": self._watched.get(mac, mac),
                "ips": _sorted(ips),
            }
            last = self._reported.get((mac, ips))
            if self._active.get(mac) == ips and last is not None and now - last < REPEAT_S:
                continue
            self._reported[(mac, ips)] = now
            out.append(("duplicate_mac", data))
        for mac in sorted(set(self._active) - set(current)):
            cleared: dict[str, object] = {"mac": mac, "name": self._watched.get(mac, mac)}
            out.append(("duplicate_mac_cleared", cleared))
        self._active = current
        if len(self._reported) > 256:
            self._reported = {k: t for k, t in self._reported.items() if now - t < REPEAT_S}
        return out

    def status(self) -> list[dict[str, object]]:
        return [
            {"mac": mac, "name": self._watched.get(mac, mac), "ips": _sorted(ips)}
            for mac, ips in sorted(self._active.items())
        ]


def _sorted(ips: frozenset[str]) -> list[str]:
    return sorted(ips, key=lambda ip: int(ipaddress.IPv4Address(ip)))
