"""The portal runner's health timing on link changes (no broker: the link is never started,
the loop is real and never run; timers are read, not waited for)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from energyhubd.inventory.events import EventStream
from energyhubd.loop import EventLoop
from energyhubd.portal import runner as portal_runner
from energyhubd.portal.badstate import BadStateFiles
from energyhubd.portal.link import LinkState
from tests.portal_broker import DEVICE, free_port, make_pki, settings_for


class Host:
    """The narrow PortalHost a runner needs for health: a status and nothing else."""

    def status(self) -> dict[str, Any]:
        return {"policy": {"state": "applied"}}

    def changed(self) -> None: ...
    def command(self, *_args: Any) -> dict[str, Any]:
        return {}

    def validate(self, *_args: Any) -> Any: ...
    def apply(self, *_args: Any) -> Any: ...
    def restore(self, *_args: Any) -> Any: ...
    def confirmed(self, *_args: Any) -> None: ...


def make_runner(tmp_path: Path) -> tuple[portal_runner.PortalRunner, EventLoop]:
    loop, events = EventLoop(), EventStream()
    settings = settings_for(make_pki(tmp_path / "pki"), free_port())
    host: Any = Host()
    runner = portal_runner.PortalRunner(
        loop, settings, DEVICE, str(tmp_path), events, host, BadStateFiles(events)
    )
    return runner, loop


def test_a_report_built_offline_is_followed_by_a_fresh_one_after_reconnect(
    tmp_path: Path,
) -> None:
    """A report built while the link was down says so; when the link comes back within the
    rate limit, a fresh one is due as soon as the limit allows, not a health interval later."""
    runner, loop = make_runner(tmp_path)
    try:
        runner._on_state(LinkState(False, "connect timed out"))
        runner._schedule_health(runner.settings.health_interval)
        runner.send_health()  # e.g. a significant change while offline
        runner._on_state(LinkState(True, "connected"))
        timer = runner._health_timer
        assert timer is not None
        assert timer.when <= runner._last_health + portal_runner.HEALTH_MIN_GAP + 0.01
    finally:
        runner.stop()
        loop.close()


def test_a_report_built_online_is_not_repeated_on_a_quick_reconnect(tmp_path: Path) -> None:
    runner, loop = make_runner(tmp_path)
    try:
        runner._on_state(LinkState(True, "connected"))
        runner._schedule_health(runner.settings.health_interval)
        runner.send_health()
        runner._on_state(LinkState(False, "connection lost"))
        runner._on_state(LinkState(True, "connected"))
        timer = runner._health_timer
        assert timer is not None
        assert timer.when > runner._last_health + portal_runner.HEALTH_MIN_GAP
    finally:
        runner.stop()
        loop.close()
