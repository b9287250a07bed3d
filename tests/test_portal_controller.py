"""Confirm-or-rollback of pushed configuration, first with a fake clock, then end to end over
a real mosquitto where the applied push cuts the router off from the portal."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from energyhubd.config.errors import ConfigError, FieldError
from energyhubd.config.sections.portal import PortalSettings
from energyhubd.portal import confirm as cm
from energyhubd.portal.controller import PushController
from energyhubd.portal.link import PortalLink
from energyhubd.portal.store import ConfigStore
from tests.portal_broker import (
    DEVICE,
    Broker,
    Daemon,
    Observer,
    Pki,
    make_pki,
    running_broker,
    settings_for,
)

pytestmark = pytest.mark.feed


def validate(doc: dict[str, Any]) -> object:
    if "bad" in doc:
        raise ConfigError([FieldError("bad", "unknown key")])
    return doc


class Harness:
    """A controller with a fake clock and recorded side effects."""

    def __init__(self, state_dir: Path, window: float = 90.0) -> None:
        self.now = 1000.0
        self.applied: list[dict[str, Any]] = []
        self.restored: list[dict[str, Any] | None] = []
        self.reported: list[dict[str, Any]] = []
        self.pings: list[int] = []
        self.fresh: list[bool] = []
        self.fail_apply = False
        self.store = ConfigStore(str(state_dir))
        self.ctl = PushController(
            self.store,
            PortalSettings(confirm_window=window),
            DEVICE,
            apply=self._apply,
            restore=self.restored.append,
            publish_reported=self.reported.append,
            request_round_trip=self._ping,
            validate=validate,
            clock=lambda: self.now,
            wall=lambda: self.now + 1e9,
        )

    def _ping(self, token: int, fresh: bool) -> None:
        self.pings.append(token)
        self.fresh.append(fresh)

    def _apply(self, doc: dict[str, Any], _config: object) -> None:
        if self.fail_apply:
            raise RuntimeError("nft said no")
        self.applied.append(doc)

    def push(self, **doc: Any) -> str:
        return self.ctl.on_desired(json.dumps({"device_id": DEVICE, **doc}).encode()).action


def test_push_confirmed_by_round_trip_becomes_last_good(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    assert not h.ctl.startup()
    assert h.push(version=2) == "apply"
    assert h.reported[-1]["state"] == cm.PENDING_CONFIRM
    assert h.store.pending() is not None
    h.now += 5
    h.ctl.on_round_trip(h.pings[-1])
    assert h.reported[-1]["state"] == cm.APPLIED and h.reported[-1]["applied_version"] == 2
    assert h.store.pending() is None and h.store.load_last_good() == {
        "device_id": DEVICE,
        "version": 2,
    }
    assert h.push(version=2) == "noop"


def _confirm(h: Harness) -> None:
    h.now += 1
    h.ctl.on_round_trip(h.pings[-1])
    assert h.reported[-1]["state"] == cm.APPLIED


def test_push_that_cannot_change_the_path_is_confirmed_on_the_live_connection(
    tmp_path: Path,
) -> None:
    h = Harness(tmp_path)
    h.ctl.startup()
    assert h.push(version=1, lan={"a": 1}) == "apply"
    assert h.fresh == [True]  # no known running document: cannot tell, so fresh
    _confirm(h)
    assert h.push(version=2, lan={"a": 2}, forwards=[1]) == "apply"
    assert h.fresh[-1] is False  # LAN / DHCP / forwards only: the live link proves it
    _confirm(h)
    assert h.push(version=3, lan={"a": 2}, forwards=[1], wan={"proto": "static"}) == "apply"
    assert h.fresh[-1] is True  # WAN may cut new connections: prove it on a fresh one


def test_epoch_resets_versions_and_survives_a_restart(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.ctl.startup()
    assert h.push(version=900) == "apply"
    _confirm(h)
    assert h.push(version=1, epoch=1) == "apply"  # the portal reset its versions
    _confirm(h)
    assert h.reported[-1]["epoch"] == 1 and h.reported[-1]["applied_version"] == 1
    again = Harness(tmp_path)  # daemon restart
    again.ctl.startup()
    assert again.push(version=899, epoch=0) == "ignore"
    assert again.reported[-1]["ignored"] == {
        "epoch": 0, "version": 899, "reason": "epoch 0 is older than the applied epoch 1",
    }  # fmt: skip
    assert again.push(version=2, epoch=1) == "apply"


def test_older_version_is_ignored_with_a_report(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.ctl.startup()
    h.push(version=5)
    _confirm(h)
    assert h.push(version=4) == "ignore"
    assert h.reported[-1]["state"] == cm.APPLIED
    assert "older than applied 5" in h.reported[-1]["ignored"]["reason"]


def test_empty_desired_document_is_no_desired_state_not_a_reject(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.ctl.startup()
    assert h.ctl.on_desired(b"").action == "empty"
    assert h.reported[-1]["state"] == cm.APPLIED and h.reported[-1]["errors"] == []
    assert h.reported[-1]["desired_version"] is None
    assert h.store.failed() is None and h.applied == []


def test_no_round_trip_rolls_back_and_the_same_push_is_not_retried(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.push(version=2)
    h.ctl.on_round_trip(h.pings[-1])
    h.push(version=3, lan={})
    h.now += 91
    h.ctl.tick()
    assert h.restored == [{"device_id": DEVICE, "version": 2}]
    assert h.reported[-1]["state"] == cm.ROLLED_BACK and h.reported[-1]["applied_version"] == 2
    assert h.store.pending() is None
    # The broker re-delivers the retained desired document after the reconnect: no loop.
    assert h.push(version=3, lan={}) == "ignore"
    assert len(h.applied) == 2
    assert h.push(version=4) == "apply"


def test_unchecked_push_confirms_without_round_trip(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.push(version=2, confirm=False)
    assert h.pings == [] and h.reported[-1]["state"] == cm.APPLIED
    assert h.store.load_last_good() == {"device_id": DEVICE, "version": 2}


def test_apply_failure_restores_last_good_and_reports(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.push(version=2, confirm=False)
    h.fail_apply = True
    assert h.push(version=3) == "apply"
    assert h.restored == [{"device_id": DEVICE, "version": 2}]
    assert h.reported[-1]["state"] == cm.REJECTED
    assert "nft said no" in h.reported[-1]["errors"][0]["reason"]
    assert h.store.pending() is None


def test_invalid_push_reported_with_field_errors_and_nothing_applied(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    assert h.push(version=2, bad=1) == "reject"
    assert h.applied == [] and h.reported[-1]["errors"] == [
        {"field": "bad", "reason": "unknown key"}
    ]


def test_crash_during_confirm_window_rolls_back_at_next_start(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.push(version=2, confirm=False)
    h.push(version=3)
    # kill -9: a brand-new daemon starts on the same state directory.
    h2 = Harness(tmp_path)
    assert h2.ctl.startup()
    assert h2.restored == [{"device_id": DEVICE, "version": 2}]
    assert h2.reported[-1]["state"] == cm.ROLLED_BACK
    assert h2.store.pending() is None
    assert h2.push(version=3) == "ignore"
    # ... and a third start still tells the portal why version 3 is not running: the
    # stored report (desired version, reason, time) survives the restart.
    h3 = Harness(tmp_path)
    assert not h3.ctl.startup()
    restated = {k: v for k, v in h2.reported[-1].items() if k != "ignored"}
    assert {k: v for k, v in h3.reported[-1].items() if k != "ignored"} == restated
    assert h3.push(version=3) == "ignore"
    assert h3.reported[-1]["applied_version"] == 2 and h3.reported[-1]["desired_version"] == 3
    assert h3.reported[-1]["state"] == cm.ROLLED_BACK
    assert "rolled back" in h3.reported[-1]["errors"][0]["reason"]
    assert h3.restored == [] and h3.applied == []


def test_push_during_confirm_window_waits_for_the_outcome(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.push(version=2)
    assert h.push(version=3) == "defer"
    h.ctl.on_round_trip(h.pings[-1])
    assert [d["version"] for d in h.applied] == [2, 3]
    assert h.ctl.machine.state == cm.PENDING_CONFIRM and h.ctl.machine.pending_version == 3


# ---- end to end over a real broker --------------------------------------------------------


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


@pytest.fixture
def broker(pki: Pki, tmp_path: Path) -> Iterator[Broker]:
    with running_broker(pki, tmp_path / "broker") as b:
        yield b


def test_push_that_cuts_off_the_portal_is_rolled_back_end_to_end(
    pki: Pki, broker: Broker, tmp_path: Path
) -> None:
    daemon = Daemon()
    applied: list[int] = []
    restored: list[dict[str, Any] | None] = []

    def apply(doc: dict[str, Any], _config: object) -> None:
        applied.append(doc["version"])
        if doc.get("lan") == {"address": "10.0.0.1/24"}:
            broker.stop()  # this "config" cuts the router off (SIGTERM keeps retained msgs)

    link: PortalLink | None = None
    store = ConfigStore(str(tmp_path / "state"))
    s = settings_for(pki, broker.port, confirm_window=2.0, backoff_max=0.5)
    ctl = PushController(
        store,
        s,
        DEVICE,
        apply=apply,
        restore=restored.append,
        publish_reported=lambda doc: link.publish_reported(doc) if link else None,
        request_round_trip=lambda tok, fresh: link.request_round_trip(tok, fresh) if link else None,
        validate=validate,
    )
    deliveries: list[bytes] = []

    def on_desired(payload: bytes) -> None:
        deliveries.append(payload)
        ctl.on_desired(payload)

    def on_state(state: Any) -> None:
        daemon.on_state(state)
        ctl.on_link_state(state)

    link = PortalLink(
        s,
        DEVICE,
        daemon.post,
        software_version="t",
        applied_version=lambda: ctl.applied_version,
        on_state=on_state,
        on_desired=on_desired,
        on_round_trip=ctl.on_round_trip,
    )
    reported_topic = f"energyhub/{DEVICE}/config/reported"
    desired = f"energyhub/{DEVICE}/config/desired"
    seen: list[dict[str, Any]] = []
    portal = Observer(pki, broker.port, [reported_topic])

    def until(pred: Any, timeout: float = 20.0) -> bool:
        def step() -> bool:
            ctl.tick()
            while not portal.messages.empty():
                seen.append(json.loads(portal.messages.get()[1]))
            return bool(pred())

        return daemon.run_until(step, timeout)

    try:
        ctl.startup()
        link.start()
        good = {"version": 2, "device_id": DEVICE}
        portal.publish(desired, json.dumps(good).encode(), retain=True)
        assert until(lambda: store.load_last_good() == good)
        assert until(lambda: seen and seen[-1]["state"] == cm.APPLIED)
        assert seen[-1]["applied_version"] == 2
        # The portal pushes a config that cuts the link; the retained copy stays on the broker.
        cutoff = {"version": 3, "device_id": DEVICE, "lan": {"address": "10.0.0.1/24"}}
        portal.publish(desired, json.dumps(cutoff).encode(), retain=True)
        assert until(lambda: restored == [good])  # window expired without a round trip
        assert store.pending() is None and store.load_last_good() == good
        portal.close()
        broker.start()  # the site is reachable again
        portal = Observer(pki, broker.port, [reported_topic])
        assert until(lambda: seen and seen[-1]["state"] == cm.ROLLED_BACK)
        assert seen[-1]["applied_version"] == 2 and seen[-1]["desired_version"] == 3
        # The retained bad push is delivered again after the reconnect but not re-applied.
        assert until(lambda: deliveries.count(json.dumps(cutoff).encode()) == 2)
        assert applied == [2, 3] and ctl.applied_version == 2
    finally:
        link.stop()
        portal.close()
