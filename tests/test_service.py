"""The composition root's wiring, with the kernel parts replaced by stand-ins.

No namespace is needed and nothing in the host's kernel is changed: the table step
(``apply_policy``) and the netlink reads are stubs; the event loop, the event stream, the
event handlers, the portal runner and its MQTT link (against a real mosquitto on loopback)
are real.
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
from energyhubd.kernel import running
from energyhubd.kernel.apply import PolicyOutcome
from energyhubd.kernel.netlink import WanState
from energyhubd.portal import runner as portal_runner
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

    monkeypatch.setattr(running, "apply_policy", fake_apply)
    # The parts are built by the root and handed to the handlers: stand-ins go in before.
    monkeypatch.setattr(service, "Netlink", FakeNetlink)
    monkeypatch.setattr(service, "OutboundService", lambda *_args: FakeOutbound())
    d = service.Daemon(None)
    d.policy.config = parse_document({"platform": "linux"})
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
    runner = PortalRunner(
        daemon.loop,
        settings,
        DEVICE,
        str(tmp_path),
        daemon.events,
        daemon.portal_host,
        daemon.bad_state_files,
    )
    daemon.portal = runner
    on_loop(daemon.loop, runner.start)
    # The first attempt fails (no broker yet): the link now sleeps 60-120 s.
    assert wait_for(lambda: runner.last_reason != "starting", 15), runner.last_reason
    broker = Broker(pki, tmp_path / "broker", port=port)
    try:
        broker.start()
        on_loop(
            daemon.loop, daemon.handlers.links_changed
        )  # links changed, but the WAN has no address
        time.sleep(1.0)
        assert runner.connected_since is None
        daemon.netlink.addresses = ("198.51.100.100/24",)  # type: ignore[attr-defined]
        on_loop(daemon.loop, daemon.handlers.links_changed)  # the WAN got its address
        assert wait_for(lambda: runner.connected_since is not None, 20), runner.last_reason
    finally:
        broker.stop(signal.SIGKILL)
    assert daemon.snapshot["wan"]["addresses"] == ["198.51.100.100/24"]


def test_a_lease_event_without_a_changed_forward_target_applies_nothing(
    daemon: service.Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only a changed forward target costs a compile and a table write."""
    calls: list[str] = []
    policy = daemon.policy
    real = policy.apply

    def counting(config: Any, reason: str | None) -> None:
        calls.append(str(reason))
        real(config, reason)

    monkeypatch.setattr(policy, "apply", counting)
    assert policy.config is not None
    on_loop(daemon.loop, lambda: policy.apply(policy.config, "start"))  # type: ignore[arg-type]
    on_loop(daemon.loop, daemon.handlers.devices_moved)
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
    policy.config = parse_document(forwards)
    on_loop(daemon.loop, daemon.handlers.devices_moved)  # the reserved address: a new target
    assert calls == ["start", "device address changed"]
    on_loop(daemon.loop, daemon.handlers.devices_moved)
    assert calls == ["start", "device address changed"]


def test_a_portal_restart_keeps_the_bad_state_file_line(
    daemon: service.Daemon, tmp_path: Path
) -> None:
    """The runner that found a bad state file is replaced when the portal section changes,
    and stopped when the portal is switched off; the status line stays (the daemon owns it)
    and the event is not told twice."""
    pki = make_pki(tmp_path / "pki")
    state = tmp_path / "state"
    (state / "portal").mkdir(parents=True)
    (state / "portal" / "failed.json").write_bytes(b"")
    port = free_port()  # no broker: the link only retries

    def config(**portal: Any) -> Any:
        base = settings_for(pki, port)
        section = {
            "host": base.host,
            "port": port,
            "ca_file": base.ca_file,
            "cert_file": base.cert_file,
            "key_file": base.key_file,
            **portal,
        }
        return parse_document({"platform": "linux", "state_dir": str(state), "portal": section})

    def follow(document: Any) -> None:
        """The portal step of ``reconcile`` (the kernel steps need a namespace)."""
        daemon.policy.config = document
        daemon.portal = portal_runner.follow(
            daemon.portal, daemon.loop, document, daemon.events, daemon.portal_host,
            daemon.bad_state_files, start=True,
        )  # fmt: skip
        daemon.publish()

    first = config(backoff_max=60)
    on_loop(daemon.loop, lambda: follow(first))
    found = daemon.snapshot["portal"]["state_files"]
    assert [line["file"] for line in found] == ["failed.json"]
    assert found[0]["moved_to"].startswith("failed.json.corrupt-")
    before = daemon.portal
    on_loop(daemon.loop, lambda: follow(config(backoff_max=61)))
    assert daemon.portal is not None and daemon.portal is not before  # a new link runs
    assert daemon.snapshot["portal"]["state_files"] == found
    on_loop(daemon.loop, lambda: follow(config(enabled=False)))
    assert daemon.portal is None
    assert daemon.snapshot["portal"]["enabled"] is False
    assert daemon.snapshot["portal"]["state_files"] == found
    assert len(daemon.events.history("state_file_corrupt")) == 1
