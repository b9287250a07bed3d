"""Two devices behind one reserved MAC, on the same address. Pure: no I/O, time passed in.

A clone that copies the display's MAC and asks for an address over DHCP is handed the
display's reserved address (the reservation is by MAC). The neighbour table then shows
nothing: one address, one MAC, as before. What a router still sees, without polling
(measured with dnsmasq 2.90, busybox udhcpc and a Linux bridge, see docs/inventory.md):

* ``port``: the bridge port the kernel's forwarding database (FDB) learnt the MAC on. Each
  frame from the other host moves the entry, and the kernel announces every move
  (RTM_NEWNEIGH, AF_BRIDGE). Two hosts that both talk make it swing back and forth within
  seconds; a device re-plugged into another port moves it once.
* ``client_id``: the DHCP client identifier (option 61) dnsmasq records in the MAC's lease.
  dnsmasq rewrites the lease at every transaction (new expiry), and with two different
  identifiers it takes the lease over for whichever asked last ("abandoning lease"), so the
  recorded identifier swings at each renewal of either host. One device keeps its identifier
  across reboots, renewals and host-name changes; a firmware change may change it once.

The rule, per channel and the same as ``duplicates.py``'s for addresses: a clone when **two
values each come back after another value was seen** (A, B, A, B) within the channel's
window. One device that changed once (A, B) or changed and changed back (A, B, A) is not
one. The windows cover what two hosts side by side need to show it: bridge ports swing
within seconds (``PORT_WINDOW_S``); DHCP clients renew at half the lease (12 h for the 24 h
lease), so the identifiers need up to a lease time (``CLIENT_ID_WINDOW_S``). Evidence that
falls out of its window clears the alert.

Only the MACs given to ``watch`` are tracked (reservations with a MAC), so a flood of other
MACs costs nothing here.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

PORT = "port"
CLIENT_ID = "client_id"
CHANNELS = (PORT, CLIENT_ID)
PORT_WINDOW_S = 600.0
CLIENT_ID_WINDOW_S = 2 * 86400.0
WINDOWS = {PORT: PORT_WINDOW_S, CLIENT_ID: CLIENT_ID_WINDOW_S}
REPEAT_S = 3600.0  # an alert that lasts is reported again after this long
HISTORY = 32  # runs of one value remembered per watched MAC and channel
_WHAT = {PORT: "bridge port", CLIENT_ID: "DHCP client identifier"}


@dataclass
class _Run:
    """One value held without interruption: from ``start`` until ``end`` (None: still)."""

    value: str
    start: float
    end: float | None = None


@dataclass(frozen=True)
class Alternation:
    """The evidence: ``values`` (first-seen order) each came back after another one."""

    channel: str
    values: tuple[str, ...]
    changes: int  # value changes inside the window
    since: float  # the first of those changes

    def describe(self) -> str:
        values = ", ".join(self.values)
        when = time.strftime("%H:%M:%S", time.gmtime(self.since))
        return (
            f"{_WHAT[self.channel]} alternates between {values}:"
            f" {self.changes} changes since {when} UTC"
        )


def alternation(runs: Iterable[_Run], channel: str, now: float) -> Alternation | None:
    """The alternation shown by ``runs`` (oldest first) inside the channel's window, if any."""
    cutoff = now - WINDOWS[channel]
    recent = [r for r in runs if r.end is None or r.end > cutoff]
    count: dict[str, int] = {}
    for run in recent:
        count[run.value] = count.get(run.value, 0) + 1
    again = [v for v in dict.fromkeys(r.value for r in recent) if count[v] > 1]
    if len(again) < 2:
        return None
    # Every run after the first began with a change; the first began before the window
    # or with the first sighting.
    changes = len(recent) - 1
    return Alternation(channel, tuple(again), changes, recent[1].start)


@dataclass
class CloneEvidence:
    """Per watched MAC and channel: the runs of values, and the alerts raised from them."""

    _watched: dict[str, str] = field(default_factory=dict)  # mac -> reservation name
    _runs: dict[tuple[str, str], deque[_Run]] = field(default_factory=dict)
    _active: dict[tuple[str, str], Alternation] = field(default_factory=dict)
    _reported: dict[tuple[str, str], float] = field(default_factory=dict)
    _now: float = 0.0  # of the last ``events``

    def watch(self, macs: dict[str, str]) -> None:
        self._watched = {m.lower(): name for m, name in macs.items()}
        self._runs = {k: v for k, v in self._runs.items() if k[0] in self._watched}

    def watched(self) -> frozenset[str]:
        return frozenset(self._watched)

    def note(self, mac: str, channel: str, value: str | None, now: float) -> None:
        """One observation: ``value`` (None: the observation carried none, nothing learnt)."""
        mac = mac.lower()
        if mac not in self._watched or value is None or channel not in WINDOWS:
            return
        runs = self._runs.setdefault((mac, channel), deque(maxlen=HISTORY))
        if runs and runs[-1].value == value:
            return
        if runs:
            runs[-1].end = now
        runs.append(_Run(value, now))

    def current(self, now: float) -> dict[tuple[str, str], Alternation]:
        """(mac, channel) -> its alternation, for every watched MAC that shows one now."""
        found: dict[tuple[str, str], Alternation] = {}
        for key, runs in self._runs.items():
            seen = alternation(runs, key[1], now)
            if seen is not None:
                found[key] = seen
        return found

    def events(
        self, now: float, address: Callable[[str], str | None]
    ) -> list[tuple[str, dict[str, object]]]:
        """(kind, data): ``duplicate_mac`` when an alternation begins (and every
        ``REPEAT_S`` while it lasts), ``duplicate_mac_cleared`` when it left its window.
        ``address(mac)`` is the address the MAC holds, named in the alert."""
        self._now = now
        current = self.current(now)
        out: list[tuple[str, dict[str, object]]] = []
        for key, seen in sorted(current.items()):
            last = self._reported.get(key)
            if key in self._active and last is not None and now - last < REPEAT_S:
                continue
            self._reported[key] = now
            out.append(("duplicate_mac", self._data(key, seen, address(key[0]))))
        for key in sorted(set(self._active) - set(current)):
            mac, channel = key
            self._reported.pop(key, None)
            name = self._watched.get(mac, mac)
            out.append(("duplicate_mac_cleared", {"mac": mac, "name": name, "signal": channel}))
        self._active = current
        return out

    def next_deadline(self) -> float | None:
        """When an active alternation may leave its window (``events`` must run then): the
        moment the oldest run still inside it drops out."""
        due: list[float] = []
        for key in self._active:
            window = WINDOWS[key[1]]
            ends = [r.end + window for r in self._runs.get(key, ()) if r.end is not None]
            due += [t for t in ends if t > self._now][:1]
        return min(due) if due else None

    def status(self, address: Callable[[str], str | None]) -> list[dict[str, object]]:
        active = sorted(self._active.items())
        return [self._data(key, seen, address(key[0])) for key, seen in active]

    def _data(self, key: tuple[str, str], seen: Alternation, ip: str | None) -> dict[str, object]:
        mac, channel = key
        return {
            "mac": mac,
            "name": self._watched.get(mac, mac),
            "ip": ip,
            "ips": [ip] if ip else [],
            "signal": channel,
            "values": list(seen.values),
            "changes": seen.changes,
            "since": seen.since,
            "evidence": seen.describe(),
        }
