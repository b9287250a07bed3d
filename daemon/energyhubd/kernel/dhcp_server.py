"""The LAN's DHCP/DNS server as one part of the daemon, whatever the platform.

Plain Linux: energyhubd's own dnsmasq (``DnsmasqSupervisor``) driven by the event loop through
a ``LoopWatch``. OpenWrt: the system's dnsmasq and sysntpd, configured through UCI (only the
changes are committed). Either way the same ``DhcpPlan`` (``policy.dhcp``) is what is served.
Owned by the event loop.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Callable
from typing import Any

from energyhubd.config.model import Config
from energyhubd.kernel.dnsmasq import DnsmasqSupervisor
from energyhubd.loop import EventLoop
from energyhubd.policy.dhcp import build_plan
from energyhubd.supervisor import LoopWatch

log = logging.getLogger("energyhubd")


class DhcpServer:
    def __init__(
        self, loop: EventLoop, resolv_file: str | None, on_change: Callable[[], None]
    ) -> None:
        self.loop = loop
        self.resolv_file = resolv_file
        self.on_change = on_change
        self.dnsmasq: DnsmasqSupervisor | None = None
        self._watch: LoopWatch | None = None

    def configure(self, config: Config) -> None:
        """Serve ``config``'s plan. Raises OSError when the server cannot be configured."""
        if config.platform != "linux":
            self._sync_openwrt(config)
            return
        if self.dnsmasq is None:
            self.dnsmasq = DnsmasqSupervisor(
                config.state_dir, self.resolv_file, os.getpid(), loop=self.loop
            )
            self._watch = LoopWatch(self.loop, self.dnsmasq, self.on_change)
        assert self._watch is not None
        dnsmasq, plan = self.dnsmasq, build_plan(config)
        self._watch.run(lambda: dnsmasq.configure(plan), notify=False)

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

    def status(self, config: Config) -> dict[str, Any]:
        if config.platform != "linux":
            return {"kind": "system dnsmasq (UCI)"}
        d = self.dnsmasq
        return {
            "kind": "energyhubd dnsmasq",
            "running": bool(d and d.running),
            "pid": d.pid if d else None,
            "restarts": d.restarts if d else 0,
            "lease_file": d.lease_file if d else None,
        }

    def close(self) -> None:
        if self._watch is not None:
            self._watch.close()
        if self.dnsmasq is not None:
            self.dnsmasq.stop()
