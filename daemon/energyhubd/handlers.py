"""What the daemon does on the events that are not a reconcile: someone else touched our
nftables table, links or addresses changed, devices moved on the LAN. (SIGHUP is a reload and
SIGUSR1 the inventory's own lease read: the composition root wires those directly.)

Threading contract: loop only. The nftables monitor and the rtnetlink watch call these from a
loop timer (``kernel.nlevents.watch`` debounces there), the inventory from its settle timer;
no other thread reaches them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from energyhubd.inventory.events import Event, EventStream
from energyhubd.kernel.running import RunningPolicy
from energyhubd.kernel.table import NftError, Table
from energyhubd.kernel.wan import Wan
from energyhubd.outbound.service import OutboundService
from energyhubd.policy import nft

log = logging.getLogger("energyhubd")


class Handlers:
    """``publish`` republishes the status snapshot; ``wan_up`` tells the portal link (if any)
    to retry now instead of waiting out its backoff."""

    def __init__(
        self,
        policy: RunningPolicy,
        table: Table,
        wan: Wan,
        outbound: OutboundService,
        events: EventStream,
        publish: Callable[[], None],
        wan_up: Callable[[], object],
    ) -> None:
        self.policy, self.table, self.wan, self.outbound = policy, table, wan, outbound
        self.events, self.publish, self.wan_up = events, publish, wan_up

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
