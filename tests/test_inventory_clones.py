"""A clone on the display's own address: the pure decision (time passed in), and the registry
feeding it from leases and bridge-port updates."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from energyhubd.inventory.clones import (
    CLIENT_ID,
    CLIENT_ID_WINDOW_S,
    PORT,
    PORT_WINDOW_S,
    REPEAT_S,
    CloneEvidence,
)
from energyhubd.inventory.leases import Lease, LeaseSnapshot
from energyhubd.inventory.neighbour import PortUpdate
from energyhubd.inventory.registry import DeviceRegistry

MAC = "02:eb:00:00:00:01"
IP = "192.168.254.200"
T0 = 1_800_000_000.0


def evidence() -> CloneEvidence:
    clones = CloneEvidence()
    clones.watch({MAC: "display"})
    return clones


def kinds(found: list[tuple[str, dict[str, object]]]) -> list[str]:
    return [kind for kind, _data in found]


def feed(clones: CloneEvidence, channel: str, values: list[str], step: float) -> list[str]:
    seen: list[str] = []
    for i, value in enumerate(values):
        now = T0 + i * step
        clones.note(MAC, channel, value, now)
        seen += kinds(clones.events(now, lambda _mac: IP))
    return seen


def test_bridge_port_swinging_back_and_forth_is_a_clone_named_with_address_and_evidence() -> None:
    clones = evidence()
    assert feed(clones, PORT, ["lan1", "lan2", "lan1"], 2.0) == []
    clones.note(MAC, PORT, "lan2", T0 + 6)
    ((kind, data),) = clones.events(T0 + 6, lambda _mac: IP)
    assert kind == "duplicate_mac"
    assert data["mac"] == MAC and data["ip"] == IP and data["name"] == "display"
    assert data["signal"] == PORT and data["values"] == ["lan1", "lan2"]
    assert data["changes"] == 3
    assert str(data["evidence"]).startswith("bridge port alternates between lan1, lan2: 3 changes")
    # Lasting: again only after an hour; gone quiet: cleared once it left its window.
    clones.note(MAC, PORT, "lan1", T0 + 8)
    assert clones.events(T0 + 8, lambda _mac: IP) == []
    assert clones.next_deadline() == T0 + 2 + PORT_WINDOW_S  # lan1's first run drops out
    assert kinds(clones.events(T0 + 6 + REPEAT_S, lambda _mac: IP)) == ["duplicate_mac_cleared"]
    assert clones.status(lambda _mac: IP) == []


def test_repeated_hourly_while_it_lasts() -> None:
    clones = evidence()
    values = ["a", "b"] * 200
    seen = feed(clones, PORT, values, 30.0)  # 400 changes over 3 h 20 min
    assert seen.count("duplicate_mac") == 4 and "duplicate_mac_cleared" not in seen


def test_a_display_moved_to_another_port_and_back_is_not_a_clone() -> None:
    assert feed(evidence(), PORT, ["lan1", "lan1", "lan3", "lan3", "lan1"], 60.0) == []


def test_client_identifiers_alternating_at_renewals_are_a_clone() -> None:
    # Both renew every 12 h (half the 24 h lease), 5 h apart.
    times = [0.0, 5 * 3600, 12 * 3600, 17 * 3600]
    clones = evidence()
    seen = []
    for t, cid in zip(times, ["01:02:eb:00:00:00:01", "ff:00:01", "01:02:eb:00:00:00:01",
                              "ff:00:01"], strict=True):  # fmt: skip
        clones.note(MAC, CLIENT_ID, cid, T0 + t)
        seen += clones.events(T0 + t, lambda _mac: IP)
    assert kinds(seen) == ["duplicate_mac"]
    assert "DHCP client identifier alternates" in str(seen[0][1]["evidence"])


def test_a_client_identifier_changed_once_long_ago_and_back_is_not_a_clone() -> None:
    clones = evidence()
    for t, cid in (
        (0, "a"),
        (1, "b"),
        (CLIENT_ID_WINDOW_S + 10, "a"),
        (2 * CLIENT_ID_WINDOW_S, "b"),
    ):
        clones.note(MAC, CLIENT_ID, cid, T0 + t)
        assert clones.events(T0 + t, lambda _mac: IP) == []


def test_unwatched_macs_and_missing_values_cost_nothing() -> None:
    clones = evidence()
    for i in range(1000):
        clones.note(f"de:ad:00:00:{i // 256:02x}:{i % 256:02x}", PORT, f"p{i % 2}", T0 + i)
        clones.note(MAC, CLIENT_ID, None, T0 + i)
    assert clones.current(T0 + 1000) == {}


# -- properties ------------------------------------------------------------------------------

gaps = st.floats(min_value=0.0, max_value=3 * 3600.0, allow_nan=False)
channels = st.sampled_from([PORT, CLIENT_ID])


@settings(max_examples=300)
@given(
    channels,
    st.integers(1, 10),
    st.integers(0, 10),
    st.integers(0, 10),
    st.lists(gaps, min_size=30, max_size=30),
)
def test_property_one_device_that_changed_once_and_back_never_alerts(
    channel: str, before: int, changed: int, back: int, pace: list[float]
) -> None:
    """A display that reboots and renews (the same value again), is re-plugged or gets a new
    client identifier once, and even goes back once, at any pace: never an alert."""
    clones = evidence()
    now = T0
    for value, gap in zip(["A"] * before + ["B"] * changed + ["A"] * back, pace, strict=False):
        now += gap
        clones.note(MAC, channel, value, now)
        assert "duplicate_mac" not in kinds(clones.events(now, lambda _mac: IP))


@settings(max_examples=300)
@given(channels, st.lists(st.tuples(st.booleans(), st.floats(0.0, 10.0)), max_size=40))
def test_property_two_devices_alert_exactly_when_each_came_back_after_the_other(
    channel: str, steps: list[tuple[bool, float]]
) -> None:
    """Two hosts, any order and pace inside the window: an alert exactly when the values
    swung back and forth (four runs: A, B, A, B), never before."""
    clones = evidence()
    now = T0
    runs: list[str] = []
    alerted = False
    for second, gap in steps:
        now += gap
        value = "B" if second else "A"
        if not runs or runs[-1] != value:
            runs.append(value)
        clones.note(MAC, channel, value, now)
        alerted = alerted or "duplicate_mac" in kinds(clones.events(now, lambda _mac: IP))
        assert alerted == (len(runs) >= 4)


# -- the registry: leases and bridge ports in, events out -------------------------------------


def registry() -> DeviceRegistry:
    return DeviceRegistry(
        reservations=[("display", MAC, IP)], pool=("192.168.254.200", "192.168.254.244")
    )


def lease(expiry: float, hostname: str | None, client_id: str | None) -> LeaseSnapshot:
    return LeaseSnapshot(leases=(Lease(int(expiry), MAC, IP, hostname, client_id),))


def test_registry_display_renewing_rebooting_and_renamed_once_is_no_clone() -> None:
    reg = registry()
    events = []
    cid = "01:02:eb:00:00:00:01"
    plan = [("display", cid), ("display", cid), ("display", None), ("panel", cid), ("panel", cid)]
    for i, (host, client) in enumerate(plan):
        now = T0 + i * 43200
        events += reg.apply_leases(lease(now + 86400, host, client), now)
        events += reg.apply_leases(LeaseSnapshot(), now + 1)  # released at a reboot
        events += reg.apply_leases(lease(now + 86402, host, client), now + 2)
        events += reg.apply_ports([PortUpdate(MAC, "lan1")], now + 2)
    assert not [e for e in events if e.kind.startswith("duplicate_mac")]
    assert reg.summary()["duplicates"] == []


def test_registry_alternating_client_ids_on_the_reserved_address_raise_duplicate_mac() -> None:
    reg = registry()
    events = []
    for i, cid in enumerate(["01:02:eb:00:00:00:01", "ff:00:00:00:01", "01:02:eb:00:00:00:01",
                             "ff:00:00:00:01"]):  # fmt: skip
        now = T0 + i * 3600
        events += reg.apply_leases(lease(now + 86400, "display", cid), now)
    dup = [e for e in events if e.kind == "duplicate_mac"]
    assert len(dup) == 1 and dup[0].severity == "error"
    assert dup[0].data["ip"] == IP and dup[0].data["mac"] == MAC
    assert dup[0].data["signal"] == CLIENT_ID
    (listed,) = reg.summary()["duplicates"]
    assert listed["ips"] == [IP] and listed["name"] == "display"


def test_registry_port_swings_raise_and_clear_by_timer() -> None:
    reg = registry()
    reg.apply_leases(lease(T0 + 86400, "display", "01:02:eb:00:00:00:01"), T0)
    swings = [PortUpdate(MAC, p) for p in ("lan1", "lan2", "lan1", "lan2")]
    events = reg.apply_ports(swings, T0 + 1)
    assert [e.kind for e in events] == ["duplicate_mac"]
    assert events[0].data["ip"] == IP
    due = reg.next_deadline()
    assert due is not None and due <= T0 + 1 + PORT_WINDOW_S
    assert [e.kind for e in reg.expire(due)] == ["duplicate_mac_cleared"]
    assert reg.next_deadline() is None


def test_registry_names_the_reserved_address_before_any_lease() -> None:
    reg = registry()
    swings = [PortUpdate(MAC, p) for p in ("lan1", "lan2", "lan1", "lan2")]
    (event,) = reg.apply_ports(swings, T0)
    assert event.data["ip"] == IP and event.data["ips"] == [IP]


@settings(max_examples=200)
@given(
    st.lists(st.sampled_from(["renew", "reboot", "relearn", "rename", "move"]), max_size=30),
    st.lists(st.floats(1.0, 7200.0), min_size=30, max_size=30),
)
def test_property_one_display_living_its_life_is_never_a_clone(
    steps: list[str], pace: list[float]
) -> None:
    """The registry fed as the monitor feeds it: renewals, reboots (released, leased again,
    the port learnt again), a rename and a move to another port (each at most once)."""
    reg = registry()
    cid = "01:02:eb:00:00:00:01"
    host, port = "display", "lan1"
    now = T0
    events = reg.apply_leases(lease(now + 86400, host, cid), now)
    events += reg.apply_ports([PortUpdate(MAC, port)], now)
    for step, gap in zip(steps, pace, strict=False):
        now += gap
        if step == "reboot":
            events += reg.apply_leases(LeaseSnapshot(), now)
            events += reg.apply_ports([PortUpdate(MAC, port)], now + 0.5)
        elif step == "rename":
            host = "panel"
        elif step == "move":
            port = "lan3"
        if step in ("relearn", "move"):
            events += reg.apply_ports([PortUpdate(MAC, port)], now)
        events += reg.apply_leases(lease(now + 86400 + 1, host, cid), now + 1)
        events += reg.expire(now + 2)
    assert not [e for e in events if e.kind.startswith("duplicate_mac")]


def test_an_identifier_made_up_anew_at_every_boot_is_not_a_clone() -> None:
    ids = [f"ff:00:00:00:{n:02x}" for n in range(20)]
    assert feed(evidence(), CLIENT_ID, ids, 600.0) == []
