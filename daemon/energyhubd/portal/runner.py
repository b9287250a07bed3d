"""The portal link as the daemon runs it: one MQTT link, the push controller, health reports.

Owned by the daemon's event loop. The MQTT thread inside PortalLink hands everything to the
loop through ``post``; this object only ever runs on the loop. It wakes the loop for the
health interval and, while a pushed configuration waits for confirmation, once a second.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Protocol

from energyhubd import __version__, memory
from energyhubd.config.model import Config
from energyhubd.config.sections.portal import PortalSettings
from energyhubd.inventory.events import Event, EventStream
from energyhubd.loop import EventLoop, Timer
from energyhubd.outbound.sntp import kernel_clock_synchronised
from energyhubd.portal.badstate import BadStateFiles
from energyhubd.portal.command import CommandError, command_id, parse_command
from energyhubd.portal.controller import PushController
from energyhubd.portal.health import build_health, significant
from energyhubd.portal.link import LinkState, PortalLink
from energyhubd.portal.statecheck import PENDING
from energyhubd.portal.store import ConfigStore

log = logging.getLogger("energyhubd.portal")

CONFIRM_TICK = 1.0
# config/reported state -> (event kind, severity) for the event stream.
STATE_EVENTS = {
    "pending_confirm": ("push_applied", "info"),
    "applied": ("push_confirmed", "info"),
    "rejected": ("push_rejected", "warning"),
    "rolled_back": ("push_rolled_back", "error"),
}
HEALTH_MIN_GAP = 5.0  # a flapping WAN must not turn health reports into a stream


class PortalHost(Protocol):
    """The daemon as the portal sees it: the steps of a pushed configuration (validate, apply,
    confirmed, or restore the last good one), portal commands, and the status snapshot.
    Every call is made on the event loop, except ``status`` (any thread: it only reads the
    last published snapshot)."""

    def validate(self, document: dict[str, Any]) -> object:
        """The push as it would run here; raises ConfigError naming the fields."""

    def apply(self, document: dict[str, Any], config: object) -> None:
        """Make a validated push the running policy; raises if the kernel refuses it."""

    def restore(self, last_good: dict[str, Any] | None) -> None:
        """Roll back whole: the last confirmed push, or the local file when there is none."""

    def confirmed(self, document: dict[str, Any]) -> None:
        """A push stood its confirm window: keep it as the local configuration."""

    def command(self, method: str, args: dict[str, Any]) -> dict[str, Any]:
        """Run a portal command; raises on refusal."""

    def status(self) -> dict[str, Any]:
        """The last published status snapshot."""

    def changed(self) -> None:
        """Something the status shows changed: publish a new snapshot."""


class PortalRunner:
    def __init__(
        self,
        loop: EventLoop,
        settings: PortalSettings,
        device_id: str,
        state_dir: str,
        events: EventStream,
        host: PortalHost,
        bad_files: BadStateFiles,
    ) -> None:
        self.loop = loop
        self.settings = settings
        self.identity = (device_id, state_dir)
        self.events = events
        self._last_reported: tuple[Any, ...] | None = None
        self._reported_unknown = False
        self.host = host
        self.status = host.status
        self.on_change = host.changed  # the daemon republishes its status snapshot
        self.command = host.command  # runs a portal command on the loop; raises on refusal
        self.store = ConfigStore(str(Path(state_dir) / "portal"))
        # Before the controller reads anything: bad state files are moved aside, not fatal.
        # What was found outlives this runner (``bad_files``, the daemon's); recover() only
        # needs to know whether the confirm marker was among them.
        found = self.store.check(time.time())
        self.marker_lost = any(bad.file == PENDING for bad in found)
        self.connected_since: float | None = None
        self.reconnects = 0
        self.last_reason = "starting"
        self.dropped = 0
        self._health_timer: Timer | None = None
        self._tick_timer: Timer | None = None
        self._last_health = 0.0
        self._last_health_online = False  # the last report was built with the link up
        self._last_significant: tuple[Any, ...] | None = None
        self.link: PortalLink | None = None
        self.controller = PushController(
            self.store,
            settings,
            device_id,
            apply=host.apply,
            restore=host.restore,
            publish_reported=self._publish_reported,
            request_round_trip=self._request_round_trip,
            validate=host.validate,
            on_confirmed=host.confirmed,
        )
        self.link = PortalLink(
            settings,
            device_id,
            loop.post,
            software_version=__version__,
            applied_version=self._running_version,
            applied_epoch=self._applied_epoch,
            on_state=self._on_state,
            on_desired=self._on_desired,
            on_round_trip=self._on_round_trip,
            on_command=self._on_command,
            state_dir=str(Path(state_dir) / "portal"),
        )
        self._unsubscribe = events.subscribe(self._on_event)
        # After subscribing: the state_file_corrupt events go to the portal as well.
        bad_files.record(self.store.state_dir, found)

    def _running_version(self) -> int | None:
        """The configuration version that runs: the confirmed push, else the local file's.

        Called from the MQTT thread: reads only a published snapshot and a plain int.
        """
        pushed = self.controller.applied_version
        if pushed is not None:
            return pushed
        version = (self.status().get("config") or {}).get("version")
        return version if isinstance(version, int) else None

    def _applied_epoch(self) -> int:
        """Called from the MQTT thread: a plain int read."""
        return self.controller.machine.epoch

    # -- life cycle -----------------------------------------------------------------------
    def recover(self) -> bool:
        """Before the first apply: roll back a push left unconfirmed by a crash or reboot.

        The report every start sends restates the stored one and is no event of its own.
        """
        self._last_reported = _report_key(self.controller.machine.reported())
        return self.controller.startup(marker_lost=self.marker_lost)

    def start(self) -> None:
        assert self.link is not None
        if self._reported_unknown:
            self._reported_unknown = False
            self.controller.report()  # the running version is known now (retained: newest wins)
        self.link.start()
        self._schedule_health(self.settings.health_interval)

    def stop(self) -> None:
        self._unsubscribe()
        for timer in (self._health_timer, self._tick_timer):
            if timer is not None:
                timer.cancel()
        if self.link is not None:
            self.link.stop()

    # -- link callbacks (on the loop) ---------------------------------------------------
    def _on_state(self, state: LinkState) -> None:
        if state.connected:
            # Also "events dropped" / "identity_conflict" notices arrive as connected states;
            # only the first one of a connection starts it.
            if self.connected_since is None:
                self.reconnects += 1 if self.last_reason != "starting" else 0
                self.connected_since = time.time()
                log.info("portal link up (%s)", state.reason)
                wait = HEALTH_MIN_GAP - (time.monotonic() - self._last_health)
                if wait <= 0:
                    self.send_health()  # the portal sees the site's state at once
                elif not self._last_health_online:
                    # The last report was built while the link was down and is queued saying
                    # so: follow it with a fresh one as soon as the rate limit allows.
                    self._schedule_health(wait)
                memory.trim()  # the TLS handshake and CONNECT leave freed heap pages (glibc)
            elif state.reason == "identity_conflict":
                log.warning("portal link: another site uses this device's identity")
        else:
            if self.connected_since is not None:
                log.warning("portal link down: %s", state.reason)
            self.connected_since = None
        self.last_reason = state.reason
        self.dropped += state.dropped
        self.controller.on_link_state(state)
        self._ensure_ticking()
        self.on_change()

    def _on_desired(self, payload: bytes) -> None:
        self.controller.on_desired(payload)
        self._ensure_ticking()
        self.on_change()

    def _on_round_trip(self, token: int) -> None:
        self.controller.on_round_trip(token)
        self._ensure_ticking()
        self.on_change()

    def _on_command(self, payload: bytes) -> None:
        """Run one portal command and answer on ``command/result`` (never raises)."""
        if self.link is None:
            return
        try:
            command = parse_command(payload)
        except CommandError as exc:
            log.warning("portal command refused: %s", exc)
            self.link.publish_command_result(
                {"id": command_id(payload), "ok": False, "error": str(exc)}
            )
            return
        try:
            result = self.command(command.method, command.args)
        except Exception as exc:  # the refusal, whatever raised it, goes back to the portal
            log.warning("portal command %s refused: %s", command.method, exc)
            answer: dict[str, Any] = {"id": command.id, "ok": False, "error": str(exc)}
        else:
            log.info("portal command %s done", command.method)
            answer = {"id": command.id, "ok": True, "result": result}
        self.link.publish_command_result(answer)
        self.on_change()

    def _on_event(self, event: Event) -> None:
        if self.link is not None:
            data = {"seq": event.seq, "severity": event.severity, **dict(event.data)}
            self.link.publish_event(event.kind, data)

    def _publish_reported(self, doc: dict[str, Any]) -> None:
        self._report_event(doc)  # judged on the push state alone, before the fill below
        if doc.get("applied_version") is None:
            # No push confirmed yet: what runs is the local configuration; say its version
            # (status says the same). Before the first apply it is not known yet: start()
            # sends the report again then.
            doc = {**doc, "applied_version": self._running_version()}
            self._reported_unknown = doc["applied_version"] is None
        if self.link is not None:
            self.link.publish_reported(doc)

    def _report_event(self, doc: dict[str, Any]) -> None:
        """Each new push outcome also goes to the event stream (log, status, events topic)."""
        state = doc.get("state")
        version = doc.get("pending_version") or doc.get("desired_version")
        key = _report_key(doc)
        previous, self._last_reported = self._last_reported, key
        if key == previous or state not in STATE_EVENTS:
            return
        if previous is None and state == "applied":
            return  # the report every start sends: nothing happened
        kind, severity = STATE_EVENTS[state]
        data = {"version": version, "applied_version": doc.get("applied_version")}
        if doc.get("errors"):
            data["errors"] = doc["errors"]
        self.events.publish(Event(kind, time.time(), severity, data))

    def _request_round_trip(self, token: int, fresh: bool) -> None:
        if self.link is not None:
            self.link.request_round_trip(token, fresh)

    # -- confirm window -------------------------------------------------------------------
    def _ensure_ticking(self) -> None:
        if self.controller.pending and self._tick_timer is None:
            self._tick_timer = self.loop.call_later(CONFIRM_TICK, self._tick)

    def _tick(self) -> None:
        self._tick_timer = None
        before = self.controller.machine.state
        self.controller.tick()
        self._ensure_ticking()
        if self.controller.machine.state != before:
            self.on_change()

    # -- health ---------------------------------------------------------------------------
    def link_facts(self) -> dict[str, Any]:
        outbox = self.link.outbox if self.link is not None else None
        return {
            "connected": self.connected_since is not None,
            "connected_since": self.connected_since,
            "reconnects": self.reconnects,
            "last_reason": self.last_reason,
            "buffered": len(outbox) if outbox is not None else 0,
            "dropped": self.dropped,
            "session": self.link.sessions.last if self.link is not None else None,
            "protocol": self.link.protocol if self.link is not None else None,
            "config_state": self.controller.machine.state,
            "applied_push_version": self.controller.applied_version,
        }

    def facts(self) -> dict[str, Any]:
        """The portal part of status (``connected_since`` as epoch seconds); the bad state
        files are not this runner's to tell (``BadStateFiles``)."""
        return {
            "enabled": True,
            "broker": f"{self.settings.host}:{self.settings.port}",
            **self.link_facts(),
            "pending": self.controller.pending,
        }

    def wan_up(self) -> None:
        """The WAN gained an address: reconnect now instead of waiting out the backoff."""
        if self.link is not None:
            self.link.kick()

    def _schedule_health(self, delay: float) -> None:
        if self._health_timer is not None:
            self._health_timer.cancel()
        self._health_timer = self.loop.call_later(delay, self._periodic_health)

    def _periodic_health(self) -> None:
        self._health_timer = None
        self.send_health()
        self._schedule_health(self.settings.health_interval)

    def send_health(self) -> None:
        status = self.status()
        self._last_significant = significant(status)
        self._last_health = time.monotonic()
        self._last_health_online = self.connected_since is not None
        if self.link is not None:
            clock = {"synchronised": kernel_clock_synchronised()}
            self.link.publish_health(build_health(status, self.link_facts(), clock))

    def status_changed(self, status: dict[str, Any]) -> None:
        """Send health early when something significant changed (rate-limited)."""
        if self._last_significant is None or significant(status) == self._last_significant:
            return
        wait = HEALTH_MIN_GAP - (time.monotonic() - self._last_health)
        if wait <= 0:
            self.send_health()
            self._schedule_health(self.settings.health_interval)
        elif self._health_timer is not None and self._health_timer.when > time.monotonic() + wait:
            self._schedule_health(wait)


def _report_key(doc: dict[str, Any]) -> tuple[Any, ...]:
    """What makes a config/reported an outcome of its own (the time is not part of it)."""
    version = doc.get("pending_version") or doc.get("desired_version")
    return (doc.get("state"), version, doc.get("applied_version"), str(doc.get("errors")))


def with_live_portal(snapshot: dict[str, Any], runner: PortalRunner | None) -> dict[str, Any]:
    """The snapshot with the link's queue length read now (any thread).

    The outbox drains on the MQTT thread without waking the loop, so a snapshot's count goes
    stale within seconds; health reads the same outbox when it is sent - one source.
    """
    portal = snapshot.get("portal")
    if runner is None or runner.link is None or not isinstance(portal, dict):
        return snapshot
    if "buffered" not in portal:
        return snapshot
    return {**snapshot, "portal": {**portal, "buffered": len(runner.link.outbox)}}


def follow(
    current: PortalRunner | None,
    loop: EventLoop,
    config: Config,
    events: EventStream,
    host: PortalHost,
    bad_files: BadStateFiles,
    start: bool,
) -> PortalRunner | None:
    """One portal link while ``portal.enabled``; a changed portal section restarts it
    (``bad_files`` stays: the new runner adds only what its own check finds)."""
    settings = config.portal
    wanted = settings.enabled
    identity = (config.device_id, config.state_dir)
    if current is not None:
        if wanted and current.settings == settings and current.identity == identity:
            return current
        current.stop()
        log.info("portal link stopped (configuration changed)")
    if not wanted:
        return None
    runner = PortalRunner(loop, settings, *identity, events, host, bad_files)
    if start:
        runner.start()
    return runner
