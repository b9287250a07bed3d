"""The device inventory: who is on the LAN, what they are, and what changed.

Pure: no I/O, no clock. The daemon feeds it lease snapshots and neighbour updates with the
current time and publishes the returned events. One owner (the event loop) mutates it; other
threads read the JSON-ready results of ``devices()`` / ``summary()`` that the loop publishes.

Definitions
-----------
* A device is keyed by MAC. It is **present** when its neighbour entry is not FAILED and it
  has an active lease (expiry 0 or in the future) or a live neighbour entry (reachable,
  stale, delay, probe). So a device that stops answering ARP (FAILED) is gone even while
  its 24 h lease runs; a renewed lease (new expiry) or the kernel hearing from the MAC again
  clears the FAILED mark. A deleted (garbage-collected) FAILED entry is not proof of life.
* Nothing is re-checked without traffic, so ``probe_candidates(now)`` lists the addresses of
  present devices not heard from for a while; the daemon probes them (``NeighbourWatcher
  .probe``) and the kernel's answer arrives as neighbour updates (REACHABLE or FAILED).
* ``device_joined``: absent -> present (including the first sighting).
* ``device_left``: present -> absent, with ``reason``: ``lease ended`` (released or expired and
  no live neighbour entry), ``neighbour failed`` (the kernel's ARP check failed),
  ``neighbour entry removed`` (a device known only from the neighbour table lost its entry)
  or ``address taken by another device``. ``ip`` is the address it had.
* ``device_changed``: a present device's IP, host name, name or role changed (``changes``
  maps each field to ``[old, new]``).
* ``unknown_device``: a present device whose role is still ``unknown`` once what identifies it
  has had time to arrive: with ``hook_reports`` (energyhubd's own dnsmasq, whose lease hook
  reports every client, with or without a vendor class) as soon as the hook has reported a
  leased device, at the latest ``HOOK_WAIT_S`` after its lease; without it
  ``UNKNOWN_SETTLE_S`` after the lease was first seen (the vendor
  class comes from dnsmasq's lease hook after the lease), ``LEASE_WAIT_S`` after first sight
  for a pool address without a lease (a client mid-DHCP), ``UNKNOWN_SETTLE_S`` after first
  sight for anything else. At a rack power-up the neighbour entry or the lease comes before
  the vendor class or host name that makes a unit a unit, and under load seconds apart (a
  lease 13 s after dnsmasq's offer put the MAC in the neighbour table); an alert before then
  would be a false one. Once per MAC (not on every
  lease renewal or rejoin). ``next_deadline()`` says when the daemon must call ``expire``
  so the alert is not late. Until then ``summary()`` counts the device as ``identifying``.
* ``unknown_device_cleared``: a device that was alerted as unknown has been identified since
  (its vendor class or host name arrived late, or the configuration now names it).
* ``pool_utilisation`` (warning) when active leases in the pool reach
  ``pool_warning_percent``; ``pool_exhausted`` (error) when every pool address is leased,
  with how many of the leases unknown devices hold. Each fires on crossing upwards and is
  re-armed when usage drops below again; an exhausted pool is reported again every
  ``POOL_REPEAT_S`` while it stays exhausted (33 fake MACs can hold it for a whole lease).
* ``duplicate_mac`` / ``duplicate_mac_cleared``: a reserved MAC (the display's) is used by two
  devices: it answers from two addresses side by side (``signal`` ``address``, see
  ``duplicates.py``), or on its one address its bridge port or its DHCP client identifier
  swings back and forth (``port``, ``client_id``, see ``clones.py``). ``evidence`` says what
  was seen.
* ``address_conflict``: two MACs claim one IP. A claim is an active lease, or the kernel
  neighbour entry for that IP (not FAILED) naming that MAC. A conflict between the same set of
  MACs on the same IP is reported again only after ``CONFLICT_REPEAT_S`` (ARP entries flip
  back and forth while two hosts fight over an address).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from types import MappingProxyType
from typing import Any, cast

from energyhubd.config.sections.inventory import InventorySettings

from .classify import ROLE_DISPLAY, ROLE_UNIT, ROLE_UNKNOWN, Reservation, classify
from .clones import CLIENT_ID, PORT, CloneEvidence
from .duplicates import DuplicateMacs
from .events import Event
from .leases import Lease, LeaseSnapshot
from .neighbour import ALIVE_STATES, FAILED, REACHABLE, UNKNOWN, NeighbourUpdate, PortUpdate

MAX_DEVICES = 1024  # absent devices are forgotten first when more than this are tracked
# Forgetting goes down to this many, so a busy LAN at the limit sorts its absent devices once
# per 64 newcomers rather than on every event.
EVICT_TO = MAX_DEVICES - 64
MAX_UNKNOWN_REMEMBERED = 65536
MAX_LISTED_UNKNOWN = 20
CONFLICT_REPEAT_S = 3600.0
# A present device not heard from for this long is probed. Maintenance runs when a probe
# is due (not on a minute tick), so an unplugged unit leaves within about 3 min, as it did
# with 120 s and a minute tick, for fewer wake-ups of the whole LAN's probe round.
PROBE_QUIET_S = 180.0
# dnsmasq's DHCPOFFER puts the client into the neighbour table some 40 ms before the lease
# (and with it the host name that classifies a unit) is in the lease file. A pool address
# seen without a lease is given this long to get one before it counts as a device, so a
# joining unit is not first announced as an unknown device.
LEASE_GRACE_S = 5.0
# How long a device may stay unidentified after its lease before ``unknown_device``: the
# vendor class comes from dnsmasq's lease hook after the lease file is written, under load
# up to seconds later. Counted from the lease, not from first sight: a lease that came late
# must still get its hook's answer (measured: a false alert when counted from first sight).
UNKNOWN_SETTLE_S = 8.0
# dnsmasq runs its lease hook for one lease after another; at a rack power-up under load the
# queue of hook runs (releases, the display, the units) took longer than 8 s for the first
# unit (1 false alert in about 10 rounds). Where the hook reports every client, the verdict
# waits for the report itself, and this long at most.
HOOK_WAIT_S = 60.0
# A pool address without a lease is a client mid-DHCP: under load a unit's lease came 13.35 s
# after dnsmasq's offer put it in the neighbour table (udhcpc retries after 3 s, 3 tries).
LEASE_WAIT_S = 30.0
POOL_REPEAT_S = 3600.0
_ROLE_ORDER = {ROLE_DISPLAY: 0, ROLE_UNIT: 1, ROLE_UNKNOWN: 2}


@dataclass
class _Device:
    mac: str
    first_seen: float
    last_seen: float
    lease_ip: str | None = None
    lease_expiry: int | None = None
    lease_since: float = 0.0  # when we first saw the current lease address
    hostname: str | None = None
    vendor_class: str | None = None  # "" once the lease hook reported none
    neigh_ip: str | None = None
    neigh_state: str = UNKNOWN
    last_probe: float = float("-inf")
    unreachable: bool = False  # neighbour FAILED and no proof of life since
    role: str = ROLE_UNKNOWN
    reservation: str | None = None
    reason: str = ""
    present: bool = False  # as last reported in events
    shown: dict[str, Any] | None = None  # view() as last reported, None while absent

    def lease_active(self, now: float) -> bool:
        return self.lease_ip is not None and (
            self.lease_expiry == 0 or (self.lease_expiry or 0) > now
        )

    def address(self, now: float) -> str | None:
        return self.lease_ip if self.lease_active(now) else self.neigh_ip

    def is_present(self, now: float) -> bool:
        if self.unreachable:
            return False
        return self.lease_active(now) or (
            self.neigh_ip is not None and self.neigh_state in ALIVE_STATES
        )

    @property
    def name(self) -> str:
        return self.reservation or self.hostname or self.mac

    def view(self, now: float) -> dict[str, Any]:
        """Fields whose change is worth a ``device_changed`` event."""
        return {
            "ip": self.address(now),
            "hostname": self.hostname,
            "name": self.name,
            "role": self.role,
        }

    def as_dict(self, now: float) -> dict[str, Any]:
        leased = self.lease_active(now)
        return {
            "mac": self.mac,
            "ip": self.lease_ip if leased else self.neigh_ip,
            "name": self.reservation or self.hostname or self.mac,
            "role": self.role,
            "reservation": self.reservation,
            "reason": self.reason,
            "hostname": self.hostname,
            "present": self.present,
            "lease_ip": self.lease_ip if leased else None,
            "lease_expiry": self.lease_expiry if leased else None,
            "neighbour": self.neigh_state,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
        }


def _pool_range(pool: tuple[str, str] | None) -> tuple[int, int] | None:
    if pool is None:
        return None
    start, end = (int(ipaddress.IPv4Address(a)) for a in pool)
    if end < start:
        raise ValueError("pool end is below pool start")
    return start, end


class DeviceRegistry:
    """See the module doc for the exact meaning of every event."""

    def __init__(
        self,
        settings: InventorySettings | None = None,
        reservations: Iterable[Reservation] = (),
        pool: tuple[str, str] | None = None,
        hook_reports: bool = False,
    ) -> None:
        self._settings = settings or InventorySettings()
        self._hook_reports = hook_reports
        self._reservations: tuple[Reservation, ...] = tuple(reservations)
        self._pool = _pool_range(pool)
        self._devices: dict[str, _Device] = {}
        self._unknown_reported: dict[str, None] = {}  # ordered set
        # Vendor classes reported for MACs not seen yet (the hook can beat the lease read).
        self._pending_vendor: dict[str, str] = {}
        # ip -> (mac, state, when), the kernel's view of the LAN
        self._neigh: dict[str, tuple[str, str, float]] = {}
        self._conflicts: dict[str, frozenset[str]] = {}  # ip -> macs, current
        self._conflict_reported: dict[tuple[str, frozenset[str]], float] = {}
        self._pool_used = 0
        self._pool_warned = False
        self._pool_exhausted = False
        self._pool_exhausted_at = 0.0
        self._settling: dict[str, float] = {}  # unknown, not alerted yet: mac -> deadline
        self._duplicates = DuplicateMacs()
        self._duplicates.watch(_watched_macs(self._reservations))
        self._clones = CloneEvidence()
        self._clones.watch(_watched_macs(self._reservations))
        self._now = 0.0
        # What the last lease snapshot held, so the next one costs only what changed:
        # mac -> active lease, and ip -> macs holding an active lease on it.
        self._leases: dict[str, Lease] = {}
        self._lease_ips: dict[str, set[str]] = {}
        self._awaiting: set[str] = set()  # skipped by _diff while awaiting a lease
        self._addresses: dict[str, str] = {}  # mac -> address_of(mac), where not None
        self._pool_leased = 0  # addresses in _lease_ips that are in the pool

    # ------------------------------------------------------------------ inputs

    def configure(
        self,
        settings: InventorySettings,
        reservations: Iterable[Reservation],
        pool: tuple[str, str] | None,
        now: float,
    ) -> list[Event]:
        """New configuration: re-classify every device (a changed name/role is reported)."""
        self._settings = settings
        self._reservations = tuple(reservations)
        self._pool = _pool_range(pool)
        self._pool_leased = sum(1 for ip in self._lease_ips if self._in_pool(ip))
        self._duplicates.watch(_watched_macs(self._reservations))
        self._clones.watch(_watched_macs(self._reservations))
        self._now = now
        for device in self._devices.values():
            self._classify(device)
        events = self._diff(now)
        events += self._pool_events(now)
        self._refresh_addresses()
        return events

    def apply_leases(self, snapshot: LeaseSnapshot, now: float) -> list[Event]:
        """Replace the lease view with ``snapshot`` (the whole file).

        A snapshot with ``error`` set (unreadable file) changes nothing: an I/O problem must
        not look like every device leaving. Neither does one read while the file kept
        changing (``stable`` False): the writer's last write triggers another read. A
        ``missing`` file means no leases.
        """
        if snapshot.error is not None or not snapshot.stable:
            return []
        self._now = now
        current: dict[str, Lease] = {}
        for lease in snapshot.leases:
            expiry = lease.expiry
            if expiry and expiry <= now:  # Lease.active, inline: this loop sees every lease
                continue
            old = current.get(lease.mac)
            if old is None or _later(expiry, old.expiry):
                current[lease.mac] = lease
        # Only what differs from the last snapshot is looked at (the parser hands back the
        # same Lease object for an unchanged line); an expired lease drops out of ``current``.
        # Every device with a lease is in ``self._leases`` (``_evict`` drops both together).
        previous = self._leases
        touched = [mac for mac, lease in current.items() if previous.get(mac) is not lease]
        touched += [mac for mac in previous if mac not in current]
        self._leases = current
        affected_ips: set[str] = set()
        for mac in touched:
            device = self._device(mac, now)
            held = current.get(mac)
            if device.lease_ip is not None:
                affected_ips.add(device.lease_ip)
                self._drop_lease_ip(device.lease_ip, mac)
            if held is None:
                device.lease_ip = device.lease_expiry = None
                self._classify(device)
                continue
            renewed = held.expiry != device.lease_expiry or held.ip != device.lease_ip
            if renewed:
                device.last_seen = now
                device.unreachable = False  # a DHCP renewal is proof of life
            if held.ip != device.lease_ip:
                device.lease_since = now
            device.lease_ip, device.lease_expiry = held.ip, held.expiry
            device.hostname = held.hostname
            # dnsmasq rewrites a lease at every DHCP transaction: the identifier of whoever
            # asked last (only the watched MACs are kept).
            self._clones.note(mac, CLIENT_ID, held.client_id, now)
            self._add_lease_ip(held.ip, mac)
            affected_ips.add(held.ip)
            self._classify(device)
        diffed = set(touched) | self._awaiting | self._settled_by(now)
        events = self._diff(now, default_reason="lease ended", macs=diffed)
        conflict_events, conflict_macs = self._conflict_events(now, affected_ips)
        events += conflict_events
        events += self._pool_transition(self._pool_leased, now)
        self._refresh_addresses(diffed | conflict_macs)
        events += self._clone_events(now)
        self._evict()
        return events

    def apply_vendor_class(self, mac: str, vendor_class: str | None, now: float) -> list[Event]:
        """Record a DHCP vendor class learnt elsewhere (dnsmasq hotplug script); ``""`` means
        the hook reported this client without one."""
        device = self._devices.get(mac.lower())
        if device is None:
            if vendor_class is not None and not self._pending_vendor.get(mac.lower()):
                self._pending_vendor[mac.lower()] = vendor_class  # a known class is kept
                while len(self._pending_vendor) > MAX_DEVICES:
                    self._pending_vendor.pop(next(iter(self._pending_vendor)))
            return []
        if device.vendor_class == vendor_class or (vendor_class == "" and device.vendor_class):
            return []  # a report without a class does not unlearn the one the client sent
        device.vendor_class = vendor_class
        self._classify(device)
        events = self._diff(now, macs={device.mac} | self._settled_by(now))
        self._refresh_addresses({device.mac})
        return events

    def apply_neighbour(self, update: NeighbourUpdate, now: float) -> list[Event]:
        """One kernel neighbour update for the LAN device."""
        self._now = now
        ip = update.ip
        previous = self._neigh.get(ip)
        mac = (update.mac or "").lower() or (previous[0] if previous else None)
        if mac is None:
            mac = self._lease_holder(ip, now)
        affected: set[str] = set()
        if previous is not None:
            affected.add(previous[0])
        if mac is not None and (mac in self._devices or update.state in ALIVE_STATES):
            affected.add(mac)
        reason = "neighbour failed"
        if previous is not None and mac is not None and previous[0] != mac:
            reason = "address taken by another device"
        if update.deleted:
            self._neigh.pop(ip, None)
            if previous is not None:
                self._duplicates.forget(previous[0], ip)
            reason = "neighbour entry removed"
            for m in affected:
                device = self._devices.get(m)
                if device is not None and device.neigh_ip == ip:
                    device.neigh_ip, device.neigh_state = None, UNKNOWN
        else:
            if previous is not None and mac is not None and previous[0] != mac:
                old = self._devices.get(previous[0])
                if old is not None and old.neigh_ip == ip:
                    old.neigh_ip, old.neigh_state = None, UNKNOWN  # the kernel moved the IP
            if mac is not None:
                seen = now
                if previous is not None and previous[0] == mac and update.state != REACHABLE:
                    seen = previous[2]  # a timer transition, not new evidence of a claim
                self._neigh[ip] = (mac, update.state, seen)
                if mac in affected:
                    fresh = update.mac is not None and (
                        update.state == REACHABLE
                        or previous is None
                        or previous[0] != mac
                        or previous[1] not in ALIVE_STATES
                    )
                    alive = update.state in ALIVE_STATES
                    self._duplicates.note(mac, ip, alive, fresh, now)
                    self._note_neighbour(
                        self._device(mac, now), ip, update.state, update.mac is not None, fresh, now
                    )
        events = self._diff(now, default_reason=reason)
        events += self._conflict_events(now)[0]
        self._refresh_addresses()
        events += self._duplicate_events(now)
        self._evict()
        return events

    def apply_ports(self, updates: Iterable[PortUpdate], now: float) -> list[Event]:
        """The LAN bridge learnt MACs on bridge ports (kernel FDB updates, in order)."""
        self._now = now
        for update in updates:
            self._clones.note(update.mac, PORT, update.port, now)
        return self._clone_events(now)

    def watched_macs(self) -> frozenset[str]:
        """The MACs whose clones are looked for (reservations with a MAC)."""
        return self._clones.watched()

    def _settled_by(self, now: float) -> set[str]:
        """Devices whose settle window has ended: judged by any update, as a full diff would."""
        return {mac for mac, due in self._settling.items() if due <= now}

    def next_deadline(self) -> float | None:
        """When ``expire`` must run next for an alert to be on time (None: nothing waits)."""
        due = [t for t in (self._clones.next_deadline(),) if t is not None]
        due += [min(self._settling.values())] if self._settling else []
        return min(due) if due else None

    def expire(self, now: float) -> list[Event]:
        """Re-evaluate what time changes at ``now`` (run at ``next_due`` or ``next_deadline``)."""
        self._now = now
        events = self._diff(now, default_reason="lease ended")
        events += self._conflict_events(now)[0]
        events += self._pool_events(now)
        self._refresh_addresses()
        events += self._clone_events(now)
        return events

    def next_due(self, now: float) -> float | None:
        """The earliest time ``expire`` or ``probe_candidates`` can find work without another
        update in between: a lease running out, a quiet device's probe, the end of a pool
        address's lease grace, the hourly repeat of a full pool. None: nothing waits for time
        (an empty LAN, or every device's entry is REACHABLE: the kernel's STALE update
        arrives as an update and asks again).

        Settle windows are ``next_deadline``'s. Lets the monitor sleep until then instead of
        waking every minute.
        """
        due: list[float] = []
        for device in self._devices.values():
            expiry = device.lease_expiry
            if device.lease_ip is not None and expiry and expiry > now:
                due.append(float(expiry))
            if self._probe_due(device, now):
                due.append(max(device.last_seen, device.last_probe) + PROBE_QUIET_S)
        for mac in self._awaiting:  # a pool address seen without a lease: its grace ends
            due.append(self._devices[mac].first_seen + LEASE_GRACE_S)
        if self._pool_exhausted:
            due.append(self._pool_exhausted_at + POOL_REPEAT_S)
        return min(due) if due else None

    @staticmethod
    def _probe_due(device: _Device, now: float) -> bool:
        """Whether ``device`` is one ``probe_candidates`` re-checks once it has been quiet."""
        return (
            device.present and device.address(now) is not None and device.neigh_state != REACHABLE
        )

    def needs_maintenance(self) -> bool:
        """Can ``expire``/``probe_candidates`` ever find work? Not on an empty LAN: no present
        device to re-check, no lease to expire, nobody waiting out the lease grace."""
        return bool(self._awaiting) or any(
            d.present or d.lease_ip is not None or d.neigh_ip is not None
            for d in self._devices.values()
        )

    def probe_candidates(self, now: float, quiet_for: float = PROBE_QUIET_S) -> list[str]:
        """Addresses the daemon should ``NeighbourWatcher.probe`` now.

        A device counts as present on a lease or a STALE neighbour entry, but an unplugged
        unit keeps its 24 h lease and a STALE entry is never re-checked without traffic.
        So every present device not heard from (neighbour REACHABLE, ARP, lease renewal) for
        ``quiet_for`` seconds is probed, at most once per ``quiet_for``; the answer (REACHABLE
        or FAILED) arrives as neighbour updates. Call it at ``next_due`` (a shorter
        ``quiet_for`` lets devices that are nearly due go along in the same round).
        """
        self._now = now
        out: list[str] = []
        for device in self._devices.values():
            if not self._probe_due(device, now):
                continue
            if now - device.last_seen < quiet_for or now - device.last_probe < quiet_for:
                continue
            device.last_probe = now
            out.append(cast(str, device.address(now)))
        return sorted(out, key=_ip_key)

    # ----------------------------------------------------------------- queries

    def address_of(self, mac: str) -> str | None:
        """Current IP of a present device, for port forwards that follow a device.

        None when the device is gone or its address is in conflict: a forward then stays
        closed instead of pointing at whoever inherits or steals the address. A pool address
        without an active lease (released, expired) is not used either: dnsmasq may hand it
        to the next device at any moment, even while the old neighbour entry still looks alive.
        """
        device = self._devices.get(mac.lower())
        if device is None or not device.present:
            return None
        ip = device.address(self._now)
        if ip is None or ip in self._conflicts:
            return None
        if not device.lease_active(self._now) and self._in_pool(ip):
            return None
        return ip

    def _awaiting_lease(self, device: _Device, now: float) -> bool:
        """Seen in the pool, not leased yet, and only just: most likely mid-DHCP."""
        if device.present or device.lease_active(now):
            return False
        ip = device.address(now)
        return ip is not None and self._in_pool(ip) and now - device.first_seen < LEASE_GRACE_S

    def _in_pool(self, ip: str) -> bool:
        return self._pool is not None and self._pool[0] <= _ip_key(ip) <= self._pool[1]

    def present_addresses(self) -> dict[str, str]:
        """MAC -> ``address_of(mac)`` for every device that has one (kept up to date)."""
        return dict(self._addresses)

    def live_addresses(self) -> Mapping[str, str]:
        """The same as ``present_addresses``, as a read-only view instead of a copy: forwards
        that follow a device look up only their own MACs, so a lease event costs no pass over
        every device. Read it at once; it follows the registry."""
        return MappingProxyType(self._addresses)

    def address_of_reservation(self, name: str) -> str | None:
        """Like ``address_of`` for the present device matching reservation ``name``."""
        for device in self._devices.values():
            if device.reservation == name and device.present:
                return self.address_of(device.mac)
        return None

    def devices(self) -> list[dict[str, Any]]:
        """Every tracked device, JSON-ready: display, units, unknown; then by IP and MAC."""
        now = self._now
        listed = [d.as_dict(now) for d in self._devices.values()]
        listed.sort(
            key=lambda d: (
                not d["present"],
                _ROLE_ORDER.get(d["role"], 9),
                _ip_key(d["ip"]),
                d["mac"],
            )
        )
        return listed

    def summary(self) -> dict[str, Any]:
        """The short answer for ``status``: display, units n/expected, strangers, pool."""
        now = self._now
        present = [d for d in self._devices.values() if d.present]
        displays = sorted(
            (d for d in present if d.role == ROLE_DISPLAY), key=lambda d: _ip_key(d.address(now))
        )
        units = sum(1 for d in present if d.role == ROLE_UNIT)
        expected = self._settings.expected_units
        unknown = sorted(
            (d for d in present if d.role == ROLE_UNKNOWN and d.mac in self._unknown_reported),
            key=lambda d: _ip_key(d.address(now)),
        )
        identifying = sum(1 for d in present if d.mac in self._settling)
        pool: dict[str, Any] | None = None
        if self._pool is not None:
            size = self._pool[1] - self._pool[0] + 1
            pool = {
                "start": str(ipaddress.IPv4Address(self._pool[0])),
                "end": str(ipaddress.IPv4Address(self._pool[1])),
                "used": self._pool_used,
                "size": size,
                "percent": round(self._pool_used * 100 / size, 1),
                "exhausted": self._pool_exhausted,
            }
        return {
            "display": {
                "present": bool(displays),
                "ip": displays[0].address(now) if displays else None,
                "mac": displays[0].mac if displays else None,
            },
            "units": {
                "online": units,
                "expected": expected,
                "text": f"{units}/{expected}",
                "complete": units >= expected,
            },
            "identifying": identifying,
            "duplicates": self._duplicates.status() + self._clones.status(self._held_address),
            "unknown": {
                "count": len(unknown),
                "devices": [
                    {"mac": d.mac, "ip": d.address(now), "name": d.name}
                    for d in unknown[:MAX_LISTED_UNKNOWN]
                ],
            },
            "pool": pool,
            "conflicts": [
                {"ip": ip, "macs": sorted(macs)} for ip, macs in sorted(self._conflicts.items())
            ],
        }

    # ---------------------------------------------------------------- internals

    def _device(self, mac: str, now: float) -> _Device:
        device = self._devices.get(mac)
        if device is None:
            device = _Device(mac=mac, first_seen=now, last_seen=now)
            device.vendor_class = self._pending_vendor.pop(mac, None)
            self._devices[mac] = device
            self._classify(device)
        return device

    def _classify(self, device: _Device) -> None:
        # Only a lease address identifies a MAC-less reservation: anyone can configure the
        # display's address statically, only dnsmasq's reservation hands it out.
        result = classify(
            device.mac,
            device.lease_ip if device.lease_active(self._now) else None,
            device.hostname,
            self._reservations,
            self._settings,
            device.vendor_class,
        )
        device.role, device.reservation, device.reason = (
            result.role,
            result.reservation,
            result.reason,
        )

    def _note_neighbour(
        self, device: _Device, ip: str, state: str, has_mac: bool, fresh: bool, now: float
    ) -> None:
        """``fresh``: this update shows the device itself was heard (not a timer change)."""
        current = device.address(now)
        lease_active = device.lease_active(now)
        if current is None or ip == current or device.neigh_ip == ip:
            device.neigh_ip, device.neigh_state = ip, state
        elif not lease_active and state in ALIVE_STATES:
            device.neigh_ip, device.neigh_state = ip, state  # a static device moved
        else:
            return  # an old address of a device that now has another: not about presence
        if state == FAILED:
            device.unreachable = True
        elif state in ALIVE_STATES and has_mac:
            device.unreachable = False  # the kernel heard from this MAC at this address
        if fresh and state in ALIVE_STATES:
            device.last_seen = now

    def _lease_holder(self, ip: str, now: float) -> str | None:
        for device in self._devices.values():
            if device.lease_ip == ip and device.lease_active(now):
                return device.mac
        return None

    def _diff(
        self, now: float, default_reason: str = "lease ended", macs: Collection[str] | None = None
    ) -> list[Event]:
        """Compare devices (all, or those in ``macs``) with what was last reported; emit the
        differences. Devices not in ``macs`` must not have changed."""
        events: list[Event] = []
        candidates: Iterable[tuple[str, _Device]]
        if macs is None:
            self._awaiting.clear()
            candidates = self._devices.items()
        else:
            # In registry order (as a full diff would report them), only those asked for.
            self._awaiting.difference_update(macs)
            candidates = ((m, self._devices[m]) for m in self._devices if m in macs)
        for mac, device in candidates:
            if self._awaiting_lease(device, now):
                self._awaiting.add(mac)
                # Judged at the next update once its lease is read, or when the grace ends.
                if device.role == ROLE_UNKNOWN:
                    self._settling[mac] = device.first_seen + LEASE_GRACE_S
                continue
            present = device.is_present(now)
            view = device.view(now) if present else None
            was_present, old_view = device.present, device.shown
            device.present, device.shown = present, view
            if present and not was_present:
                events.append(Event("device_joined", now, "info", self._event_data(device, now)))
            elif was_present and not present:
                data = self._event_data(device, now)
                reason = "neighbour failed" if device.unreachable else default_reason
                severity = "info" if device.role == ROLE_UNKNOWN else "warning"
                last_ip = old_view["ip"] if old_view is not None else data["ip"]
                events.append(
                    Event("device_left", now, severity, {**data, "ip": last_ip, "reason": reason})
                )
            elif present and old_view is not None and view is not None and old_view != view:
                changes = {k: [old_view[k], v] for k, v in view.items() if old_view[k] != v}
                data = self._event_data(device, now)
                events.append(Event("device_changed", now, "info", {**data, "changes": changes}))
            events += self._unknown_events(device, present, now)
        return events

    def _unknown_events(self, device: _Device, present: bool, now: float) -> list[Event]:
        """Alert a stranger once it had time to identify itself; withdraw a wrong alert."""
        mac = device.mac
        if device.role != ROLE_UNKNOWN:
            self._settling.pop(mac, None)
            if mac in self._unknown_reported:
                del self._unknown_reported[mac]
                data = {**self._event_data(device, now), "how": device.reason}
                return [Event("unknown_device_cleared", now, "info", data)]
            return []
        if not present or mac in self._unknown_reported:
            self._settling.pop(mac, None)
            return []
        deadline = self._identify_deadline(device, now)
        if now < deadline:
            self._settling[mac] = deadline
            return []
        self._settling.pop(mac, None)
        self._unknown_reported[mac] = None
        if len(self._unknown_reported) > MAX_UNKNOWN_REMEMBERED:
            self._unknown_reported.pop(next(iter(self._unknown_reported)))
        return [Event("unknown_device", now, "warning", self._event_data(device, now))]

    def _identify_deadline(self, device: _Device, now: float) -> float:
        if device.lease_active(now):
            if not self._hook_reports:
                return device.lease_since + UNKNOWN_SETTLE_S
            if device.vendor_class is not None:
                return device.lease_since  # the hook has spoken: nothing more will come
            return device.lease_since + HOOK_WAIT_S
        ip = device.address(now)
        if ip is not None and self._in_pool(ip):
            return device.first_seen + LEASE_WAIT_S
        return device.first_seen + UNKNOWN_SETTLE_S

    def _refresh_addresses(self, macs: Iterable[str] | None = None) -> None:
        """Bring ``present_addresses`` up to date for ``macs`` (None: every device)."""
        if macs is None:
            self._addresses = {}
            macs = self._devices
        for mac in macs:
            ip = self.address_of(mac)
            if ip is None:
                self._addresses.pop(mac, None)
            else:
                self._addresses[mac] = ip

    def _add_lease_ip(self, ip: str, mac: str) -> None:
        holders = self._lease_ips.get(ip)
        if holders is None:
            self._lease_ips[ip] = holders = set()
            self._pool_leased += self._in_pool(ip)
        holders.add(mac)

    def _drop_lease_ip(self, ip: str, mac: str) -> None:
        holders = self._lease_ips.get(ip)
        if holders is not None:
            holders.discard(mac)
            if not holders:
                del self._lease_ips[ip]
                self._pool_leased -= self._in_pool(ip)

    @staticmethod
    def _event_data(device: _Device, now: float) -> dict[str, Any]:
        return {
            "mac": device.mac,
            "ip": device.address(now),
            "name": device.name,
            "role": device.role,
            "hostname": device.hostname,
        }

    def _claims(self, now: float, ips: Collection[str] | None = None) -> dict[str, set[str]]:
        """ip -> MACs claiming it (all addresses, or only ``ips``, from the lease index). A
        neighbour entry counts against a lease only when the kernel saw it after that lease
        began: a leftover entry of the address's previous holder is history, not a conflict."""
        claims: dict[str, set[str]] = {}
        since: dict[str, float] = {}
        neighbours: Iterable[tuple[str, tuple[str, str, float]]]
        if ips is None:
            for device in self._devices.values():
                if device.lease_active(now) and device.lease_ip is not None:
                    claims.setdefault(device.lease_ip, set()).add(device.mac)
                    since[device.lease_ip] = max(
                        since.get(device.lease_ip, 0.0), device.lease_since
                    )
            neighbours = self._neigh.items()
        else:
            for ip in ips:
                for mac in self._lease_ips.get(ip, ()):
                    device = self._devices[mac]
                    if device.lease_active(now):
                        claims.setdefault(ip, set()).add(mac)
                        since[ip] = max(since.get(ip, 0.0), device.lease_since)
            neighbours = ((ip, self._neigh[ip]) for ip in ips if ip in self._neigh)
        for ip, (mac, state, seen) in neighbours:
            if state == FAILED or mac in claims.get(ip, ()):
                continue
            if ip not in since or seen >= since[ip]:
                claims.setdefault(ip, set()).add(mac)
        return claims

    def _conflict_events(
        self, now: float, ips: Collection[str] | None = None
    ) -> tuple[list[Event], set[str]]:
        """Report new conflicts (on every address, or on ``ips`` only; the others must not have
        changed). Also returns the MACs whose ``address_of`` may have changed with it."""
        claims = self._claims(now, ips)
        found = {ip: frozenset(macs) for ip, macs in claims.items() if len(macs) > 1}
        if ips is None:
            conflicts = found
        else:
            conflicts = {ip: m for ip, m in self._conflicts.items() if ip not in ips}
            conflicts.update(found)
        moved: set[str] = set()
        for ip in set(conflicts) ^ set(self._conflicts) | {
            ip for ip in conflicts if self._conflicts.get(ip) != conflicts[ip]
        }:
            # Everyone whose address this is: the claimants, and anyone using it unclaimed.
            moved |= conflicts.get(ip, frozenset()) | self._conflicts.get(ip, frozenset())
            moved |= self._lease_ips.get(ip, set())
            if ip in self._neigh:
                moved.add(self._neigh[ip][0])
        events: list[Event] = []
        for ip, macs in sorted(conflicts.items()):
            key = (ip, macs)
            last = self._conflict_reported.get(key)
            if self._conflicts.get(ip) == macs:
                continue
            if last is not None and now - last < CONFLICT_REPEAT_S:
                continue
            self._conflict_reported[key] = now
            names = [self._devices[m].name if m in self._devices else m for m in sorted(macs)]
            events.append(
                Event(
                    "address_conflict",
                    now,
                    "warning",
                    {"ip": ip, "macs": sorted(macs), "names": names},
                )
            )
        self._conflicts = conflicts
        if len(self._conflict_reported) > 4096:
            cutoff = now - CONFLICT_REPEAT_S
            self._conflict_reported = {
                k: t for k, t in self._conflict_reported.items() if t >= cutoff
            }
        return events, moved

    def _pool_events(self, now: float) -> list[Event]:
        if self._pool is None:
            return self._pool_transition(0, now)
        start, end = self._pool
        used_ips = {
            d.lease_ip
            for d in self._devices.values()
            if d.lease_ip is not None
            and d.lease_active(now)
            and start <= _ip_key(d.lease_ip) <= end
        }
        return self._pool_transition(len(used_ips), now)

    def _pool_transition(self, used: int, now: float) -> list[Event]:
        """Pool events for ``used`` leased pool addresses (crossing thresholds upwards)."""
        self._pool_used = used
        if self._pool is None:
            return []
        start, end = self._pool
        size = end - start + 1
        percent = used * 100 / size
        data = {"used": used, "size": size, "percent": round(percent, 1)}
        events: list[Event] = []
        threshold = self._settings.pool_warning_percent
        if percent >= threshold:
            if not self._pool_warned:
                self._pool_warned = True
                events.append(
                    Event("pool_utilisation", now, "warning", {**data, "threshold": threshold})
                )
        else:
            self._pool_warned = False
        if used >= size:
            if not self._pool_exhausted or now - self._pool_exhausted_at >= POOL_REPEAT_S:
                self._pool_exhausted = True
                self._pool_exhausted_at = now
                unknown = sum(
                    1
                    for d in self._devices.values()
                    if d.role == ROLE_UNKNOWN
                    and d.lease_ip is not None
                    and d.lease_active(now)
                    and self._in_pool(d.lease_ip)
                )
                message = (
                    "every DHCP pool address is leased: a new device gets no address"
                    f" ({unknown} of the {used} leases held by unknown devices)"
                )
                events.append(
                    Event(
                        "pool_exhausted",
                        now,
                        "error",
                        {**data, "unknown_leases": unknown, "message": message},
                    )
                )
        else:
            self._pool_exhausted = False
        return events

    def _duplicate_events(self, now: float) -> list[Event]:
        events = []
        for kind, data in self._duplicates.events(now):
            severity = "error" if kind == "duplicate_mac" else "info"
            events.append(Event(kind, now, severity, data))
        return events

    def _held_address(self, mac: str) -> str | None:
        """The address a MAC holds (named in clone alerts, even while in conflict); before
        its first lease or neighbour entry, the address reserved for it."""
        device = self._devices.get(mac)
        ip = device.address(self._now) if device is not None else None
        if ip is None:
            ip = next(
                (r_ip for _n, r_mac, r_ip in self._reservations if r_mac and r_mac.lower() == mac),
                None,
            )
        return ip

    def _clone_events(self, now: float) -> list[Event]:
        events = []
        for kind, data in self._clones.events(now, self._held_address):
            severity = "error" if kind == "duplicate_mac" else "info"
            events.append(Event(kind, now, severity, data))
        return events

    def _evict(self) -> None:
        if len(self._devices) <= MAX_DEVICES:
            return
        excess = len(self._devices) - EVICT_TO
        absent = sorted(
            (d for d in self._devices.values() if not d.present), key=lambda d: d.last_seen
        )
        for device in absent[:excess]:
            del self._devices[device.mac]
            self._awaiting.discard(device.mac)
            # Forget its lease too: should it still be in the file, the next snapshot sees
            # it as new and brings the device back.
            if self._leases.pop(device.mac, None) is not None and device.lease_ip:
                self._drop_lease_ip(device.lease_ip, device.mac)
            self._settling.pop(device.mac, None)


def _watched_macs(reservations: Iterable[Reservation]) -> dict[str, str]:
    """The MACs a clone of would matter: every reservation that names one."""
    return {mac.lower(): name for name, mac, _ip in reservations if mac}


def _later(a: int, b: int) -> bool:
    """Is expiry ``a`` later than ``b``? 0 means never expires."""
    if a == 0:
        return b != 0
    return b != 0 and a > b


@lru_cache(maxsize=4096)
def _ip_key(ip: str | None) -> int:
    """Sort key of an address (cached: the same few hundred addresses are sorted often)."""
    return int(ipaddress.IPv4Address(ip)) if ip else 1 << 33
