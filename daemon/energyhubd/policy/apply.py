"""Apply a compiled policy to the kernel: the order that keeps a bad config from half-applying.

Check first (compile + libnftables dry run), then touch addresses, then replace the table in
one transaction. Used by both the one-shot ``energyhubd apply`` and the daemon.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from energyhubd.config.model import Config
from energyhubd.kernel.netlink import LinkMissing, Netlink, ensure_ipv4_forwarding
from energyhubd.kernel.nftables_exec import NftExecutor
from energyhubd.outbound.egress import EgressInputs
from energyhubd.policy import nft

log = logging.getLogger("energyhubd.policy")


@dataclass
class PolicyOutcome:
    ruleset: dict[str, Any]
    changed: bool
    seconds: float
    digest: str
    warnings: list[str] = field(default_factory=list)


def apply_policy(
    config: Config,
    executor: NftExecutor,
    netlink: Netlink,
    live_address: dict[str, str] | None = None,
    egress_inputs: EgressInputs | None = None,
) -> PolicyOutcome:
    """Make the kernel match ``config``. Raises NftError before changing anything if the
    ruleset does not pass the dry run. ``egress_inputs``: see ``nft.compile_ruleset``."""
    started = time.monotonic()
    ruleset = nft.compile_ruleset(config, nft.resolve_targets(config, live_address), egress_inputs)
    table_ok = executor.matches(ruleset)
    if not table_ok:
        executor.check(ruleset)
    warnings: list[str] = []
    changed = False
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
    if not table_ok:
        result = executor.apply(ruleset, force=True, checked=True)
        changed = changed or result.changed
    # Forwarding goes on only once the table (forward policy drop) is in place.
    changed |= ensure_ipv4_forwarding()
    for warning in warnings:
        log.warning("%s", warning)
    return PolicyOutcome(
        ruleset, changed, time.monotonic() - started, nft.digest(ruleset), warnings
    )
