"""Glue for pushed configuration: decide -> persist -> apply -> confirm or roll back -> report.

Runs entirely on the daemon thread (wire ``PortalLink``'s ``on_desired`` / ``on_round_trip`` /
``on_state`` callbacks to the methods here and call :meth:`tick` about once a second). The
network work itself stays with the daemon through two callbacks:

* ``apply(document, config)``: make the validated push the running policy; raise on failure;
* ``restore(last_good)``: re-apply the whole last good document (``None`` means "the local
  configuration", for a device that never had a confirmed push) - netplan-style, no undo steps.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from energyhubd.config.errors import FieldError
from energyhubd.config.sections.portal import PortalSettings

from . import confirm as cm
from .link import LinkState
from .push import APPLY, EMPTY, IGNORE, NOOP, REJECT, Decision, Seen, Validate, decide, digest_of
from .session import EpochFile
from .store import ConfigStore, PendingMarker

log = logging.getLogger(__name__)

# Top-level keys whose change cannot alter how the router reaches the portal: such a push is
# confirmed over the live connection. Any other difference (wan, dns, egress, outbound, ntp,
# ...) may break NEW connections while the old flow survives in conntrack, so it is verified
# over a fresh connection (see PortalLink.request_round_trip).
PATH_NEUTRAL_KEYS = frozenset({"schema", "version", "device_id", "lan", "forwards"})


def path_may_change(candidate: dict[str, Any], running: dict[str, Any] | None) -> bool:
    """True unless ``candidate`` differs from ``running`` only in path-neutral keys. Without a
    known running document (first push after the local file) we cannot tell: True."""
    if running is None:
        return True
    keys = (set(candidate) | set(running)) - PATH_NEUTRAL_KEYS
    return any(candidate.get(k) != running.get(k) for k in keys)


class PushController:
    """One per daemon; owns the ConfirmMachine and the ConfigStore."""

    def __init__(
        self,
        store: ConfigStore,
        settings: PortalSettings,
        device_id: str,
        *,
        apply: Callable[[dict[str, Any], object], None],
        restore: Callable[[dict[str, Any] | None], None],
        publish_reported: Callable[[dict[str, Any]], None],
        request_round_trip: Callable[[int, bool], None],
        validate: Validate | None = None,
        on_confirmed: Callable[[dict[str, Any]], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.settings = settings
        self.device_id = device_id
        self._apply = apply
        self._restore = restore
        self._publish_reported = publish_reported
        self._request_round_trip = request_round_trip
        self._validate = validate
        self._on_confirmed = on_confirmed
        self._clock = clock
        self._wall = wall
        self.epochs = EpochFile(store.state_dir)
        last_good = store.last_good_or_none()  # bad files were moved aside at start
        self.applied: Seen | None = None
        if last_good is not None:
            self.applied = Seen(
                int(last_good.get("version", 0)), digest_of(last_good), self.epochs.load()
            )
        self.machine = cm.ConfirmMachine(
            window=settings.confirm_window,
            applied_version=None if self.applied is None else self.applied.version,
            epoch=0 if self.applied is None else self.applied.epoch,
        )
        restore_reported(self.machine, store.load_reported())
        self._candidate: Seen | None = None
        self._wall_deadline: float | None = None
        self._deferred: bytes | None = None

    @property
    def applied_version(self) -> int | None:
        """Plain int read; safe to hand to ``PortalLink(applied_version=...)``."""
        return self.machine.applied_version

    def startup(self, marker_lost: bool = False) -> bool:
        """Call once at start, before the daemon applies anything. True if a candidate left by a
        crash / kill -9 / reboot during its confirm window was rolled back (``restore`` called).
        Always queues a ``config/reported`` so the portal learns the state after a restart.

        ``marker_lost``: the pending marker was there but unreadable (moved aside at start);
        it still means "a candidate may have been running": roll back."""
        marker = self.store.pending()
        if marker is None and marker_lost:
            marker = PendingMarker(version=-1, deadline=0.0)
        if marker is None:
            self._report()
            return False
        candidate = self.store.load_candidate()
        version = marker.version
        if version < 0 and candidate is not None:
            version = int(candidate.get("version", -1))
            marker = PendingMarker(version=version, deadline=marker.deadline)
        if candidate is not None and version >= 0:
            self._candidate = Seen(version, digest_of(candidate), self.machine.epoch)
        self._run(self.machine.recovered_after_restart(marker.version, self._wall()))
        return True

    def on_desired(self, payload: bytes) -> Decision:
        """A document arrived on ``config/desired``."""
        if self.machine.state == cm.PENDING_CONFIRM:
            # Judge it once the current candidate is confirmed or rolled back.
            self._deferred = payload
            return Decision("defer", reason="a previous push awaits confirmation")
        failed = self.store.failed()
        failed_seen = None if failed is None else Seen(*failed, self.epochs.load("failed"))
        decision = decide(
            payload,
            applied=self.applied,
            failed=failed_seen,
            device_id=self.device_id,
            max_bytes=self.settings.max_push_bytes,
            max_depth=self.settings.max_push_depth,
            validate=self._validate,
        )
        log.info("push %s: %s (%s)", decision.version, decision.action, decision.reason)
        if decision.action == NOOP:
            self._report()
        elif decision.action == EMPTY:
            self._run(self.machine.no_desired(self._wall()))
        elif (
            decision.action == IGNORE
            and failed_seen is not None
            and (decision.version, decision.epoch) == (failed_seen.version, failed_seen.epoch)
            and self.machine.desired_version != decision.version
        ):
            # E.g. after a restart: tell the portal why its desired version is not running.
            error = FieldError("version", decision.reason)
            self._run(self.machine.rejected(decision.version, [error], self._wall()))
        elif decision.action == IGNORE:
            self._run(
                self.machine.ignored_push(
                    decision.version, decision.epoch, decision.reason, self._wall()
                )
            )
        elif decision.action == REJECT:
            if decision.version is not None and decision.digest is not None:
                self._record_failed(Seen(decision.version, decision.digest, decision.epoch))
            self._run(self.machine.rejected(decision.version, list(decision.errors), self._wall()))
        elif decision.action == APPLY:
            self._apply_decision(decision)
        return decision

    def _apply_decision(self, decision: Decision) -> None:
        assert decision.document is not None and decision.version is not None
        assert decision.digest is not None
        wall = self._wall()
        deadline = wall + self.settings.confirm_window if decision.confirm else None
        running = self.store.last_good_or_none()
        fresh = path_may_change(decision.document, running)
        try:
            self.store.save_candidate(decision.document, deadline or wall)
        except OSError as exc:
            # Full or failing flash: nothing was applied and nothing is recorded as failed,
            # so the same version is accepted once there is room again.
            log.error("pushed version %s not stored, so not applied: %s", decision.version, exc)
            reason = f"cannot store the push on the device: {exc.strerror or exc}"
            self._run(self.machine.rejected(decision.version, [FieldError("", reason)], wall))
            return
        self._wall_deadline = deadline
        self._candidate = Seen(decision.version, decision.digest, decision.epoch)
        try:
            self._apply(decision.document, decision.config)
        except Exception as exc:
            log.exception("applying pushed version %s failed", decision.version)
            self._rollback()
            error = FieldError("", f"apply failed: {type(exc).__name__}: {exc}")
            self._run(self.machine.rejected(decision.version, [error], self._wall()))
            return
        self._run(
            self.machine.applied(
                decision.version, decision.confirm, self._clock(), self._wall(), fresh=fresh
            )
        )

    def on_round_trip(self, token: int) -> None:
        self._run(self.machine.link_round_trip_ok(self._clock(), self._wall(), token))

    def on_link_state(self, state: LinkState) -> None:
        if state.connected and state.reason == "connected":
            self._run(self.machine.link_up())

    @property
    def pending(self) -> bool:
        """A pushed configuration waits for its confirmation (the daemon then ticks)."""
        return self.machine.state == cm.PENDING_CONFIRM

    def tick(self) -> None:
        self._run(self.machine.tick(self._clock(), self._wall()))

    def _rollback(self) -> None:
        candidate = self._candidate
        self._restore(self.store.last_good_or_none())
        try:
            self.store.discard_candidate()
        except OSError as exc:  # the marker stays: the next start rolls back once more
            log.error("could not remove the rolled-back candidate: %s", exc)
        if candidate is not None:
            self._record_failed(candidate)
        self._candidate = None

    def _record_failed(self, seen: Seen) -> None:
        try:
            self.epochs.save("failed", seen.epoch)
            self.store.record_failed(seen.version, seen.digest)
        except OSError as exc:  # a copy also goes into reported.json when there is room
            log.error("could not record failed version %s: %s", seen.version, exc)

    def _confirm(self) -> bool:
        """Promote the candidate; False (and a rollback follows) if the flash refuses."""
        try:
            self.store.confirm()
        except OSError as exc:
            log.error("confirmed version could not be stored, rolling back: %s", exc)
            return False
        return True

    def report(self) -> None:
        """Send ``config/reported`` again (e.g. once the running version is known)."""
        self._report()

    def _report(self) -> None:
        reported = self.machine.reported(self._wall_deadline)
        try:
            self.store.save_reported(reported, self.store.failed())
        except OSError as exc:
            log.warning("reported state not stored: %s", exc)
        self._publish_reported(reported)

    def _run(self, actions: list[cm.Action]) -> None:
        for action in actions:
            if action.kind == cm.CHECK_LINK and action.token is not None:
                self._request_round_trip(action.token, action.fresh)
            elif action.kind == cm.CONFIRM:
                if not self._confirm():
                    reason = "cannot store the confirmed configuration on the device"
                    self._candidate = None  # not the push's fault: the version may come again
                    self._rollback()
                    self._wall_deadline = None
                    self.machine.storage_failed(reason)
                    continue
                if self._candidate is not None:
                    self.epochs.save("applied", self._candidate.epoch)
                    self.machine.epoch = self._candidate.epoch
                self.applied = self._candidate
                self._candidate = None
                self._wall_deadline = None
                confirmed = self.store.last_good_or_none()
                if self._on_confirmed is not None and confirmed is not None:
                    self._on_confirmed(confirmed)
            elif action.kind == cm.ROLLBACK:
                self._rollback()
                self._wall_deadline = None
            elif action.kind == cm.REPORT:
                self._report()
        if self.machine.state != cm.PENDING_CONFIRM and self._deferred is not None:
            payload, self._deferred = self._deferred, None
            self.on_desired(payload)


def restore_reported(machine: cm.ConfirmMachine, reported: dict[str, Any] | None) -> None:
    """After a restart the portal keeps seeing what it saw: desired version, outcome, time.

    The applied version comes from last-good (the source of truth for what runs); a pending
    state is not restored - the marker on flash decides that (``startup``).
    """
    if reported is None:
        return
    desired = reported.get("desired_version")
    if isinstance(desired, int) and not isinstance(desired, bool):
        machine.desired_version = desired
    updated = reported.get("updated")
    if isinstance(updated, int | float) and not isinstance(updated, bool):
        machine.last_change_wall = float(updated)
    state = reported.get("state")
    if state in (cm.REJECTED, cm.ROLLED_BACK):
        machine.state = state
        errors = reported.get("errors")
        if isinstance(errors, list):
            machine.errors = [
                FieldError(str(e.get("field", "")), str(e.get("reason", "")))
                for e in errors
                if isinstance(e, dict)
            ]
