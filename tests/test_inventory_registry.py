"""The device registry: roles, presence, and events a technician or the portal would notice."""

from __future__ import annotations

import copy
import json
from typing import cast

from hypothesis import given, settings
from hypothesis import strategies as st

from energyhubd.config.sections.inventory import InventorySettings
from energyhubd.inventory.classify import classify
from energyhubd.inventory.events import Event
from energyhubd.inventory.leases import Lease, LeaseSnapshot, parse_leases
from energyhubd.inventory.neighbour import NeighbourUpdate
from energyhubd.inventory.registry import (
    CONFLICT_REPEAT_S,
    HOOK_WAIT_S,
    LEASE_GRACE_S,
    LEASE_WAIT_S,
    POOL_REPEAT_S,
    PROBE_QUIET_S,
    UNKNOWN_SETTLE_S,
    DeviceRegistry,
)

DISPLAY_MAC = "02:00:5e:10:00:01"
STRANGER = "de:ad:be:ef:00:01"
RESERVATIONS = [("display", DISPLAY_MAC, "192.168.254.200"), ("unit1", None, "192.168.254.201")]
SETTINGS = InventorySettings(
    expected_units=3, unit_mac_prefixes=("02:00:5e:20",), unit_vendor_classes=("ferroamp-eh",)
)
T0 = 1_700_000_000.0
DAY = 86400


def lease(mac: str, ip: str, host: str | None = None, expiry: float = T0 + DAY) -> Lease:
    return Lease(int(expiry), mac, ip, host, None)


def snap(*leases: Lease) -> LeaseSnapshot:
    return LeaseSnapshot(leases=tuple(leases))


def kinds(events: list[Event]) -> list[str]:
    return [e.kind for e in events]


def site() -> tuple[DeviceRegistry, LeaseSnapshot]:
    registry = DeviceRegistry(SETTINGS, RESERVATIONS, ("192.168.254.200", "192.168.254.244"))
    full = snap(
        lease(DISPLAY_MAC, "192.168.254.200", "Display"),
        lease("02:00:5e:30:00:11", "192.168.254.201", "unit1"),  # reservation by host name
        lease("02:00:5e:20:00:12", "192.168.254.202", None),  # MAC prefix
        lease("02:00:5e:30:00:13", "192.168.254.203", "EnergyHub-3"),  # host name glob
    )
    return registry, full


def test_display_and_units_are_recognised() -> None:
    registry, full = site()
    events = registry.apply_leases(full, T0)
    assert kinds(events) == ["device_joined"] * 4
    roles = {d["mac"]: (d["role"], d["name"]) for d in registry.devices()}
    assert roles[DISPLAY_MAC] == ("display", "display")
    assert roles["02:00:5e:30:00:11"] == ("unit", "unit1")
    assert roles["02:00:5e:20:00:12"] == ("unit", "02:00:5e:20:00:12")
    assert roles["02:00:5e:30:00:13"] == ("unit", "EnergyHub-3")
    summary = registry.summary()
    assert summary["display"] == {"present": True, "ip": "192.168.254.200", "mac": DISPLAY_MAC}
    assert summary["units"]["text"] == "3/3" and summary["units"]["complete"]
    assert summary["unknown"]["count"] == 0
    assert summary["pool"]["used"] == 4 and summary["pool"]["size"] == 45
    json.dumps(registry.devices()), json.dumps(summary)  # JSON-ready


def test_missing_unit_shows_in_count() -> None:
    registry, full = site()
    registry.apply_leases(snap(*full.leases[:3]), T0)
    assert registry.summary()["units"]["text"] == "2/3"
    assert not registry.summary()["units"]["complete"]


def test_vendor_class_makes_a_unit() -> None:
    registry, _ = site()
    registry.apply_leases(snap(lease("0a:00:00:00:00:09", "192.168.254.230", "hub")), T0)
    events = registry.apply_vendor_class("0A:00:00:00:00:09", "ferroamp-eh", T0 + 1)
    assert kinds(events) == ["device_changed"]
    assert events[0].data["changes"]["role"] == ["unknown", "unit"]


def test_unknown_device_reported_once_per_mac() -> None:
    registry, full = site()
    registry.apply_leases(full, T0)
    with_stranger = snap(*full.leases, lease(STRANGER, "192.168.254.220", "laptop"))
    events = registry.apply_leases(with_stranger, T0 + 10)
    assert kinds(events) == ["device_joined"]  # what identifies a unit may still come
    assert registry.summary()["identifying"] == 1
    assert registry.next_deadline() == T0 + 10 + UNKNOWN_SETTLE_S
    events = registry.expire(T0 + 10 + UNKNOWN_SETTLE_S)
    assert kinds(events) == ["unknown_device"]
    assert events[0].severity == "warning" and events[0].data["hostname"] == "laptop"
    assert registry.next_deadline() is None
    assert registry.summary()["unknown"]["devices"][0]["mac"] == STRANGER
    # Renewal: same lease with a later expiry -> nothing new.
    renewed = snap(*full.leases, lease(STRANGER, "192.168.254.220", "laptop", T0 + 2 * DAY))
    assert registry.apply_leases(renewed, T0 + 3600) == []
    # Leaves and comes back: left + joined, but no second unknown_device.
    assert kinds(registry.apply_leases(full, T0 + 7200)) == ["device_left"]
    assert kinds(registry.apply_leases(renewed, T0 + 7300)) == ["device_joined"]


def test_ip_move_is_a_change_and_forwards_follow() -> None:
    registry, full = site()
    registry.apply_leases(full, T0)
    assert registry.address_of("02:00:5e:20:00:12") == "192.168.254.202"
    moved = snap(*full.leases[:2], lease("02:00:5e:20:00:12", "192.168.254.210"), full.leases[3])
    events = registry.apply_leases(moved, T0 + 60)
    assert kinds(events) == ["device_changed"]
    assert events[0].data["changes"] == {"ip": ["192.168.254.202", "192.168.254.210"]}
    assert registry.address_of("02:00:5e:20:00:12") == "192.168.254.210"
    assert registry.address_of_reservation("display") == "192.168.254.200"


def test_lease_gone_means_left_and_address_is_withdrawn() -> None:
    registry, full = site()
    registry.apply_leases(full, T0)
    events = registry.apply_leases(snap(*full.leases[1:]), T0 + 60)
    assert kinds(events) == ["device_left"]
    assert events[0].data["reason"] == "lease ended" and events[0].severity == "warning"
    assert registry.address_of(DISPLAY_MAC) is None
    assert not registry.summary()["display"]["present"]
    # A stranger inheriting the address is not the display and gets no forward.
    events = registry.apply_leases(
        snap(*full.leases[1:], lease(STRANGER, "192.168.254.200", "display")), T0 + 120
    )
    assert kinds(events) == ["device_joined"]
    assert kinds(registry.expire(T0 + 120 + UNKNOWN_SETTLE_S)) == ["unknown_device"]
    assert registry.address_of(DISPLAY_MAC) is None
    assert registry.address_of_reservation("display") is None


def test_lease_expiry_without_file_change() -> None:
    registry, _ = site()
    registry.apply_leases(snap(lease(DISPLAY_MAC, "192.168.254.200", expiry=T0 + 100)), T0)
    assert registry.expire(T0 + 99) == []
    events = registry.expire(T0 + 100)
    assert kinds(events) == ["device_left"]


def test_infinite_lease_never_expires() -> None:
    registry, _ = site()
    registry.apply_leases(snap(lease(DISPLAY_MAC, "192.168.254.200", expiry=0)), T0)
    assert registry.expire(T0 + 10 * 365 * DAY) == []


def test_neighbour_failed_means_left_until_proof_of_life() -> None:
    registry, full = site()
    registry.apply_leases(full, T0)
    ip = "192.168.254.203"
    mac = "02:00:5e:30:00:13"
    assert registry.apply_neighbour(NeighbourUpdate(ip, mac, "reachable"), T0 + 1) == []
    events = registry.apply_neighbour(NeighbourUpdate(ip, None, "failed"), T0 + 2)
    assert kinds(events) == ["device_left"] and events[0].data["reason"] == "neighbour failed"
    assert registry.summary()["units"]["text"] == "2/3"
    assert registry.address_of(mac) is None
    # The kernel garbage-collects the failed entry: that is not proof of life.
    assert registry.apply_neighbour(NeighbourUpdate(ip, None, "failed", deleted=True), T0 + 3) == []
    # It talks again: back.
    events = registry.apply_neighbour(NeighbourUpdate(ip, mac, "stale"), T0 + 4)
    assert kinds(events) == ["device_joined"]
    registry.apply_neighbour(NeighbourUpdate(ip, None, "failed"), T0 + 5)
    # A DHCP renewal (new expiry) is proof of life too.
    renewed = snap(*full.leases[:3], lease(mac, ip, "EnergyHub-3", T0 + 2 * DAY))
    assert kinds(registry.apply_leases(renewed, T0 + 6)) == ["device_joined"]


def test_static_stranger_seen_only_in_neighbour_table() -> None:
    registry, full = site()
    registry.apply_leases(full, T0)
    events = registry.apply_neighbour(NeighbourUpdate("192.168.254.50", STRANGER, "reachable"), T0)
    assert kinds(events) == ["device_joined"]
    assert kinds(registry.expire(T0 + UNKNOWN_SETTLE_S)) == ["unknown_device"]
    events = registry.apply_neighbour(
        NeighbourUpdate("192.168.254.50", None, "unknown", deleted=True), T0 + 60
    )
    assert kinds(events) == ["device_left"]
    assert events[0].data["reason"] == "neighbour entry removed"


def test_address_conflict_from_neighbour_table() -> None:
    registry, full = site()
    registry.apply_leases(full, T0)
    display_ip = "192.168.254.200"
    registry.apply_neighbour(NeighbourUpdate(display_ip, DISPLAY_MAC, "reachable"), T0)
    events = registry.apply_neighbour(NeighbourUpdate(display_ip, STRANGER, "reachable"), T0 + 1)
    assert "address_conflict" in kinds(events)
    conflict = next(e for e in events if e.kind == "address_conflict")
    assert conflict.data["ip"] == display_ip
    assert conflict.data["macs"] == sorted([DISPLAY_MAC, STRANGER])
    assert registry.summary()["conflicts"] == [{"ip": display_ip, "macs": conflict.data["macs"]}]
    assert registry.address_of(DISPLAY_MAC) is None  # no forward to a contested address
    # ARP flip-flop while the fight goes on: not reported again.
    for i in range(5):
        registry.apply_neighbour(NeighbourUpdate(display_ip, DISPLAY_MAC, "reachable"), T0 + 2 + i)
        again = registry.apply_neighbour(
            NeighbourUpdate(display_ip, STRANGER, "reachable"), T0 + 2.5 + i
        )
        assert "address_conflict" not in kinds(again)
    later = T0 + CONFLICT_REPEAT_S + 100
    registry.apply_neighbour(NeighbourUpdate(display_ip, DISPLAY_MAC, "reachable"), later)
    assert registry.address_of(DISPLAY_MAC) == display_ip
    events = registry.apply_neighbour(NeighbourUpdate(display_ip, STRANGER, "reachable"), later + 1)
    assert "address_conflict" in kinds(events)


def test_address_conflict_from_leases() -> None:
    registry, full = site()
    events = registry.apply_leases(snap(*full.leases, lease(STRANGER, "192.168.254.202", "x")), T0)
    conflicts = [e for e in events if e.kind == "address_conflict"]
    assert len(conflicts) == 1 and conflicts[0].data["ip"] == "192.168.254.202"


def test_pool_warning_once_and_exhaustion() -> None:
    settings = InventorySettings(pool_warning_percent=80)
    registry = DeviceRegistry(settings, [], ("192.168.254.200", "192.168.254.209"))
    leases = [lease(f"0a:00:00:00:00:{i:02x}", f"192.168.254.{200 + i}") for i in range(10)]
    outside = lease("0a:00:00:00:01:00", "192.168.254.20")  # static range: not the pool

    def pool_kinds(n: int, t: float) -> list[str]:
        events = registry.apply_leases(snap(*leases[:n], outside), t)
        return [k for k in kinds(events) if k.startswith("pool")]

    assert pool_kinds(7, T0) == []
    assert pool_kinds(8, T0 + 1) == ["pool_utilisation"]
    assert pool_kinds(9, T0 + 2) == []  # still above: not repeated
    assert pool_kinds(8, T0 + 3) == []
    assert pool_kinds(10, T0 + 4) == ["pool_exhausted"]
    assert registry.summary()["pool"]["percent"] == 100.0
    assert pool_kinds(5, T0 + 5) == []
    assert pool_kinds(8, T0 + 6) == ["pool_utilisation"]  # re-armed after dropping below


def test_unreadable_snapshot_changes_nothing() -> None:
    registry, full = site()
    registry.apply_leases(full, T0)
    assert registry.apply_leases(LeaseSnapshot(error="EACCES"), T0 + 1) == []
    assert registry.summary()["units"]["text"] == "3/3"
    assert kinds(registry.apply_leases(LeaseSnapshot(missing=True), T0 + 2)) == ["device_left"] * 4


def test_display_reservation_without_mac() -> None:
    reservations = [("display", None, "192.168.254.200")]
    for mac, ip, host in (
        ("0a:00:00:00:00:01", "192.168.254.200", None),
        ("0a:00:00:00:00:01", "192.168.254.230", "DISPLAY"),
    ):
        assert classify(mac, ip, host, reservations, SETTINGS).role == "display"
    with_mac = [("display", DISPLAY_MAC, "192.168.254.200")]
    assert classify(STRANGER, "192.168.254.200", "display", with_mac, SETTINGS).role == "unknown"


def test_reconfigure_renames_devices() -> None:
    registry, full = site()
    registry.apply_leases(full, T0)
    events = registry.configure(
        SETTINGS, [*RESERVATIONS, ("unit3", "02:00:5e:30:00:13", "192.168.254.203")], None, T0 + 1
    )
    assert kinds(events) == ["device_changed"]
    assert events[0].data["changes"] == {"name": ["EnergyHub-3", "unit3"]}


def test_parsed_hostile_file_feeds_the_registry() -> None:
    data = (
        b"0 de:ad:be:ef:00:02 192.168.254.240 $(reboot)\n\x1b[31m *\n"
        b"0 de:ad:be:ef:00:02 192.168.254.240 $(reboot)\xff *\n"
    )
    registry, _ = site()
    registry.apply_leases(parse_leases(data), T0)
    events = registry.expire(T0 + UNKNOWN_SETTLE_S)
    unknown = next(e for e in events if e.kind == "unknown_device")
    assert "$" not in unknown.data["name"] and "\\xff" in unknown.data["name"]


def test_leftover_neighbour_entry_of_previous_holder_is_not_a_conflict() -> None:
    registry, full = site()
    ip = "192.168.254.220"
    registry.apply_leases(snap(*full.leases, lease(STRANGER, ip, "old")), T0)
    registry.apply_neighbour(NeighbourUpdate(ip, STRANGER, "reachable"), T0 + 1)
    registry.apply_neighbour(NeighbourUpdate(ip, STRANGER, "stale"), T0 + 30)
    # The old holder released the address; dnsmasq later gives it to a new unit. The kernel
    # still has the old holder's STALE entry (and may move it to DELAY on its timer).
    new = "02:00:5e:20:00:99"
    events = registry.apply_leases(snap(*full.leases, lease(new, ip)), T0 + 600)
    registry.apply_neighbour(NeighbourUpdate(ip, STRANGER, "delay"), T0 + 601)
    assert "address_conflict" not in kinds(events)
    assert registry.summary()["conflicts"] == []
    assert registry.address_of(new) == ip
    # The new unit answers ARP: the entry moves to it; still no conflict.
    events = registry.apply_neighbour(NeighbourUpdate(ip, new, "reachable"), T0 + 602)
    assert "address_conflict" not in kinds(events)
    # But the old holder shows up again on that address: that is a conflict.
    events = registry.apply_neighbour(NeighbourUpdate(ip, STRANGER, "reachable"), T0 + 700)
    assert "address_conflict" in kinds(events)
    assert registry.address_of(new) is None


def test_quiet_devices_are_probed_and_an_unplugged_unit_leaves() -> None:
    registry, full = site()
    registry.apply_leases(full, T0)
    ip, mac = "192.168.254.203", "02:00:5e:30:00:13"
    assert registry.probe_candidates(T0 + 10) == []  # just heard from (lease seen)
    registry.apply_neighbour(NeighbourUpdate(ip, mac, "reachable"), T0 + 60)
    registry.apply_neighbour(NeighbourUpdate(ip, mac, "stale"), T0 + 90)  # timer, not news
    due = T0 + 60 + PROBE_QUIET_S  # quiet since its last REACHABLE
    assert registry.next_due(T0 + 100) == T0 + PROBE_QUIET_S  # the others: since the lease
    assert registry.probe_candidates(due - 1) == [
        "192.168.254.200",  # never seen in ARP either
        "192.168.254.201",
        "192.168.254.202",
    ]
    candidates = registry.probe_candidates(due + 20)
    assert candidates == [ip]
    assert registry.probe_candidates(due + 30) == []  # not again right away
    # The probe goes unanswered: the unit is unplugged although its lease runs for a day.
    events = registry.apply_neighbour(NeighbourUpdate(ip, None, "failed"), due + 25)
    assert kinds(events) == ["device_left"]
    assert registry.summary()["units"]["text"] == "2/3"


def test_released_static_leftover_is_probed_then_leaves() -> None:
    registry, _ = site()
    ip = "192.168.254.60"
    registry.apply_neighbour(NeighbourUpdate(ip, STRANGER, "reachable"), T0)
    registry.apply_neighbour(NeighbourUpdate(ip, STRANGER, "stale"), T0 + 30)
    assert registry.summary()["unknown"]["count"] == 1  # a STALE entry alone still counts
    assert registry.probe_candidates(T0 + 500) == [ip]
    events = registry.apply_neighbour(NeighbourUpdate(ip, None, "failed"), T0 + 501)
    assert kinds(events) == ["device_left"]


def test_torn_read_changes_nothing() -> None:
    registry, full = site()
    registry.apply_leases(full, T0)
    torn = LeaseSnapshot(leases=full.leases[:1], stable=False)
    assert registry.apply_leases(torn, T0 + 1) == []
    assert registry.summary()["units"]["text"] == "3/3"


def test_static_squatter_on_display_address_is_not_the_display() -> None:
    registry = DeviceRegistry(SETTINGS, [("display", None, "192.168.254.200")], None)
    events = registry.apply_neighbour(NeighbourUpdate("192.168.254.200", STRANGER, "reachable"), T0)
    assert kinds(events) == ["device_joined"]
    assert kinds(registry.expire(T0 + UNKNOWN_SETTLE_S)) == ["unknown_device"]
    assert not registry.summary()["display"]["present"]
    # The real display gets the reserved address from dnsmasq (matched by lease address).
    registry.apply_leases(snap(lease(DISPLAY_MAC, "192.168.254.200", None)), T0 + 11)
    assert registry.summary()["display"]["mac"] == DISPLAY_MAC


def test_left_event_names_the_address_it_had() -> None:
    registry, full = site()
    registry.apply_leases(full, T0)
    events = registry.apply_leases(snap(*full.leases[1:]), T0 + 5)
    assert events[0].data["ip"] == "192.168.254.200"


MACS = [DISPLAY_MAC, "02:00:5e:20:00:12", STRANGER, "de:ad:be:ef:00:02"]
IPS = ["192.168.254.200", "192.168.254.201", "192.168.254.202", "192.168.254.50"]
STATES = ["reachable", "stale", "delay", "probe", "failed", "unknown"]

step = st.one_of(
    st.lists(
        st.tuples(st.sampled_from(MACS), st.sampled_from(IPS), st.integers(0, 3)), max_size=4
    ).map(lambda leases: ("leases", leases)),
    st.tuples(
        st.sampled_from(IPS),
        st.one_of(st.none(), st.sampled_from(MACS)),
        st.sampled_from(STATES),
        st.booleans(),
    ).map(lambda n: ("neigh", n)),
    st.just(("expire", None)),
)


def play(registry: DeviceRegistry, kind: str, arg: object, now: float) -> list[Event]:
    """One ``step`` of a generated history, applied to ``registry`` at ``now``."""
    if kind == "leases":
        assert isinstance(arg, list)
        expiries = [0, now + 100, now + DAY, now - 1]
        return registry.apply_leases(
            snap(*(lease(m, ip, None, expiries[e]) for m, ip, e in arg)), now
        )
    if kind == "neigh":
        ip, mac, state, deleted = cast(tuple[str, str | None, str, bool], arg)
        if state in ("failed", "unknown") or deleted:
            mac = None
        return registry.apply_neighbour(NeighbourUpdate(ip, mac, state, 0, deleted), now)
    return registry.expire(now)


@settings(max_examples=300, deadline=None)
@given(st.lists(step, max_size=40))
def test_event_invariants_hold_for_any_history(steps: list[tuple[str, object]]) -> None:
    registry = DeviceRegistry(SETTINGS, RESERVATIONS, ("192.168.254.200", "192.168.254.209"))
    present: set[str] = set()
    unknown_reported: set[str] = set()
    now = T0
    for kind, arg in steps:
        now += 50
        events = play(registry, kind, arg, now)
        for event in events:
            mac = event.data.get("mac")
            if event.kind == "device_joined":
                assert mac not in present
                present.add(mac)
            elif event.kind == "device_left":
                assert mac in present
                present.discard(mac)
            elif event.kind == "unknown_device":
                assert mac not in unknown_reported  # once per MAC until withdrawn
                unknown_reported.add(mac)
            elif event.kind == "unknown_device_cleared":
                assert mac in unknown_reported
                unknown_reported.discard(mac)
            elif event.kind == "device_changed":
                assert mac in present and event.data["changes"]
        listed = {d["mac"] for d in registry.devices() if d["present"]}
        assert listed == present
        for mac in MACS:
            if mac not in present:
                assert registry.address_of(mac) is None
        json.dumps(registry.summary())


class FullRegistry(DeviceRegistry):
    """The registry as it was before lease events became incremental: every lease counts as
    changed, every device is compared, every address is checked for conflicts."""

    def apply_leases(self, snapshot: LeaseSnapshot, now: float) -> list[Event]:
        self._leases = dict.fromkeys(self._leases, None)  # type: ignore[arg-type]
        return super().apply_leases(snapshot, now)

    def _diff(
        self, now: float, default_reason: str = "lease ended", macs: object = None
    ) -> list[Event]:
        return super()._diff(now, default_reason)

    def _conflict_events(self, now: float, ips: object = None) -> tuple[list[Event], set[str]]:
        return super()._conflict_events(now)


@settings(max_examples=300, deadline=None)
@given(st.lists(step, max_size=40))
def test_incremental_lease_updates_match_a_full_recompute(steps: list[tuple[str, object]]) -> None:
    pool = ("192.168.254.200", "192.168.254.209")
    fast = DeviceRegistry(SETTINGS, RESERVATIONS, pool)
    full = FullRegistry(SETTINGS, RESERVATIONS, pool)
    now = T0
    for kind, arg in steps:
        now += 50
        for registry in (fast, full):
            if kind == "leases":
                assert isinstance(arg, list)
                expiries = [0, now + 100, now + DAY, now - 1]
                got = registry.apply_leases(
                    snap(*(lease(m, ip, None, expiries[e]) for m, ip, e in arg)), now
                )
            elif kind == "neigh":
                ip, mac, state, deleted = cast(tuple[str, str | None, str, bool], arg)
                if state in ("failed", "unknown") or deleted:
                    mac = None
                got = registry.apply_neighbour(NeighbourUpdate(ip, mac, state, 0, deleted), now)
            else:
                got = registry.expire(now)
            if registry is fast:
                fast_events = got
        assert [(e.kind, e.data) for e in fast_events] == [(e.kind, e.data) for e in got]
        assert fast.devices() == full.devices()
        assert fast.summary() == full.summary()
        expected = {m: fast.address_of(m) for m in MACS}
        assert fast.present_addresses() == {m: ip for m, ip in expected.items() if ip}


def test_joining_unit_seen_before_its_lease_is_not_announced_as_unknown() -> None:
    """dnsmasq's offer puts the MAC in the neighbour table ~40 ms before the lease is read."""
    registry, _full = site()
    mac, ip = "02:00:5e:30:00:21", "192.168.254.221"
    assert registry.apply_neighbour(NeighbourUpdate(ip, mac, "reachable"), T0) == []
    events = registry.apply_leases(snap(lease(mac, ip, "EnergyHub-4")), T0 + 0.05)
    assert kinds(events) == ["device_joined"]
    assert events[0].data["role"] == "unit"


def test_static_address_squatting_in_the_pool_is_unknown_after_the_grace() -> None:
    registry, _full = site()
    ip = "192.168.254.230"
    assert registry.apply_neighbour(NeighbourUpdate(ip, STRANGER, "reachable"), T0) == []
    assert registry.expire(T0 + 1) == []
    assert registry.next_deadline() == T0 + LEASE_GRACE_S
    assert kinds(registry.expire(T0 + 6)) == ["device_joined"]
    # No lease in the pool: most likely a client mid-DHCP under load; it may still identify.
    assert registry.next_deadline() == T0 + LEASE_WAIT_S
    assert registry.expire(T0 + 20) == []
    events = registry.expire(T0 + LEASE_WAIT_S)
    assert kinds(events) == ["unknown_device"]
    assert events[0].data["mac"] == STRANGER


def test_unit_whose_lease_comes_late_under_load_is_never_alerted() -> None:
    """Power-up under load: offer at 0 s, lease (with the host name) at 13.35 s."""
    registry, _full = site()
    mac, ip = "02:00:5e:30:00:31", "192.168.254.231"
    assert registry.apply_neighbour(NeighbourUpdate(ip, mac, "reachable"), T0) == []
    assert kinds(registry.expire(T0 + LEASE_GRACE_S)) == ["device_joined"]
    assert registry.expire(T0 + UNKNOWN_SETTLE_S) == []
    events = registry.apply_leases(snap(lease(mac, ip, "EnergyHub-9")), T0 + 13.35)
    assert "unknown_device" not in kinds(events)
    assert registry.summary()["identifying"] == 0 and registry.next_deadline() is None
    assert registry.expire(T0 + LEASE_WAIT_S + 1) == []


def test_vendor_class_arriving_after_the_lease_prevents_the_alert() -> None:
    registry, _full = site()
    mac, ip = "02:aa:00:00:00:01", "192.168.254.232"
    assert kinds(registry.apply_leases(snap(lease(mac, ip, None)), T0)) == ["device_joined"]
    events = registry.apply_vendor_class(mac, "ferroamp-eh", T0 + 4)
    assert kinds(events) == ["device_changed"]
    assert registry.expire(T0 + 60) == []


def test_late_identification_withdraws_the_alert() -> None:
    registry, _full = site()
    mac, ip = "02:aa:00:00:00:02", "192.168.254.233"
    registry.apply_leases(snap(lease(mac, ip, None)), T0)
    assert kinds(registry.expire(T0 + UNKNOWN_SETTLE_S)) == ["unknown_device"]
    assert registry.summary()["unknown"]["count"] == 1
    events = registry.apply_vendor_class(mac, "ferroamp-eh", T0 + 40)
    assert kinds(events) == ["device_changed", "unknown_device_cleared"]
    assert events[1].data["how"] == "vendor class"
    assert registry.summary()["unknown"]["count"] == 0


def test_display_mac_on_a_second_host_is_flagged_and_cleared() -> None:
    registry, _full = site()
    registry.apply_leases(snap(lease(DISPLAY_MAC, "192.168.254.200", "Display")), T0)
    registry.apply_neighbour(NeighbourUpdate("192.168.254.200", DISPLAY_MAC, "reachable"), T0)
    # The clone appears with a static address; then both keep answering.
    assert "duplicate_mac" not in kinds(
        registry.apply_neighbour(
            NeighbourUpdate("192.168.254.150", DISPLAY_MAC, "reachable"), T0 + 1
        )
    )
    events = registry.apply_neighbour(
        NeighbourUpdate("192.168.254.200", DISPLAY_MAC, "reachable"), T0 + 2
    )
    assert "duplicate_mac" not in kinds(events)  # could still be a device that moved back
    events = registry.apply_neighbour(
        NeighbourUpdate("192.168.254.150", DISPLAY_MAC, "reachable"), T0 + 2.5
    )
    dup = [e for e in events if e.kind == "duplicate_mac"]
    assert dup and dup[0].severity == "error"
    assert dup[0].data == {
        "mac": DISPLAY_MAC,
        "name": "display",
        "ips": ["192.168.254.150", "192.168.254.200"],
        "signal": "address",
        "evidence": "answers from 192.168.254.150, 192.168.254.200 in turn (neighbour table)",
    }
    assert registry.summary()["duplicates"][0]["ips"] == ["192.168.254.150", "192.168.254.200"]
    # Still the same clone: no repeat within the hour.
    events = registry.apply_neighbour(
        NeighbourUpdate("192.168.254.150", DISPLAY_MAC, "reachable"), T0 + 3
    )
    assert "duplicate_mac" not in kinds(events)
    events = registry.apply_neighbour(NeighbourUpdate("192.168.254.150", None, "failed"), T0 + 60)
    assert "duplicate_mac_cleared" in kinds(events)
    assert registry.summary()["duplicates"] == []


def test_a_device_that_moved_is_not_a_duplicate() -> None:
    registry, _full = site()
    registry.apply_neighbour(NeighbourUpdate("192.168.254.150", DISPLAY_MAC, "reachable"), T0)
    registry.apply_neighbour(NeighbourUpdate("192.168.254.151", DISPLAY_MAC, "reachable"), T0 + 5)
    registry.apply_neighbour(NeighbourUpdate("192.168.254.150", DISPLAY_MAC, "stale"), T0 + 30)
    events = registry.apply_neighbour(
        NeighbourUpdate("192.168.254.151", DISPLAY_MAC, "reachable"), T0 + 40
    )
    assert "duplicate_mac" not in kinds(events)
    assert registry.summary()["duplicates"] == []


def test_pool_exhaustion_says_who_holds_it_and_repeats_while_it_lasts() -> None:
    registry = DeviceRegistry(SETTINGS, RESERVATIONS, ("192.168.254.210", "192.168.254.212"))
    fakes = [lease(f"de:ad:00:00:00:0{i}", f"192.168.254.21{i}") for i in range(3)]
    events = registry.apply_leases(snap(*fakes), T0)
    exhausted = [e for e in events if e.kind == "pool_exhausted"]
    assert exhausted and exhausted[0].data["unknown_leases"] == 3
    assert "new device gets no address" in exhausted[0].data["message"]
    assert registry.summary()["pool"]["exhausted"] is True
    assert "pool_exhausted" not in kinds(registry.expire(T0 + 60))
    assert "pool_exhausted" in kinds(registry.expire(T0 + POOL_REPEAT_S))


def test_settle_window_counts_from_the_lease_not_from_first_sight() -> None:
    """Measured under load: offer at 0 s, lease at 13 s, the hook's vendor class after it."""
    registry, _full = site()
    mac, ip = "02:aa:00:00:00:03", "192.168.254.234"
    registry.apply_neighbour(NeighbourUpdate(ip, mac, "reachable"), T0)
    registry.expire(T0 + LEASE_GRACE_S)
    assert registry.apply_leases(snap(lease(mac, ip, None)), T0 + 13) == []
    assert registry.next_deadline() == T0 + 13 + UNKNOWN_SETTLE_S
    assert registry.expire(T0 + 14) == []
    assert "unknown_device" not in kinds(registry.apply_vendor_class(mac, "ferroamp-eh", T0 + 15))
    assert registry.next_deadline() is None


def hooked() -> DeviceRegistry:
    return DeviceRegistry(
        SETTINGS, RESERVATIONS, ("192.168.254.200", "192.168.254.244"), hook_reports=True
    )


def test_with_a_reporting_hook_the_verdict_waits_for_the_hook_not_a_clock() -> None:
    """Under load dnsmasq's hook queue took longer than any fixed window for the first unit."""
    registry = hooked()
    mac, ip = "02:aa:00:00:00:04", "192.168.254.235"
    assert kinds(registry.apply_leases(snap(lease(mac, ip, None)), T0)) == ["device_joined"]
    assert registry.next_deadline() == T0 + HOOK_WAIT_S
    assert registry.expire(T0 + 30) == []  # the hook has not spoken yet: no verdict
    events = registry.apply_vendor_class(mac, "ferroamp-eh", T0 + 31)
    assert kinds(events) == ["device_changed"] and registry.next_deadline() is None


def test_with_a_reporting_hook_a_stranger_is_alerted_as_soon_as_it_reported() -> None:
    registry = hooked()
    registry.apply_leases(snap(lease(STRANGER, "192.168.254.236", "laptop")), T0)
    events = registry.apply_vendor_class(STRANGER, "", T0 + 0.2)  # no vendor class sent
    assert kinds(events) == ["unknown_device"]


def test_with_a_reporting_hook_a_silent_hook_still_ends_in_a_verdict() -> None:
    registry = hooked()
    registry.apply_leases(snap(lease(STRANGER, "192.168.254.236", "laptop")), T0)
    assert kinds(registry.expire(T0 + HOOK_WAIT_S)) == ["unknown_device"]


def test_a_report_without_a_class_does_not_unlearn_a_known_one() -> None:
    """dnsmasq runs the hook for other events too, without the client's vendor class."""
    registry = hooked()
    mac, ip = "02:aa:00:00:00:05", "192.168.254.237"
    registry.apply_vendor_class(mac, "ferroamp-eh", T0)  # the hook beat the lease read
    registry.apply_vendor_class(mac, "", T0)
    registry.apply_leases(snap(lease(mac, ip, None)), T0)
    assert registry.devices()[0]["role"] == "unit"
    assert registry.apply_vendor_class(mac, "", T0 + 5) == []
    assert registry.devices()[0]["role"] == "unit"


def test_maintenance_is_needed_only_while_there_is_something_to_maintain() -> None:
    registry, full = site()
    assert not registry.needs_maintenance()  # empty LAN: no minute timer
    registry.apply_leases(full, T0)
    assert registry.needs_maintenance()  # leases to expire, devices to re-check
    registry.apply_leases(snap(), T0 + 1)
    registry.expire(T0 + 2)
    assert registry.needs_maintenance() is any(d["present"] for d in registry.devices())
    registry.apply_neighbour(NeighbourUpdate("192.168.254.230", STRANGER, "reachable"), T0 + 3)
    assert registry.needs_maintenance()  # a pool address awaiting its lease (grace)


@settings(max_examples=300, deadline=None)
@given(st.lists(step, max_size=40), st.floats(min_value=0.0, max_value=1.0))
def test_nothing_is_due_before_next_due_and_a_round_moves_it_on(
    steps: list[tuple[str, object]], fraction: float
) -> None:
    """The monitor sleeps until ``next_due`` (or a settle deadline): any time before it, a
    maintenance round finds nothing; a round at it moves the due time past it (no busy loop)."""
    registry = DeviceRegistry(SETTINGS, RESERVATIONS, ("192.168.254.200", "192.168.254.209"))
    now = T0
    for kind, arg in steps:
        now += 50
        play(registry, kind, arg, now)
    registry.expire(now)  # whatever was due by now is done
    registry.probe_candidates(now)
    due = registry.next_due(now)
    limits = [t for t in (due, registry.next_deadline()) if t is not None]
    horizon = min(limits) if limits else now + 3 * DAY
    if horizon <= now:  # a settle deadline already past: the settle timer's, not ours
        return
    before = copy.deepcopy(registry)
    early = now + (horizon - now) * fraction * 0.999
    assert before.expire(early) == []
    assert before.probe_candidates(early) == []
    if due is not None and (registry.next_deadline() is None or due <= registry.next_deadline()):
        registry.expire(due)
        registry.probe_candidates(due)
        later = registry.next_due(due)
        assert later is None or later > due
