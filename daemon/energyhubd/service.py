"""``energyhubd run``: the composition root. It builds the parts, wires their events, and runs
one ordered ``reconcile(config, reason)``: table -> DHCP -> WAN -> inventory -> outbound ->
portal -> publish. Everything here runs on the event loop thread, the one owner of state;
the status snapshot it publishes is immutable, so control transports read it without
waiting for the loop. Who owns what: docs/design.md.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import time
from collections.abc import Callable, Mapping
from typing import Any

from energyhubd import __version__, memory, paths
from energyhubd.config.model import Config
from energyhubd.control import snapshot, transports
from energyhubd.control.status import DaemonControl, build_method_table, portal_command
from energyhubd.handlers import Handlers
from energyhubd.inventory import monitor as inventory_monitor
from energyhubd.inventory.events import EventStream
from energyhubd.inventory.monitor import InventoryMonitor
from energyhubd.kernel import nlevents
from energyhubd.kernel.dhcp_server import DhcpServer
from energyhubd.kernel.netlink import Netlink
from energyhubd.kernel.nlevents import LinkEvents, NftMonitor
from energyhubd.kernel.running import RunningPolicy
from energyhubd.kernel.table import NftError, Table
from energyhubd.kernel.wan import Wan
from energyhubd.loop import EventLoop
from energyhubd.outbound.service import OutboundService
from energyhubd.portal import runner
from energyhubd.portal.badstate import BadStateFiles
from energyhubd.portal.host import DaemonHost
from energyhubd.portal.local import LocalConfig
from energyhubd.portal.runner import PortalRunner

log = logging.getLogger("energyhubd")

DRIFT_DEBOUNCE = 0.05
LINK_DEBOUNCE = 0.2


class Daemon:
    """Builds the parts and hands each adapter (``DaemonControl``, ``DaemonHost``,
    ``Handlers``) only what it uses; ``portal`` and ``inventory`` are replaced by a reconcile,
    so those are read through this object when needed."""

    def __init__(
        self,
        config_path: str | None,
        pid_file: str | None = None,
        resolv_file: str | None = None,
        wan_dhcp: bool = False,
    ) -> None:
        self.pid_file, self.started = pid_file, time.time()
        self.loop, self.events, self.local = EventLoop(), EventStream(), LocalConfig(config_path)
        self.table, self.netlink = Table(), Netlink()
        self.wan = Wan(self.loop, self.netlink, resolv_file, wan_dhcp)
        self.dhcp = DhcpServer(self.loop, resolv_file, self.publish)
        self.inventory: InventoryMonitor | None = None
        self.outbound = OutboundService(self.loop, self.table, resolv_file, self.publish)
        self.portal: PortalRunner | None = None
        # Outlives every portal runner: a reload that restarts the link keeps the status line.
        self.bad_state_files = BadStateFiles(self.events)
        self.snapshot: dict[str, Any] = {}
        self.policy = RunningPolicy(
            self.table, self.netlink, self.events, self.outbound.egress_inputs, self.live_addresses
        )
        self.handlers = Handlers(
            self.local,
            self.policy,
            self.table,
            self.wan,
            self.outbound,
            self.events,
            reconcile=self.reconcile,
            publish=self.publish,
            wan_up=lambda: self.portal.wan_up() if self.portal is not None else None,
        )
        self.methods = build_method_table(
            DaemonControl(
                self.loop,
                self.outbound,
                lambda: self.snapshot,
                lambda: self.portal,
                lambda: self.policy.config,
                self.handlers.reload,
            )
        )
        self.portal_host = DaemonHost(
            self.local,
            functools.partial(self.reconcile, portal=False),  # the portal is the one pushing
            functools.partial(portal_command, self.outbound, self.methods),
            lambda: self.snapshot,
            self.publish,
        )
        self._closers: list[Callable[[], object]] = []

    # -- start and stop ---------------------------------------------------------------------
    def start(self) -> None:
        """Apply the configuration and begin serving. Raises ConfigError/NftError on failure."""
        config = self.local.config = self.local.load()
        if self.pid_file:
            paths.write_pid_file(self.pid_file)
        self.loop.on_signal(signal.SIGTERM, self.stop)
        self.loop.on_signal(signal.SIGINT, self.stop)
        self.loop.on_signal(signal.SIGHUP, self.handlers.sighup)
        self.loop.on_signal(signal.SIGUSR1, self.leases_changed)
        nft_monitor = NftMonitor(self.table.touched_by_others)
        self._closers += [
            nlevents.watch(self.loop, nft_monitor, DRIFT_DEBOUNCE, self.handlers.table_touched),
            nlevents.watch(self.loop, LinkEvents(), LINK_DEBOUNCE, self.handlers.links_changed),
        ]
        # Leases first: after a restart, forwards that follow a device open with the first
        # apply; the portal first: a push left unconfirmed by a crash is rolled back instead.
        self._configure_inventory(config)
        self.portal = runner.follow(
            None, self.loop, config, self.events, self.portal_host, self.bad_state_files, False
        )
        if self.portal is None or not self.portal.recover():
            last_good = self.portal.store.last_good_or_none() if self.portal else None
            self.reconcile(self.local.startup(config, last_good), "start")
        self._closers[:0] = transports.start_transports(config, self.methods)
        if self.portal is not None:
            self.portal.start()
        where = (self.local.path or "built-in defaults", config.control_socket)
        log.info("energyhubd %s running (config %s, control socket %s)", __version__, *where)

    def run(self) -> None:
        try:
            self.loop.run()
        finally:
            self.shutdown()

    def stop(self) -> None:
        log.info("stopping")
        self.loop.stop()

    def shutdown(self) -> None:
        """Leave the firewall table in place: a stopped daemon must not open the site."""
        if self.portal is not None:
            self.portal.stop()
        for close in (*self._closers, self.dhcp.close, self.wan.close, self.outbound.close):
            close()
        if self.inventory is not None:
            self.inventory.close()
        if self.pid_file:
            paths.remove_pid_file(self.pid_file)
        self.loop.close()

    # -- the one ordered reconcile ------------------------------------------------------------
    def reconcile(self, config: Config, reason: str, portal: bool = True) -> None:
        """Make every part follow ``config``; on a kernel refusal the previous policy stays."""
        previous = self.policy.config
        try:
            self.policy.apply(config, reason)
        except NftError:
            self.publish()
            raise
        try:
            self.dhcp.configure(config)
        except OSError as exc:  # the firewall stands; the DHCP server is reported, not fatal
            log.error("DHCP server not configured: %s", exc)
            self.policy.warn(f"DHCP server: {exc}")
        self.wan.configure(previous, config)
        self.wan.refresh(config, self.outbound.wan_dns(config))
        self._configure_inventory(config)
        self.outbound.configure(config)
        if portal:
            started = self.policy.state == "applied"
            self.portal = runner.follow(
                self.portal,
                self.loop,
                config,
                self.events,
                self.portal_host,
                self.bad_state_files,
                started,
            )
        self.publish()
        memory.trim()  # a compile, parse and apply leave freed heap pages behind (glibc)

    # -- the inventory, which a reconcile may replace ----------------------------------------
    def _configure_inventory(self, config: Config) -> None:
        self.inventory = inventory_monitor.follow(
            self.inventory, self.loop, config, self.events, self.handlers.devices_moved
        )

    def live_addresses(self) -> Mapping[str, str]:
        """MAC -> current IP of the devices on the LAN now (forwards follow them)."""
        return self.inventory.live_addresses() if self.inventory else {}

    def leases_changed(self) -> None:
        if self.inventory is not None:
            self.inventory.leases_changed()

    # -- status -------------------------------------------------------------------------------
    def publish(self) -> None:
        """Build a fresh immutable snapshot; readers on other threads see old or new, whole."""
        inv, policy = self.inventory, self.policy
        parts = snapshot.Parts(
            version=__version__,
            pid=os.getpid(),
            started=self.started,
            source=self.local.path or "built-in defaults",
            config=policy.config,
            config_error=self.local.rejected,
            policy_state=policy.state,
            policy_warnings=policy.warnings,
            table=self.table.status(),
            portal=self.portal.facts() if self.portal is not None else None,
            state_files=self.bad_state_files.status(),
            wan=self.wan.last_facts,
            dhcp_server=self.dhcp.status(policy.config) if policy.config else None,
            inventory=inv.status() if inv is not None else None,
            devices=inv.registry.devices() if inv is not None else None,
            outbound=self.outbound.status(),
            events=self.events.history(limit=20),
            targets=policy.targets,
        )
        self.snapshot = snapshot.build_snapshot(parts, time.time())
        if self.portal is not None:
            self.portal.status_changed(self.snapshot)
