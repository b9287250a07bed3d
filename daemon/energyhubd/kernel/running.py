"""The policy that runs: its ``Config``, the forward targets it was compiled with, its state
and warnings, and the one way to change them (compile, then ``kernel.apply.apply_policy``).

Threading contract: loop only. Every method runs on the daemon's event loop; the control
transports read ``config`` (one reference read) for the ``config`` method and nothing else.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from energyhubd.config.model import Config
from energyhubd.inventory.events import Event, EventStream
from energyhubd.kernel.apply import apply_policy
from energyhubd.kernel.netlink import Netlink
from energyhubd.kernel.table import NftError, Table
from energyhubd.policy import egress, nft

log = logging.getLogger("energyhubd")


class RunningPolicy:
    """``state``: "starting" until the first apply, "applied" after one, "error" when the
    first one was refused (a later refusal keeps the previous policy and its state)."""

    def __init__(
        self,
        table: Table,
        netlink: Netlink,
        events: EventStream,
        egress_inputs: Callable[[Config], egress.EgressInputs | None],
        live_addresses: Callable[[], Mapping[str, str]],
    ) -> None:
        self.table, self.netlink, self.events = table, netlink, events
        self.egress_inputs = egress_inputs  # the allowlist learner's inputs, placed by the compiler
        self.live_addresses = live_addresses  # MAC -> IP on the LAN now (forwards follow them)
        self.config: Config | None = None
        self.targets: dict[str, Any] = {}  # forward -> address the table was compiled with
        self.state = "starting"
        self.warnings: list[str] = []

    def apply(self, config: Config, reason: str | None) -> None:
        """Compile and apply the table (and addresses); ``reason`` None: a re-assert only.

        Raises NftError when the kernel refuses: the previous policy stays (and runs).
        """
        self.targets = nft.resolve_targets(config, self.live_addresses())
        ruleset = nft.compile_ruleset(config, self.targets, self.egress_inputs(config))
        try:
            outcome = apply_policy(config, ruleset, self.table, self.netlink, reason)
        except NftError:
            if self.config is None:
                self.state = "error"
            raise
        if reason is None:
            return
        self.config, self.state, self.warnings = config, "applied", outcome.warnings
        ms = round(outcome.seconds * 1000, 1)
        done = "applied" if outcome.changed else "unchanged"
        log.info("policy %s (%s, digest %s, %.1f ms)", done, reason, outcome.digest, ms)
        if outcome.changed:
            data = {"version": config.version, "digest": outcome.digest, "reason": reason, "ms": ms}
            self.events.publish(Event("policy_applied", time.time(), data=data))

    def warn(self, warning: str) -> None:
        """A part other than the table did not follow the policy (shown beside it in status)."""
        self.warnings = [*self.warnings, warning]

    def targets_moved(self) -> bool:
        """Whether a forward's target device has another address now (a comparison only)."""
        config = self.config
        return config is not None and (
            nft.resolve_targets(config, self.live_addresses()) != self.targets
        )
