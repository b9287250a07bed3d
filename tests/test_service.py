"""The composition root's wiring, with the kernel parts replaced by stand-ins.

No namespace is needed and nothing in the host's kernel is changed: the table step
(``apply_policy``) and the netlink reads are stubs; the event loop, the event stream, the
portal runner and its MQTT link (against a real mosquitto on loopback) are real.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from energyhubd import service
from energyhubd.config.load import parse_document
from energyhubd.kernel.apply import PolicyOutcome
from energyhubd.kernel.netlink import WanState
from energyhubd.portal.runner import PortalRunner
from tests import loopthread
from tests.loopthread import on_loop
from tests.portal_broker import DEVICE, Broker, free_port, make_pki, settings_for

pytest.importorskip("nftables")
pytestmark = pytest.mark.feed


class FakeNetlink:
    def __init__(self) -> None:
        self.addresses: tuple[str, ...] = ()

    def wan_state(self, ifname: str) -> WanState:
        return WanState(ifname, present=True, up=True, addresses=self.addresses)


class FakeOutbound:
    def __init__(self) -> None:
        self.seen: list[tuple[str, ...]] = []
        self.last: tuple[str, ...] | None = None

    def egress_inputs(self, _config: Any) -> None:
        return None

    def wan_changed(self, addresses: tuple[str, ...]) -> bool:
        gained = bool(addresses) and addresses != self.last
        self.last = addresses
        self.seen.append(addresses)
        return gained

    def wan_dns(self, _config: Any) -> list[str]:
        return []

    def status(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        pass


@pytest.fixture
def daemon(monkeypatch: pytest.MonkeyPatch) -> Iterator[service.Daemon]:
    applied: list[str | None] = []

    def fake_apply(config: Any, ruleset: Any, table: Any, netlink: Any, reason: Any = "") -> Any:
        applied.append(reason)
        return PolicyOutcome(ruleset, False, 0.0, "0" * 16)

    monkeypatch.setattr(service, "apply_policy", fake_apply)
    d = service.Daemon(None)
    d.netlink = d.wan.netlink = FakeNetlink()  # type: ignore[assignment]
    d.outbound = FakeOutbound()  # type: ignore[assignment]
    d.config = parse_document({"platform": "linux"})
    with loopthread.running(d.loop):
        try:
            yield d
        finally:
            if d.portal is not None:
                d.portal.stop()


def wait_for(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_wan_getting_an_address_makes_the_portal_link_retry_at_once(
    daemon: service.Daemon, tmp_path: Path
) -> None:
    """docs/mqtt.md: after the WAN comes back the link does not wait out its backoff."""
    pki = make_pki(tmp_path / "pki")
    port = free_port()
    settings = settings_for(pki, port, backoff_initial=120.0, backoff_max=120.0)
    runner = PortalRunner(daemon.loop, settings, DEVICE, str(tmp_path), daemon.events, daemon)
    daemon.portal = runner
    on_loop(daemon.loop, runner.start)
    # The first attempt fails (no broker yet): the link now sleeps 60-120 s.
    assert wait_for(lambda: runner.last_reason != "starting", 15), runner.last_reason
    broker = Broker(pki, tmp_path / "broker", port=port)
    try:
        broker.start()
        on_loop(daemon.loop, daemon._links_changed)  # links changed, but the WAN has no address
        time.sleep(1.0)
        assert runner.connected_since is None
        daemon.netlink.addresses = ("198.51.100.100/24",)  # type: ignore[attr-defined]
        on_loop(daemon.loop, daemon._links_changed)  # the WAN got its address
        assert wait_for(lambda: runner.connected_since is not None, 20), runner.last_reason
    finally:
        broker.stop(signal.SIGKILL)
    assert daemon.snapshot["wan"]["addresses"] == ["198.51.100.100/24"]


def test_a_lease_event_without_a_changed_forward_target_applies_nothing(
    daemon: service.Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only a changed forward target costs a compile and a table write."""
    calls: list[str] = []
    real = service.Daemon._apply_table

    def counting(self: service.Daemon, config: Any, reason: str | None) -> None:
        calls.append(str(reason))
        real(self, config, reason)

    monkeypatch.setattr(service.Daemon, "_apply_table", counting)
    assert daemon.config is not None
    on_loop(daemon.loop, lambda: daemon._apply_table(daemon.config, "start"))  # type: ignore[arg-type]
    on_loop(daemon.loop, daemon._inventory_changed)
    assert calls == ["start"]
    forwards = {
        "platform": "linux",
        "lan": {
            "dhcp": {
                "reservations": [
                    {"name": "display", "mac": "02:eb:00:00:00:01", "ip": "192.168.254.200"}
                ]
            }
        },
        "forwards": [{"name": "m", "port": 502, "target": "display", "allow_any_source": True}],
    }
    daemon.config = parse_document(forwards)
    on_loop(daemon.loop, daemon._inventory_changed)  # the reserved address: a new target
    assert calls == ["start", "device address changed"]
    on_loop(daemon.loop, daemon._inventory_changed)
    assert calls == ["start", "device address changed"]
