"""``energyhubd run``: the long-running daemon.

The Daemon object is the single owner of mutable state and lives on the event loop thread.
It publishes an immutable status snapshot that the control transports read without waiting
for the loop, so ``energyhubctl status`` answers even while a policy is being applied.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from energyhubd import __version__
from energyhubd.config.errors import ConfigError
from energyhubd.config.model import Config
from energyhubd.configfile import load_file, parse_document
from energyhubd.control.methods import MethodError, MethodTable
from energyhubd.control.status import (
    build_method_table,
    render_running_config,
    run_tunnel_request,
)
from energyhubd.inventory.events import Event, EventStream
from energyhubd.inventory.monitor import InventoryMonitor, lease_file_for
from energyhubd.kernel.dnsmasq import DnsmasqSupervisor
from energyhubd.kernel.netlink import Netlink
from energyhubd.kernel.nftables_exec import NftError, NftExecutor
from energyhubd.kernel.nlevents import LinkEvents, NftMonitor
from energyhubd.loop import EventLoop, Timer
from energyhubd.outbound.service import OutboundService
from energyhubd.policy import nft
from energyhubd.policy.apply import apply_policy
from energyhubd.policy.dhcp import build_plan
from energyhubd.portal import local as portal_local
from energyhubd.portal.runner import PortalRunner

log = logging.getLogger("energyhubd")

DRIFT_DEBOUNCE = 0.05
LINK_DEBOUNCE = 0.2
DNSMASQ_RESTART_MAX = 30.0


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


class Daemon:
    def __init__(
        self, config_path: str | None, pid_file: str | None = None, resolv_file: str | None = None
    ) -> None:
        self.config_path = config_path
        self.pid_file = pid_file
        self.resolv_file = resolv_file
        self.loop = EventLoop()
        self.started = time.time()
        self.config: Config | None = None
        self.nft = NftExecutor()
        self.netlink = Netlink()
        self.monitor: NftMonitor | None = None
        self.link_events: LinkEvents | None = None
        self.dnsmasq: DnsmasqSupervisor | None = None
        self.dnsmasq_backoff = 1.0
        self.control: Any = None
        self.ubus: Any = None
        self.applied_ruleset: dict[str, Any] | None = None
        self.applied_normal: dict[str, Any] | None = None
        self.policy: dict[str, Any] = {
            "state": "starting",
            "applies": 0,
            "writes": 0,
            "drift_repairs": 0,
            "last_error": None,
        }
        self.config_error: list[dict[str, str]] | None = None
        self._drift_timer: Timer | None = None
        self._link_timer: Timer | None = None
        self.snapshot: dict[str, Any] = {}
        self.methods: MethodTable = build_method_table(self)
        self.events = EventStream()
        self.inventory: InventoryMonitor | None = None
        self.outbound = OutboundService(self.loop, self.nft, resolv_file, self.publish)
        self.portal: PortalRunner | None = None
        # The local file's last valid content: what a push is merged with and what a
        # rollback without a confirmed push returns to.
        self.local_config: Config | None = None

    # -- start and stop -----------------------------------------------------------------
    def load_config(self) -> Config:
        if self.config_path is None:
            return parse_document({}, "built-in defaults")
        return load_file(self.config_path)

    def start(self) -> None:
        """Apply the configuration and begin serving. Raises ConfigError/NftError on failure."""
        config = self.load_config()
        self.local_config = config
        self._write_pid_file()
        self.loop.on_signal(signal.SIGTERM, self.stop)
        self.loop.on_signal(signal.SIGINT, self.stop)
        self.loop.on_signal(signal.SIGHUP, self._reload_on_signal)
        self.loop.on_signal(signal.SIGUSR1, self.leases_changed)
        self.monitor = NftMonitor()
        self.loop.add_reader(self.monitor, self._on_nft_event)
        self.link_events = LinkEvents()
        self.loop.add_reader(self.link_events, self._on_link_event)
        # Read the leases first: after a restart, forwards that follow a device open with the
        # first apply instead of a moment later.
        self._configure_inventory(config)
        self._configure_portal(config, start=False)
        recovered = self.portal.recover() if self.portal is not None else False
        if not recovered:
            self._apply(self._startup_config(config), "start")
        from energyhubd.control.socket_server import ControlServer

        self.control = ControlServer(config.control_socket, self.methods)
        self.control.start()
        self._start_ubus(config)
        if self.portal is not None:
            self.portal.start()
        log.info(
            "energyhubd %s running (config %s, control socket %s)",
            __version__,
            self.config_path or "built-in defaults",
            config.control_socket,
        )

    def _start_ubus(self, config: Config) -> None:
        """On OpenWrt the same method table is also the ubus object ``energyhub``.

        ``control.ubus_socket`` serves it on another platform too (the lab's LuCI test runs
        a real ubusd beside a Linux-platform daemon).
        """
        from energyhubd.control import ubus_transport

        wanted = config.platform == "openwrt" or config.ubus_socket is not None
        if not wanted or not ubus_transport.available():
            if wanted:
                log.warning("python3-ubus is not installed: no ubus object, socket only")
            return
        self.ubus = ubus_transport.UbusTransport(self.methods, socket_path=config.ubus_socket)
        self.ubus.start()  # after on_signal(SIGTERM): libubox must not take the handler

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
        if self.ubus is not None:
            self.ubus.stop()
        if self.control is not None:
            self.control.stop()
        if self.dnsmasq is not None:
            self.dnsmasq.stop()
        if self.inventory is not None:
            self.inventory.close()
        self.outbound.close()
        for closer in (self.monitor, self.link_events):
            if closer is not None:
                closer.close()
        if self.pid_file:
            try:
                if Path(self.pid_file).read_text().strip() == str(os.getpid()):
                    os.unlink(self.pid_file)
            except OSError:
                pass
        self.loop.close()

    def _write_pid_file(self) -> None:
        if self.pid_file:
            Path(self.pid_file).parent.mkdir(parents=True, exist_ok=True)
            Path(self.pid_file).write_text(f"{os.getpid()}\n")

    # -- policy -------------------------------------------------------------------------
    def _apply(self, config: Config, reason: str) -> None:
        """Apply ``config``; on failure the previous policy stays in force."""
        try:
            outcome = apply_policy(
                config,
                self.nft,
                self.netlink,
                self.live_addresses(),
                self.outbound.egress_inputs(config),
            )
        except NftError as exc:
            self.policy.update(
                state="error" if self.config is None else self.policy["state"], last_error=str(exc)
            )
            self.publish()
            raise
        self.config = config
        self.applied_ruleset = outcome.ruleset
        current = self.nft.current()
        self.applied_normal = nft.normalise(current) if current else None
        self.policy.update(
            state="applied",
            digest=outcome.digest,
            applies=self.policy["applies"] + 1,
            writes=self.policy["writes"] + (1 if outcome.changed else 0),
            last_apply=time.time(),
            last_apply_ms=round(outcome.seconds * 1000, 1),
            last_reason=reason,
            last_error=None,
            warnings=outcome.warnings,
        )
        log.info(
            "policy %s (%s, digest %s, %.1f ms)",
            "applied" if outcome.changed else "unchanged",
            reason,
            outcome.digest,
            outcome.seconds * 1000,
        )
        if outcome.changed:
            self.events.publish(
                Event(
                    "policy_applied",
                    time.time(),
                    data={
                        "version": config.version,
                        "digest": outcome.digest,
                        "reason": reason,
                        "ms": round(outcome.seconds * 1000, 1),
                    },
                )
            )
        try:
            self._configure_dhcp(config)
        except OSError as exc:  # the firewall stands; the DHCP server is reported, not fatal
            log.error("DHCP server not configured: %s", exc)
            self.policy["warnings"] = [*outcome.warnings, f"DHCP server: {exc}"]
        self._configure_inventory(config)
        self.outbound.configure(config)
        self.publish()

    def live_addresses(self) -> dict[str, str]:
        """MAC -> current IP of the devices on the LAN now (forwards follow them)."""
        return self.inventory.live_addresses() if self.inventory else {}

    # -- inventory ----------------------------------------------------------------------
    def _configure_inventory(self, config: Config) -> None:
        lease_file = lease_file_for(config)
        if self.inventory is not None and self.inventory.lease_file != lease_file:
            self.inventory.close()
            self.inventory = None
        if self.inventory is None:
            try:
                self.inventory = InventoryMonitor(
                    self.loop, config, lease_file, self.events, self._inventory_changed
                )
            except OSError as exc:
                log.error("device inventory not started: %s", exc)
        else:
            self.inventory.reconfigure(config)

    def _inventory_changed(self) -> None:
        """Devices moved: a forward that follows a device gets its new address atomically."""
        if self.config is not None and self.applied_ruleset is not None:
            targets = nft.resolve_targets(self.config, self.live_addresses())
            desired = nft.compile_ruleset(self.config, targets)
            if nft.normalise(desired) != nft.normalise(self.applied_ruleset):
                try:
                    self._apply(self.config, "device address changed")
                except NftError as exc:
                    log.error("forward update failed, previous rules kept: %s", exc)
                return
        self.publish()

    def _reload_on_signal(self) -> None:
        self.reload("SIGHUP")

    def reload(self, reason: str = "reload") -> dict[str, Any]:
        try:
            config = self.load_config()
        except ConfigError as exc:
            self.config_error = [e.as_dict() for e in exc.errors]
            log.error(
                "configuration rejected, running policy kept: %s",
                "; ".join(str(e) for e in exc.errors),
            )
            self.publish()
            return {"applied": False, "errors": self.config_error}
        try:
            self._apply(config, reason)
        except NftError as exc:
            log.error("policy not applied, running policy kept: %s", exc)
            return {"applied": False, "errors": [{"field": "", "reason": str(exc)}]}
        self.local_config = config
        self.config_error = None
        self._configure_portal(config, start=True)
        self.publish()
        return {"applied": True, "version": config.version, "digest": self.policy["digest"]}

    def _on_nft_event(self) -> None:
        assert self.monitor is not None
        if self.monitor.drain() and self._drift_timer is None:
            self._drift_timer = self.loop.call_later(DRIFT_DEBOUNCE, self._verify_table)

    def _verify_table(self) -> None:
        """Someone changed the ruleset: if our table is gone or altered, restore it."""
        self._drift_timer = None
        if self.config is None or self.applied_ruleset is None:
            return
        current = self.nft.current()
        if current is not None and nft.normalise(current) == self.applied_normal:
            return
        what = "deleted" if current is None else "changed"
        try:
            self.nft.apply(self.applied_ruleset, force=True)
        except NftError as exc:
            log.error(
                "table inet %s was %s outside energyhubd and could not be restored: %s",
                nft.TABLE,
                what,
                exc,
            )
            return
        restored = self.nft.current()
        self.applied_normal = nft.normalise(restored) if restored else None
        self.policy["drift_repairs"] += 1
        self.policy["last_drift"] = time.time()
        log.warning("table inet %s was %s outside energyhubd; restored", nft.TABLE, what)
        self.outbound.table_restored()
        self.events.publish(
            Event("drift_repaired", time.time(), "warning", {"table": nft.TABLE, "was": what})
        )
        self.publish()

    def _on_link_event(self) -> None:
        assert self.link_events is not None
        if self.link_events.drain() and self._link_timer is None:
            self._link_timer = self.loop.call_later(LINK_DEBOUNCE, self._links_changed)

    def _links_changed(self) -> None:
        """Links or addresses changed: re-assert LAN addressing, refresh WAN facts."""
        self._link_timer = None
        if self.config is not None:
            try:
                changed = apply_policy(
                    self.config,
                    self.nft,
                    self.netlink,
                    self.live_addresses(),
                    self.outbound.egress_inputs(self.config),
                ).changed
                if changed:
                    log.info("addresses re-applied after a link change")
            except NftError as exc:
                log.error("re-apply after a link change failed: %s", exc)
            self.outbound.wan_changed(self.netlink.wan_state(self.config.wan.device).addresses)
        self.publish()

    # -- DHCP ---------------------------------------------------------------------------
    def _configure_dhcp(self, config: Config) -> None:
        if config.platform != "linux":
            self._sync_openwrt(config)  # the system's dnsmasq and sysntpd, through UCI
            return
        if self.dnsmasq is None:
            self.dnsmasq = DnsmasqSupervisor(
                config.state_dir, self.resolv_file, os.getpid(), loop=self.loop
            )
        watched = self.dnsmasq.pidfd
        if not self.dnsmasq.configure(build_plan(config)):
            return
        # Restarted for a changed plan: the old pidfd is closed and the new one may well get
        # the same number, so the old registration has to go before the new one is added.
        if watched is not None:
            self.loop.remove_reader(watched)
        if self.dnsmasq.pidfd is not None:
            self.loop.add_reader(self.dnsmasq.pidfd, self._on_dnsmasq_exit)

    def _sync_openwrt(self, config: Config) -> None:
        """Pool, leases, reservations, DNS fallback and NTP into /etc/config (only changes)."""
        from energyhubd.openwrt.platform_sync import sync_platform
        from energyhubd.openwrt.uci import UciError

        try:
            result = sync_platform(config)
        except (OSError, subprocess.CalledProcessError, UciError) as exc:
            log.error("OpenWrt dhcp/system configuration not updated: %s", exc)
            return
        for package, commands in (("dhcp", result.dhcp), ("system", result.system)):
            if commands:
                log.info("uci %s: %d change(s) committed", package, len(commands))

    def _on_dnsmasq_exit(self) -> None:
        assert self.dnsmasq is not None
        pidfd = self.dnsmasq.pidfd
        if pidfd is not None:
            self.loop.remove_reader(pidfd)
        code = self.dnsmasq.reap()
        delay = self.dnsmasq_backoff
        self.dnsmasq_backoff = min(self.dnsmasq_backoff * 2, DNSMASQ_RESTART_MAX)
        log.error("dnsmasq exited with status %s; restarting in %.0f s", code, delay)
        self.loop.call_later(delay, self._restart_dnsmasq)
        self.publish()

    def _restart_dnsmasq(self) -> None:
        if self.config is not None:
            self._configure_dhcp(self.config)
            self.loop.call_later(60, self._reset_dnsmasq_backoff)

    def _reset_dnsmasq_backoff(self) -> None:
        if self.dnsmasq is not None and self.dnsmasq.running:
            self.dnsmasq_backoff = 1.0

    def leases_changed(self) -> None:
        if self.inventory is not None:
            self.inventory.leases_changed()

    # -- portal link ----------------------------------------------------------------------
    def _configure_portal(self, config: Config, start: bool) -> None:
        """One portal link while ``portal.enabled``; a changed portal section restarts it."""
        settings = config.portal
        wanted = settings.enabled
        current = self.portal
        if current is not None:
            same = (
                wanted
                and current.settings == settings
                and current.identity == (config.device_id, config.state_dir)
            )
            if same:
                return
            current.stop()
            self.portal = None
            log.info("portal link stopped (configuration changed)")
        if not wanted:
            return
        self.portal = PortalRunner(
            self.loop,
            settings,
            config.device_id,
            config.state_dir,
            self.events,
            apply=self._portal_apply,
            restore=self._portal_restore,
            on_confirmed=self._portal_confirmed,
            validate=self._portal_validate,
            status=lambda: self.snapshot,
            on_change=self.publish,
            command=self._portal_command,
        )
        if start:
            self.portal.start()

    def _portal_command(self, method: str, args: dict[str, Any]) -> dict[str, Any]:
        """A portal command, on the loop: the same argument checks as the local API."""
        if method == "ip_ranges":
            unknown = sorted(set(args) - {"document"})
            if unknown:
                raise MethodError(
                    f"ip_ranges: unknown argument {unknown[0]!r} (accepted: document)"
                )
            try:
                return self.outbound.replace_ip_ranges(args.get("document"))
            except ValueError as exc:
                raise MethodError(f"ip_ranges: {exc}") from None
        clean = self.methods.check_args(self.methods.methods[method], args)
        if method == "diagnose":
            return {"run": self.outbound.request("portal")}  # the result goes out in health
        return run_tunnel_request(self.outbound, clean)

    def _startup_config(self, local: Config) -> Config:
        """A confirmed push newer than the local file (write-back failed) wins at start."""
        if self.portal is None:
            return local
        last_good = self.portal.store.last_good_or_none()
        if last_good is None or not isinstance(last_good.get("version"), int):
            return local
        if last_good["version"] <= local.version:
            return local
        try:
            return self._portal_validate(last_good)
        except ConfigError as exc:
            log.error("confirmed push %s no longer valid here: %s", last_good["version"], exc)
            return local

    def _portal_validate(self, document: dict[str, Any]) -> Config:
        local = self.local_config.document if self.local_config is not None else {}
        return portal_local.validate_push(document, local)

    def _portal_apply(self, document: dict[str, Any], config: object) -> None:
        """A validated push becomes the running policy (raises if the kernel refuses)."""
        assert isinstance(config, Config)
        self._apply(config, f"portal push version {config.version}")

    def _portal_restore(self, last_good: dict[str, Any] | None) -> None:
        """Roll back whole: the last confirmed push, or the local file when there is none."""
        config = self.local_config
        if last_good is not None:
            try:
                config = self._portal_validate(last_good)
            except ConfigError as exc:
                log.error("last good push is not valid here, using the local file: %s", exc)
        if config is None:
            config = self.load_config()
        self._apply(config, "rollback")

    def _portal_confirmed(self, document: dict[str, Any]) -> None:
        """A push stood its confirm window: the local file now says what runs."""
        local = self.local_config.document if self.local_config is not None else {}
        merged = portal_local.merge_local(document, local)
        try:
            self.local_config = parse_document(merged, "confirmed push")
        except ConfigError as exc:
            log.error("confirmed push not kept as local configuration: %s", exc)
            return
        if self.config_path is None:
            return
        try:
            if portal_local.write_back(self.config_path, merged):
                log.info(
                    "configuration version %s written to %s",
                    merged.get("version"),
                    self.config_path,
                )
        except OSError as exc:
            log.error("could not write the confirmed push to %s: %s", self.config_path, exc)

    # -- status -------------------------------------------------------------------------
    def publish(self) -> None:
        """Build a fresh immutable snapshot; readers on other threads see old or new, whole."""
        self.snapshot = self.build_snapshot()
        if self.portal is not None:
            self.portal.status_changed(self.snapshot)

    def build_snapshot(self) -> dict[str, Any]:
        config = self.config
        now = time.time()
        status: dict[str, Any] = {
            "daemon": {
                "version": __version__,
                "pid": os.getpid(),
                "started": iso(self.started),
                "uptime_s": int(now - self.started),
                "platform": config.platform if config else None,
            },
            "config": {
                "source": self.config_path or "built-in defaults",
                "version": config.version if config else None,
                "device_id": config.device_id if config else None,
                "last_error": self.config_error,
            },
            "policy": {
                **{k: v for k, v in self.policy.items() if k not in ("last_apply", "last_drift")},
                "last_apply": iso(self.policy.get("last_apply")),
                "last_drift": iso(self.policy.get("last_drift")),
                "table": f"{nft.FAMILY} {nft.TABLE}",
            },
        }
        status["portal"] = self._portal_status(config)
        if config is None:
            return status
        status["wan"] = {
            **self.netlink.wan_state(config.wan.device).as_dict(),
            "proto": config.wan.proto,
            "dns": self.outbound.wan_dns(config),
        }
        if config.platform == "openwrt":  # netifd runs the WAN there: its own view
            from energyhubd.openwrt.uci_network import wan_status

            status["wan"]["netifd"] = wan_status()
        dhcp = config.lan.dhcp
        server: dict[str, Any] = {"kind": "system dnsmasq (UCI)"}
        if config.platform == "linux":
            server = {
                "kind": "energyhubd dnsmasq",
                "running": bool(self.dnsmasq and self.dnsmasq.running),
                "pid": self.dnsmasq.pid if self.dnsmasq else None,
                "restarts": self.dnsmasq.restarts if self.dnsmasq else 0,
                "lease_file": self.dnsmasq.lease_file if self.dnsmasq else None,
            }
        status["lan"] = {
            "device": config.lan.device,
            "address": str(config.lan.address),
            "dhcp": {
                "pool": f"{dhcp.start}-{dhcp.end}",
                "pool_size": dhcp.pool_size,
                "lease_time_s": dhcp.lease_seconds,
                "reservations": [
                    {"name": r.name, "mac": r.mac, "ip": str(r.ip)} for r in dhcp.reservations
                ],
                "server": server,
            },
        }
        if self.inventory is not None:
            status["inventory"] = {
                **self.inventory.registry.summary(),
                "lease_file": self.inventory.lease_file,
                "lease_reads": self.inventory.lease_reads,
            }
            status["devices"] = self.inventory.registry.devices()
        status["outbound"] = self.outbound.status()
        status["events"] = self.events.history(limit=20)
        targets = nft.resolve_targets(config, self.live_addresses())
        status["forwards"] = [
            {
                "name": f.name,
                "proto": f.proto,
                "port": f.port,
                "target": f.target,
                "address": str(targets[f.name]) if targets.get(f.name) else None,
                "target_port": f.target_port,
                "state": "open" if targets.get(f.name) else "closed",
                "allow_from": "any" if f.allow_any_source else [str(n) for n in f.allow_from],
            }
            for f in config.forwards
        ]
        return status

    def _portal_status(self, config: Config | None) -> dict[str, Any]:
        if self.portal is None:
            enabled = bool(config and config.portal.enabled)
            return {"enabled": enabled, "connected": False}
        facts = self.portal.link_facts()
        settings = self.portal.settings
        return {
            "enabled": True,
            "broker": f"{settings.host}:{settings.port}",
            **facts,
            "connected_since": iso(facts["connected_since"]),
            "pending": self.portal.controller.pending,
            "state_files": self.portal.state_file_status(),
        }

    def running_config(self) -> dict[str, Any]:
        if self.config is None:
            raise MethodError("no configuration is applied yet")
        return render_running_config(self.config)

    def call_on_loop(
        self, func: Callable[[], dict[str, Any]], timeout: float = 30.0
    ) -> dict[str, Any]:
        """From another thread: run ``func`` on the loop and wait for its answer."""
        done = threading.Event()
        box: dict[str, Any] = {}

        def run() -> None:
            try:
                box["result"] = func()
            except Exception as exc:  # handed back to the caller's thread
                box["error"] = exc
            finally:
                done.set()

        self.loop.post(run)
        if not done.wait(timeout):
            raise MethodError("the daemon is busy; try again")
        if "error" in box:
            raise MethodError(str(box["error"]))
        result: dict[str, Any] = box["result"]
        return result
