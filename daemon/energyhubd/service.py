"""``energyhubd run``: the composition root. It builds the parts, wires their events, and runs
one ordered ``reconcile(config, reason)``: table -> DHCP -> WAN -> inventory -> outbound ->
portal -> publish. Everything here runs on the event loop thread, the one owner of state;
the status snapshot it publishes is immutable, so control transports read it without
waiting for the loop. Who owns what: docs/design.md.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable, Mapping
from typing import Any

from energyhubd import __version__, memory, paths
from energyhubd.config.errors import ConfigError
from energyhubd.config.model import Config
from energyhubd.control import snapshot, transports
from energyhubd.control.methods import MethodError
from energyhubd.control.status import build_method_table, portal_command, render_running_config
from energyhubd.inventory import monitor as inventory_monitor
from energyhubd.inventory.events import Event, EventStream
from energyhubd.inventory.monitor import InventoryMonitor
from energyhubd.kernel import nlevents
from energyhubd.kernel.apply import apply_policy
from energyhubd.kernel.dhcp_server import DhcpServer
from energyhubd.kernel.netlink import Netlink
from energyhubd.kernel.nlevents import LinkEvents, NftMonitor
from energyhubd.kernel.table import NftError, Table
from energyhubd.kernel.wan import Wan
from energyhubd.loop import EventLoop
from energyhubd.outbound.service import OutboundService
from energyhubd.policy import nft
from energyhubd.portal import runner
from energyhubd.portal.badstate import BadStateFiles
from energyhubd.portal.local import LocalConfig
from energyhubd.portal.runner import PortalRunner

log = logging.getLogger("energyhubd")

DRIFT_DEBOUNCE = 0.05
LINK_DEBOUNCE = 0.2


class Daemon:
    """Implements ``control.status.Controlled`` and ``portal.runner.PortalHost``."""

    def __init__(
        self,
        config_path: str | None,
        pid_file: str | None = None,
        resolv_file: str | None = None,
        wan_dhcp: bool = False,
    ) -> None:
        self.pid_file = pid_file
        self.loop = EventLoop()
        self.started = time.time()
        self.local = LocalConfig(config_path)
        self.config: Config | None = None
        self.targets: dict[str, Any] = {}  # forward -> address the table was compiled with
        self.state, self.warnings = "starting", list[str]()
        self.config_error: list[dict[str, str]] | None = None
        self.wan_facts: dict[str, Any] = {}
        self.table, self.netlink, self.events = Table(), Netlink(), EventStream()
        self.wan = Wan(self.loop, self.netlink, resolv_file, wan_dhcp)
        self.dhcp = DhcpServer(self.loop, resolv_file, self.publish)
        self.inventory: InventoryMonitor | None = None
        self.outbound = OutboundService(self.loop, self.table, resolv_file, self.publish)
        self.portal: PortalRunner | None = None
        # Outlives every portal runner: a reload that restarts the link keeps the status line.
        self.bad_state_files = BadStateFiles(self.events)
        self.snapshot: dict[str, Any] = {}
        self.methods = build_method_table(self)
        self._closers: list[Callable[[], object]] = []

    # -- start and stop ---------------------------------------------------------------------
    def start(self) -> None:
        """Apply the configuration and begin serving. Raises ConfigError/NftError on failure."""
        config = self.local.config = self.local.load()
        if self.pid_file:
            paths.write_pid_file(self.pid_file)
        self.loop.on_signal(signal.SIGTERM, self.stop)
        self.loop.on_signal(signal.SIGINT, self.stop)
        self.loop.on_signal(signal.SIGHUP, self._on_sighup)
        self.loop.on_signal(signal.SIGUSR1, self.leases_changed)
        self._closers += [
            nlevents.watch(
                self.loop,
                NftMonitor(self.table.touched_by_others),
                DRIFT_DEBOUNCE,
                self._verify_table,
            ),
            nlevents.watch(self.loop, LinkEvents(), LINK_DEBOUNCE, self._links_changed),
        ]
        # Leases first: after a restart, forwards that follow a device open with the first
        # apply; the portal first: a push left unconfirmed by a crash is rolled back instead.
        self._configure_inventory(config)
        self.portal = runner.follow(
            None, self.loop, config, self.events, self, self.bad_state_files, start=False
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
        previous = self.config
        self._apply_table(config, reason)
        try:
            self.dhcp.configure(config)
        except OSError as exc:  # the firewall stands; the DHCP server is reported, not fatal
            log.error("DHCP server not configured: %s", exc)
            self.warnings = [*self.warnings, f"DHCP server: {exc}"]
        self.wan.configure(previous, config)
        self.wan_facts = {**self.wan.facts(config), "dns": self.outbound.wan_dns(config)}
        self._configure_inventory(config)
        self.outbound.configure(config)
        if portal:
            started = self.state == "applied"
            self.portal = runner.follow(
                self.portal, self.loop, config, self.events, self, self.bad_state_files, started
            )
        self.publish()
        memory.trim()  # a compile, parse and apply leave freed heap pages behind (glibc)

    def _apply_table(self, config: Config, reason: str | None) -> None:
        """Compile and apply the table (and addresses); ``reason`` None: a re-assert only."""
        self.targets = nft.resolve_targets(config, self.live_addresses())
        ruleset = nft.compile_ruleset(config, self.targets, self.outbound.egress_inputs(config))
        try:
            outcome = apply_policy(config, ruleset, self.table, self.netlink, reason)
        except NftError:
            if self.config is None:
                self.state = "error"
            self.publish()
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

    def live_addresses(self) -> Mapping[str, str]:
        """MAC -> current IP of the devices on the LAN now (forwards follow them)."""
        return self.inventory.live_addresses() if self.inventory else {}

    def _on_sighup(self) -> None:
        self.reload("SIGHUP")

    def reload(self, reason: str = "reload") -> dict[str, Any]:
        try:
            config = self.local.load()
        except ConfigError as exc:
            self.config_error = [e.as_dict() for e in exc.errors]
            problems = "; ".join(str(e) for e in exc.errors)
            log.error("configuration rejected, running policy kept: %s", problems)
            self.publish()
            return {"applied": False, "errors": self.config_error}
        try:
            self.reconcile(config, reason)
        except NftError as exc:
            log.error("policy not applied, running policy kept: %s", exc)
            return {"applied": False, "errors": [{"field": "", "reason": str(exc)}]}
        self.local.config, self.config_error = config, None
        self.publish()
        return {"applied": True, "version": config.version, "digest": self.table.state.digest}

    # -- events ------------------------------------------------------------------------------
    def _configure_inventory(self, config: Config) -> None:
        self.inventory = inventory_monitor.follow(
            self.inventory, self.loop, config, self.events, self._inventory_changed
        )

    def _inventory_changed(self) -> None:
        """Devices moved: only a changed forward target costs a compile and a table write."""
        config = self.config
        if config is not None and nft.resolve_targets(config, self.live_addresses()) != (
            self.targets
        ):
            try:
                self._apply_table(config, "device address changed")
            except NftError as exc:
                log.error("forward update failed, previous rules kept: %s", exc)
        self.publish()

    def leases_changed(self) -> None:
        if self.inventory is not None:
            self.inventory.leases_changed()

    def _verify_table(self) -> None:
        """An nftables change by anyone: the table owner restores ours if it was touched."""
        try:
            what = self.table.verify()
        except NftError as exc:
            log.error("table inet %s could not be restored: %s", nft.TABLE, exc)
            return
        if what is None:
            return
        log.warning("table inet %s was %s outside energyhubd; restored", nft.TABLE, what)
        self.outbound.table_restored()
        data = {"table": nft.TABLE, "was": what}
        self.events.publish(Event("drift_repaired", time.time(), "warning", data))
        self.publish()

    def _links_changed(self) -> None:
        """Links or addresses changed: re-assert LAN addressing, refresh the WAN facts."""
        if self.config is not None:
            try:
                self._apply_table(self.config, None)
            except NftError as exc:
                log.error("re-apply after a link change failed: %s", exc)
            self.wan_facts = {
                **self.wan.facts(self.config),
                "dns": self.outbound.wan_dns(self.config),
            }
            addresses = self.wan_facts["addresses"]
            if self.outbound.wan_changed(addresses) and self.portal is not None:
                self.portal.wan_up()
        self.publish()

    # -- the portal (PortalHost) ----------------------------------------------------------------
    def validate(self, document: dict[str, Any]) -> Config:
        return self.local.validate(document)

    def apply(self, document: dict[str, Any], config: object) -> None:
        assert isinstance(config, Config)
        self.reconcile(config, f"portal push version {config.version}", portal=False)

    def restore(self, last_good: dict[str, Any] | None) -> None:
        self.reconcile(self.local.restore(last_good), "rollback", portal=False)

    def confirmed(self, document: dict[str, Any]) -> None:
        self.local.confirmed(document)

    def command(self, method: str, args: dict[str, Any]) -> dict[str, Any]:
        return portal_command(self, self.methods, method, args)

    def status(self) -> dict[str, Any]:
        return self.snapshot

    def changed(self) -> None:
        self.publish()

    # -- status (control.status.Controlled) -----------------------------------------------------
    def publish(self) -> None:
        """Build a fresh immutable snapshot; readers on other threads see old or new, whole."""
        inv = self.inventory
        parts = snapshot.Parts(
            version=__version__,
            pid=os.getpid(),
            started=self.started,
            source=self.local.path or "built-in defaults",
            config=self.config,
            config_error=self.config_error,
            policy_state=self.state,
            policy_warnings=self.warnings,
            table=self.table.status(),
            portal=self.portal.facts() if self.portal is not None else None,
            state_files=self.bad_state_files.status(),
            wan=self.wan_facts,
            dhcp_server=self.dhcp.status(self.config) if self.config else None,
            inventory=inv.status() if inv is not None else None,
            devices=inv.registry.devices() if inv is not None else None,
            outbound=self.outbound.status(),
            events=self.events.history(limit=20),
            targets=self.targets,
        )
        self.snapshot = snapshot.build_snapshot(parts, time.time())
        if self.portal is not None:
            self.portal.status_changed(self.snapshot)

    def running_config(self) -> dict[str, Any]:
        if self.config is None:
            raise MethodError("no configuration is applied yet")
        return render_running_config(self.config)

    def call_on_loop(
        self, func: Callable[[], dict[str, Any]], timeout: float = 30.0
    ) -> dict[str, Any]:
        return transports.call_on_loop(self.loop, func, timeout)
