"""Bring the kernel in line with a compiled policy, in the order that never half-applies.

The table first (one atomic transaction through ``kernel.table.Table``: a refused ruleset
raises before anything else is touched), then the addresses, then IPv4 forwarding, which goes
on only once the table (forward policy drop) is in place. Used by the one-shot ``energyhubd
apply`` and by the daemon's ``reconcile`` alike.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from energyhubd.config.model import Config
from energyhubd.kernel.netlink import LinkMissing, Netlink, ensure_ipv4_forwarding
from energyhubd.kernel.table import Table

log = logging.getLogger("energyhubd.policy")


@dataclass
class PolicyOutcome:
    ruleset: dict[str, Any]
    changed: bool  # the table, an address, a route or the forwarding switch was written
    seconds: float
    digest: str
    warnings: list[str] = field(default_factory=list)
    table_changed: bool = False


def apply_policy(
    config: Config,
    ruleset: dict[str, Any],
    table: Table,
    netlink: Netlink,
    reason: str | None = "apply",
) -> PolicyOutcome:
    """Make the kernel match ``config`` and its compiled ``ruleset`` (``reason`` None: a
    re-assert, see ``Table.reconcile``).

    Raises NftError, with nothing changed, when the kernel refuses the ruleset.
    """
    started = time.monotonic()
    result = table.reconcile(ruleset, reason)
    warnings: list[str] = []
    changed = result.changed
    exclusive = config.platform == "linux"
    try:
        changed |= netlink.ensure_address(config.lan.device, config.lan.address, exclusive)
    except LinkMissing:
        warnings.append(
            f"LAN device {config.lan.device} does not exist yet; its address is set when it appears"
        )
    if config.platform == "linux" and config.wan.proto == "static":
        assert config.wan.address is not None and config.wan.gateway is not None
        try:
            changed |= netlink.ensure_address(config.wan.device, config.wan.address, True)
            changed |= netlink.ensure_default_route(config.wan.gateway)
        except LinkMissing:
            warnings.append(f"WAN device {config.wan.device} does not exist yet")
    changed |= ensure_ipv4_forwarding()
    for warning in warnings:
        log.warning("%s", warning)
    return PolicyOutcome(
        ruleset, changed, time.monotonic() - started, result.digest, warnings, result.changed
    )
