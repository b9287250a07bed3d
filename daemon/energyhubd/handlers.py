"""What the daemon does on its events: a reload (SIGHUP, the control ``reload``), someone else
touched our nftables table, links or addresses changed, devices moved on the LAN. (SIGUSR1 is
the inventory's own lease read: the composition root wires it directly.)

Threading contract: loop only. Signals and the nftables and rtnetlink watches call these on
the loop (``kernel.nlevents.watch`` debounces with a loop timer), the inventory from its
settle timer; the control ``reload`` is handed over with ``call_on_loop``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from energyhubd.config.errors import ConfigError
from energyhubd.config.model import Config
from energyhubd.inventory.events import Event, EventStream
from energyhubd.kernel.running import RunningPolicy
from energyhubd.kernel.table import NftError, Table
from energyhubd.kernel.wan import Wan
from energyhubd.outbound.service import OutboundService
from energyhubd.policy import nft
from energyhubd.portal.local import LocalConfig

log = logging.getLogger("energyhubd")


class Handlers:
    """``reconcile`` is the composition root's; ``publish`` republishes the status snapshot;
    ``wan_up`` tells the portal link (if any) to retry now instead of waiting out its backoff."""

    def __init__(
        self,
        local: LocalConfig,
        policy: RunningPolicy,
        table: Table,
        wan: Wan,
        outbound: OutboundService,
        events: EventStream,
        *,
        reconcile: Callable[[Config, str], None],
        publish: Callable[[], None],
        wan_up: Callable[[], object],
    ) -> None:
        self.local, self.policy, self.table, self.wan = local, policy, table, wan
        self.outbound, self.events = outbound, events
        self.reconcile, self.publish, self.wan_up = reconcile, publish, wan_up

    def reload(self, reason: str = "reload") -> dict[str, Any]:
        """Re-read the local file and reconcile; a refused file or policy keeps what runs."""
        try:
            config = self.local.load()
        except ConfigError as exc:
            self.local.rejected = [e.as_dict() for e in exc.errors]
            problems = "; ".join(str(e) for e in exc.errors)
            log.error("configuration rejected, running policy kept: %s", problems)
            self.publish()
            return {"applied": False, "errors": self.local.rejected}
        try:
            self.reconcile(config, reason)
        except NftError as exc:
            log.error("policy not applied, running policy kept: %s", exc)
            return {"applied": False, "errors": [{"field": "", "reason": str(exc)}]}
        self.local.config, self.local.rejected = config, None
        self.publish()
        return {"applied": True, "version": config.version, "digest": self.table.state.digest}

    def sighup(self) -> None:
        self.reload("SIGHUP")

    def table_touched(self) -> None:
        """An nftables change by anyone else: the table owner restores ours if it was touched."""
        try:
            what = self.table.verify()
        except NftError as exc:
            log.error("table inet %s could not be restored: %s", nft.TABLE, exc)
            return
        if what is None:
            return
        log.warning("table inet %s was %s outside energyhubd; restored", nft.TABLE, what)
        self.outbound.table_restored()  # the learned sets were lost with the table
        data = {"table": nft.TABLE, "was": what}
        self.events.publish(Event("drift_repaired", time.time(), "warning", data))
        self.publish()

    def links_changed(self) -> None:
        """Links or addresses changed: re-assert LAN addressing, refresh the WAN facts."""
        config = self.policy.config
        if config is not None:
            try:
                self.policy.apply(config, None)
            except NftError as exc:
                log.error("re-apply after a link change failed: %s", exc)
            facts = self.wan.refresh(config, self.outbound.wan_dns(config))
            if self.outbound.wan_changed(facts["addresses"]):
                self.wan_up()
        self.publish()

    def devices_moved(self) -> None:
        """Devices moved: only a changed forward target costs a compile and a table write."""
        config = self.policy.config
        if config is not None and self.policy.targets_moved():
            try:
                self.policy.apply(config, "device address changed")
            except NftError as exc:
                log.error("forward update failed, previous rules kept: %s", exc)
        self.publish()
