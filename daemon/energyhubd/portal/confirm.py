"""Confirm-or-rollback state machine for pushed configurations. Pure: the daemon feeds it
events with the current monotonic time and executes the actions it returns.

After a push is applied the daemon must prove the portal is still reachable (a round trip over
the MQTT link) within ``window`` seconds; otherwise it rolls back to last-good. ``confirm:
false`` (LuCI's "apply unchecked") confirms at once: needed for changes that are expected to
break the link, such as a LAN or WAN re-addressing, which would otherwise always roll back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from energyhubd.config.errors import FieldError

APPLIED = "applied"
PENDING_CONFIRM = "pending_confirm"
ROLLED_BACK = "rolled_back"
REJECTED = "rejected"

# actions
CHECK_LINK = "check_link"  # ask PortalLink.request_round_trip(token, fresh)
CONFIRM = "confirm"  # ConfigStore.confirm()
ROLLBACK = "rollback"  # re-apply last-good, ConfigStore.discard_candidate(), record_failed()
REPORT = "report"  # publish reported() on config/reported


@dataclass(frozen=True)
class Action:
    kind: str
    version: int | None = None
    token: int | None = None
    fresh: bool = False  # CHECK_LINK: prove it over a new connection (see PortalLink)


@dataclass
class ConfirmMachine:
    """Owned by the daemon thread; ``now`` is ``time.monotonic()``, ``wall`` is ``time.time()``."""

    window: float = 90.0
    applied_version: int | None = None
    state: str = APPLIED
    pending_version: int | None = None
    deadline: float | None = None
    token: int = 0
    errors: list[FieldError] = field(default_factory=list)
    last_change_wall: float | None = None
    desired_version: int | None = None
    epoch: int = 0  # of the applied (or pending) document
    ignored: dict[str, Any] | None = None  # the last push ignored, with the reason
    _previous_applied: int | None = None

    def applied(
        self, version: int, confirm: bool, now: float, wall: float, fresh: bool = True
    ) -> list[Action]:
        """A candidate was saved and applied to the system. ``fresh``: the change can alter
        the path to the portal, so the round trip must use a NEW connection."""
        self.desired_version = version
        self.errors = []
        self.ignored = None
        self.last_change_wall = wall
        if not confirm:
            self._settle(version)
            return [Action(CONFIRM, version), Action(REPORT, version)]
        self.state = PENDING_CONFIRM
        self.pending_version = version
        self.deadline = now + self.window
        self.token += 1
        return [Action(CHECK_LINK, version, self.token, fresh=fresh), Action(REPORT, version)]

    def link_round_trip_ok(self, now: float, wall: float, token: int | None = None) -> list[Action]:
        """A round trip to the broker completed; only one started after the apply counts."""
        if self.state != PENDING_CONFIRM or self.deadline is None:
            return []
        if token is not None and token != self.token:
            return []
        if now > self.deadline:
            return self.tick(now, wall)
        version = self.pending_version
        assert version is not None
        self.last_change_wall = wall
        self._settle(version)
        return [Action(CONFIRM, version), Action(REPORT, version)]

    def link_up(self) -> list[Action]:
        """After a reconnect while pending, try the round trip again (the first may be lost)."""
        if self.state != PENDING_CONFIRM:
            return []
        return [Action(CHECK_LINK, self.pending_version, self.token)]

    def tick(self, now: float, wall: float) -> list[Action]:
        """Call every second or so: the confirm window expiring means rollback."""
        if self.state != PENDING_CONFIRM or self.deadline is None or now <= self.deadline:
            return []
        version = self.pending_version
        self.state = ROLLED_BACK
        self.pending_version = None
        self.deadline = None
        self.last_change_wall = wall
        self.errors = [
            FieldError(
                "", f"portal not reachable within {self.window:g} s after apply; rolled back"
            )
        ]
        return [Action(ROLLBACK, version), Action(REPORT, version)]

    def ignored_push(
        self, version: int | None, epoch: int, reason: str, wall: float
    ) -> list[Action]:
        """An older (or lower-epoch) push was not applied: the portal is told why."""
        self.ignored = {"version": version, "epoch": epoch, "reason": reason}
        self.last_change_wall = wall
        return [Action(REPORT, version)]

    def no_desired(self, wall: float) -> list[Action]:
        """The portal has no desired state for us (empty document): not an error."""
        self.desired_version = None
        self.ignored = None
        self.last_change_wall = wall
        if self.state != PENDING_CONFIRM:
            self.state = APPLIED
            self.errors = []
        return [Action(REPORT, None)]

    def rejected(self, version: int | None, errors: list[FieldError], wall: float) -> list[Action]:
        """A push failed validation; the running config is untouched."""
        if self.state == PENDING_CONFIRM:
            # A newer push cannot be judged while one is pending; report but keep waiting.
            return [Action(REPORT, version)]
        self.state = REJECTED
        self.desired_version = version
        self.ignored = None
        self.errors = list(errors)
        self.last_change_wall = wall
        return [Action(REPORT, version)]

    def recovered_after_restart(self, version: int | None, wall: float) -> list[Action]:
        """A pending marker was found at start: the candidate was never confirmed."""
        self.state = ROLLED_BACK
        self.desired_version = version
        self.errors = [FieldError("", "daemon restarted during the confirm window; rolled back")]
        self.last_change_wall = wall
        return [Action(ROLLBACK, version), Action(REPORT, version)]

    def storage_failed(self, reason: str) -> None:
        """A CONFIRM could not be stored and the daemon rolled back: report that, not success."""
        self.state = ROLLED_BACK
        self.applied_version = self._previous_applied
        self.errors = [FieldError("", reason)]

    def _settle(self, version: int) -> None:
        self._previous_applied = self.applied_version
        self.state = APPLIED
        self.applied_version = version
        self.pending_version = None
        self.deadline = None

    def reported(self, wall_deadline: float | None = None) -> dict[str, Any]:
        """Payload for the retained ``config/reported`` topic."""
        doc: dict[str, Any] = {
            "applied_version": self.applied_version,
            "desired_version": self.desired_version,
            "epoch": self.epoch,
            "state": self.state,
            "errors": [e.as_dict() for e in self.errors],
            "updated": None if self.last_change_wall is None else round(self.last_change_wall, 3),
        }
        if self.ignored is not None:
            doc["ignored"] = dict(self.ignored)
        if self.state == PENDING_CONFIRM:
            doc["pending_version"] = self.pending_version
            if wall_deadline is not None:
                doc["confirm_deadline"] = round(wall_deadline, 3)
        return doc
