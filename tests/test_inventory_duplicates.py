"""The cloned-MAC detector on its own: pure, time passed in."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from energyhubd.inventory.duplicates import REPEAT_S, DuplicateMacs

MAC = "02:eb:00:00:00:01"


def watcher() -> DuplicateMacs:
    dup = DuplicateMacs()
    dup.watch({MAC: "display"})
    return dup


def test_two_addresses_heard_side_by_side_are_a_duplicate_reported_hourly() -> None:
    dup = watcher()
    dup.note(MAC, "192.168.254.200", True, True, 0.0)
    dup.note(MAC, "192.168.254.150", True, True, 1.0)
    assert dup.events(1.0) == []  # .200 not heard since .150 appeared
    dup.note(MAC, "192.168.254.200", True, True, 2.0)
    assert dup.events(2.0) == []  # A, B, A: a device may have moved back
    dup.note(MAC, "192.168.254.150", True, True, 2.0)
    assert [k for k, _d in dup.events(2.0)] == ["duplicate_mac"]
    assert dup.events(3.0) == []
    assert [k for k, _d in dup.events(2.0 + REPEAT_S)] == ["duplicate_mac"]
    dup.note(MAC, "192.168.254.150", False, False, 4000.0)
    assert [k for k, _d in dup.events(4000.0)] == ["duplicate_mac_cleared"]
    assert dup.status() == []


def test_unwatched_macs_cost_nothing() -> None:
    dup = watcher()
    for i in range(1000):
        dup.note(f"de:ad:00:00:{i // 256:02x}:{i % 256:02x}", "192.168.254.9", True, True, i)
    assert dup.current() == {}


addresses = st.lists(st.integers(100, 180), min_size=1, max_size=30, unique=True)


@settings(max_examples=200)
@given(addresses, st.lists(st.booleans(), min_size=30, max_size=30))
def test_property_a_device_that_moves_on_is_never_a_duplicate(
    hosts: list[int], heard_again: list[bool]
) -> None:
    """A device re-addressed any number of times (old entries stay alive, STALE, as they do
    until the kernel collects them) and heard any number of times at its current address."""
    dup = watcher()
    now = 0.0
    for host, again in zip(hosts, heard_again, strict=False):
        ip = f"192.168.254.{host}"
        for _ in range(2 if again else 1):
            now += 1.0
            dup.note(MAC, ip, True, True, now)
            assert "duplicate_mac" not in [k for k, _d in dup.events(now)]


def test_a_device_that_moved_back_is_not_a_duplicate() -> None:
    dup = watcher()
    for t, ip in enumerate(["192.168.254.150", "192.168.254.151", "192.168.254.150"]):
        dup.note(MAC, ip, True, True, float(t))
    assert dup.current() == {}
