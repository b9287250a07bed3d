"""The outbound flows inside the running daemon: one facade over three owners, so the
composition root and the control methods see one object.

* ``diagnostics.Diagnostics``: when ``diagnose.run_all`` runs (one at a time, ``MIN_GAP``
  apart, on demand, WAN up, start-up, interval) and the control threads waiting for a run;
* ``learner.AllowlistLearner``: the allowlist's learned inputs (DNS servers, broker addresses,
  S3 prefixes), handed to the table owner (``kernel.table``), never written to the kernel here;
* ``tunnel_driver.TunnelDriver``: the support tunnel's supervisor on the loop.

Threading contract: the facade lives on the daemon's event loop; only ``wait_for`` may be
called from another thread (see ``diagnostics``). The workers are those of its parts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from energyhubd.config.model import Config
from energyhubd.kernel.table import Table
from energyhubd.loop import EventLoop
from energyhubd.outbound import diagnose
from energyhubd.outbound.diagnostics import Diagnostics, Runner, RunResult
from energyhubd.outbound.inputs import wan_dns_servers
from energyhubd.outbound.learner import AllowlistLearner, Resolver
from energyhubd.outbound.tunnel_driver import TunnelDriver
from energyhubd.policy import egress

log = logging.getLogger("energyhubd.outbound")

WAN_SETTLE = 3.0  # after the WAN gained an address: the resolv file follows the address


class OutboundService:
    """Lives on the event loop; only ``wait_for`` may be called from another thread."""

    def __init__(
        self,
        loop: EventLoop,
        table: Table | None,
        resolv_file: str | None,
        publish: Callable[[], None],
        *,
        runner: Runner = diagnose.run_all,
        resolver: Resolver = diagnose.resolve,
    ) -> None:
        self.resolv_file = resolv_file
        self.learner = AllowlistLearner(loop, table, resolv_file, publish, resolver)
        # After each run the drop counters are read, so status shows a failed check together
        # with the drops that explain it.
        self.diagnostics = Diagnostics(
            loop, resolv_file, publish, self.learner.read_counters, runner
        )
        self.tunnel = TunnelDriver(loop, publish)
        self._wan_addresses: tuple[str, ...] | None = None

    # -- the composition root's calls -----------------------------------------------------
    def configure(self, config: Config) -> None:
        """A configuration was applied (start, reload, push, rollback)."""
        self.diagnostics.configure(config)
        self.learner.configure(config)
        self.tunnel.configure(config)

    def egress_inputs(self, config: Config) -> egress.EgressInputs | None:
        return self.learner.egress_inputs(config)

    def wan_changed(self, addresses: Sequence[str]) -> bool:
        """Links changed; when the WAN gained (new) addresses, re-learn and re-check.

        Returns True when it did (the WAN came up or got a new address)."""
        addrs = tuple(addresses)
        gained = bool(addrs) and addrs != self._wan_addresses
        self._wan_addresses = addrs
        if not gained or self.diagnostics.config is None:
            return False
        log.info("WAN up (%s): outbound diagnostics in %.0f s", ", ".join(addrs), WAN_SETTLE)
        self.diagnostics.request("wan up", WAN_SETTLE)
        self.learner.refresh("WAN up")
        return True

    def table_restored(self) -> None:
        self.learner.table_restored()

    def close(self) -> None:
        """Daemon shutdown: timers off, tunnel down, waiting control calls released."""
        self.learner.close()
        self.tunnel.stop()
        self.diagnostics.close()

    # -- the control methods' calls --------------------------------------------------------
    def request(self, trigger: str, delay: float = 0.0) -> int:
        return self.diagnostics.request(trigger, delay)

    def wait_for(self, number: int, timeout: float) -> RunResult | None:
        return self.diagnostics.wait_for(number, timeout)

    @property
    def last(self) -> RunResult | None:
        return self.diagnostics.last

    def diagnostics_status(self) -> dict[str, Any]:
        return self.diagnostics.status()

    def replace_ip_ranges(self, document: object) -> dict[str, Any]:
        return self.learner.replace_ip_ranges(document)

    def tunnel_open(self, hours: float | None = None) -> dict[str, Any]:
        return self.tunnel.open(hours)

    def tunnel_close(self) -> dict[str, Any]:
        return self.tunnel.close()

    def wan_dns(self, config: Config) -> list[str]:
        """The WAN's DNS servers as the diagnostics and the allowlist use them (one source)."""
        return wan_dns_servers(config, self.resolv_file)[0]

    def status(self) -> dict[str, Any]:
        diagnostics = self.diagnostics.status()
        egress_state = self.learner.status()
        tunnel = self.tunnel.status()
        return {
            "diagnostics": diagnostics,
            "egress": egress_state,
            "tunnel": tunnel,
            "health": health(diagnostics, egress_state, tunnel),
        }


def health(
    diagnostics: dict[str, Any], egress_state: dict[str, Any], tunnel: dict[str, Any]
) -> dict[str, Any]:
    """The few facts the portal health report carries: small, changes rarely."""
    last = diagnostics.get("last") or {}
    failed: dict[str, str] = {}
    for row in last.get("rows", []):
        if not row["passed"] and row["flow"] not in failed:
            failed[row["flow"]] = row["reason"]
    drops: dict[str, int] = {}
    for side in (egress_state.get("drops") or {}).values():
        for flow, packets in side.items():
            if packets:
                drops[flow] = drops.get(flow, 0) + packets
    return {
        "diagnosed_at": last.get("at"),
        "passed": last.get("passed"),
        "failed": failed,
        "egress": egress_state.get("mode"),
        "egress_drops": drops,
        "tunnel": tunnel.get("state"),
    }
