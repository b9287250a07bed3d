"""The allowlist learner (``egress.mode: allowlist``): the data the strict egress sets need
that the configuration cannot hold: the WAN's DNS servers, the broker's addresses and the S3
prefixes of ``ip-ranges.json``.

It learns them (start, reload, WAN up, ``ip_ranges`` replaced, every ``broker_ttl / 3``) and
hands the table owner (``kernel.table.Table.update_sets``) one set-only transaction that
brings the kernel's sets up to date; it never writes the kernel itself. The compiled table
gets the same data (``egress_inputs``), so a full table replace never empties a set.

Threading contract: every method runs on the daemon's event loop. A refresh job (at most one;
a request during it runs once more afterwards) resolves and reads files on a short-lived
worker thread (``egress-refresh``) that touches only its own arguments and hands a
``_Learned`` back with ``loop.post``.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from energyhubd.config.atomic import write_if_changed
from energyhubd.config.model import Config
from energyhubd.config.sections.outbound import OutboundSettings
from energyhubd.kernel.table import NftError, Table
from energyhubd.loop import EventLoop, Timer
from energyhubd.outbound import diagnose, ipranges
from energyhubd.outbound.inputs import iso, wan_dns_servers
from energyhubd.policy import egress

log = logging.getLogger("energyhubd.outbound")

COUNTER_REFRESH = 10.0  # how fresh the drop counters in status are

Resolver = Callable[[str, Sequence[str], float], tuple[list[str], str]]


@dataclass
class EgressState:
    """The learned inputs and what became of their last refresh."""

    dns_servers: tuple[str, ...] = ()
    dns_source: str = ""
    broker_addresses: tuple[str, ...] = ()
    broker_resolved: float | None = None
    broker_error: str | None = None
    s3_prefixes: tuple[ipaddress.IPv4Network, ...] = ()
    ip_ranges_signature: tuple[Any, ...] | None = None
    ip_ranges_loaded: float | None = None
    ip_ranges_error: str | None = None
    last_push: float | None = None
    push_error: str | None = None
    drops: dict[str, dict[str, int]] = field(default_factory=dict)
    drops_at: float | None = None


@dataclass(frozen=True)
class _Learned:
    """What one refresh job found (built on the worker, consumed on the loop)."""

    dns_servers: tuple[str, ...]
    dns_source: str
    broker: tuple[str, ...]
    broker_error: str | None
    signature: tuple[Any, ...] | None
    s3: tuple[ipaddress.IPv4Network, ...] | None
    s3_error: str | None


def _file_signature(path: str) -> tuple[Any, ...] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class AllowlistLearner:
    """Keeps the allowlist's sets fed; see the module docstring."""

    def __init__(
        self,
        loop: EventLoop,
        table: Table | None,
        resolv_file: str | None,
        publish: Callable[[], None],
        resolver: Resolver = diagnose.resolve,
    ) -> None:
        self.loop = loop
        self.table = table  # None in unit tests: learning without a kernel
        self.resolv_file = resolv_file
        self._publish = publish
        self._resolver = resolver
        self.config: Config | None = None
        self.settings = OutboundSettings()
        self.state = EgressState()
        self._refreshing = False
        self._refresh_again = False
        self._refresh_timer: Timer | None = None
        self._counter_timer: Timer | None = None

    @property
    def allowlist(self) -> bool:
        return self.config is not None and self.config.egress_mode == "allowlist"

    def egress_inputs(self, config: Config) -> egress.EgressInputs | None:
        """The learned data for compiling ``config`` (None in open mode).

        The DNS servers are read now (a small local file), so a table compiled right after a
        new lease already admits them; broker and S3 data are the last learned.
        """
        if config.egress_mode != "allowlist":
            return None
        servers, _source = wan_dns_servers(config, self.resolv_file)
        return egress.EgressInputs(
            dns_servers=tuple(servers),
            broker_addresses=self.state.broker_addresses,
            s3_prefixes=self.state.s3_prefixes,
        )

    def configure(self, config: Config) -> None:
        """A configuration was applied: learn again, or (open mode) stop learning."""
        self.config, self.settings = config, config.outbound
        if self.allowlist:
            self.refresh("configuration applied")
            if self._counter_timer is None:
                self._counter_timer = self.loop.call_later(COUNTER_REFRESH, self._on_counters)
        else:
            self.close()
            self.state.drops = {}

    def close(self) -> None:
        for timer in (self._refresh_timer, self._counter_timer):
            if timer is not None:
                timer.cancel()
        self._refresh_timer = self._counter_timer = None

    def table_restored(self) -> None:
        """Our table was restored from an older compilation: put the learned sets back."""
        if self.allowlist:
            self._push_sets()

    def refresh(self, reason: str) -> None:
        """Learn DNS servers, broker addresses and S3 prefixes again (one job at a time)."""
        if not self.allowlist or self.config is None:
            return
        if self._refreshing:
            self._refresh_again = True
            return
        self._refreshing = True
        if self._refresh_timer is not None:
            self._refresh_timer.cancel()
            self._refresh_timer = None
        config, settings, known = self.config, self.settings, self.state.ip_ranges_signature
        threading.Thread(
            target=self._refresh_worker,
            args=(config, settings, known, reason),
            name="egress-refresh",
            daemon=True,
        ).start()

    def _refresh_worker(
        self,
        config: Config,
        settings: OutboundSettings,
        known_signature: tuple[Any, ...] | None,
        reason: str,
    ) -> None:
        servers, source = wan_dns_servers(config, self.resolv_file)
        lookup = [*servers, *(str(a) for a in config.dns_fallback if str(a) not in servers)]
        try:
            addrs, why = self._resolver(settings.broker_host, lookup, settings.timeout)
        except Exception as exc:  # a resolver bug must not stop the refresh cycle
            addrs, why = [], f"resolver failed: {exc}"
        signature = _file_signature(settings.ip_ranges_file)
        s3: tuple[ipaddress.IPv4Network, ...] | None = None
        s3_error = None
        if signature is None:
            s3_error = f"cannot read {settings.ip_ranges_file}"
        elif signature != known_signature:  # an unchanged file is not parsed again
            try:
                s3 = tuple(ipranges.load_ip_ranges(settings.ip_ranges_file))
            except ipranges.IpRangesError as exc:
                s3_error = str(exc)
        learned = _Learned(
            tuple(servers), source, tuple(addrs), None if addrs else why, signature, s3, s3_error
        )
        self.loop.post(lambda: self._learned(learned, reason))

    def _learned(self, learned: _Learned, reason: str) -> None:
        self._refreshing = False
        state = self.state
        state.dns_servers, state.dns_source = learned.dns_servers, learned.dns_source
        if learned.broker:
            state.broker_addresses = tuple(sorted(set(learned.broker)))
            state.broker_resolved = time.time()
            state.broker_error = None
        else:
            # Keep the last answer alive: a DNS outage must not also close the portal link.
            state.broker_error = learned.broker_error
            log.warning(
                "egress allowlist: cannot resolve %s (%s); keeping %s",
                self.settings.broker_host,
                learned.broker_error,
                ", ".join(state.broker_addresses) or "no address (MQTT stays blocked)",
            )
        if learned.s3 is not None:
            state.s3_prefixes = learned.s3
            state.ip_ranges_loaded = time.time()
            state.ip_ranges_error = None
            state.ip_ranges_signature = learned.signature
            log.info(
                "egress allowlist: %d S3 eu-central-1 prefixes from %s",
                len(learned.s3),
                self.settings.ip_ranges_file,
            )
        elif learned.s3_error is not None and learned.s3_error != state.ip_ranges_error:
            state.ip_ranges_error = learned.s3_error
            state.ip_ranges_signature = learned.signature
            kept = len(state.s3_prefixes)
            log.error(
                "egress allowlist: %s; keeping the previous %d S3 prefixes%s",
                learned.s3_error,
                kept,
                "" if kept else " (update downloads stay blocked)",
            )
        self._push_sets()
        if self._refresh_again:
            self._refresh_again = False
            self.refresh(reason)
        elif self.allowlist:
            period = max(60.0, egress.DEFAULT_BROKER_TTL / 3)
            self._refresh_timer = self.loop.call_later(period, self._on_refresh_timer)
        self._publish()

    def _on_refresh_timer(self) -> None:
        self._refresh_timer = None
        self.refresh("periodic")

    def _push_sets(self) -> None:
        """One set-only transaction: DNS and S3 replaced, broker timeouts restarted."""
        if self.table is None or self.config is None:
            return
        plan = egress.plan_for(
            self.config,
            egress.EgressInputs(
                self.state.dns_servers, self.state.broker_addresses, self.state.s3_prefixes
            ),
        )
        try:
            self.table.update_sets(egress.sets_transaction(plan))
        except NftError as exc:
            self.state.push_error = str(exc)
            log.error("egress allowlist: sets not updated: %s", exc)
            return
        self.state.last_push = time.time()
        self.state.push_error = None

    def read_counters(self) -> bool:
        """Refresh the drop counters from the kernel (allowlist only); True when they changed."""
        if self.table is None or not self.allowlist:
            return False
        counters = self.table.counters()
        drops = egress.drop_counters(counters) if counters else {}
        changed = drops != self.state.drops
        self.state.drops, self.state.drops_at = drops, time.time()
        return changed

    def _on_counters(self) -> None:
        self._counter_timer = None
        if not self.allowlist:
            return
        if self.read_counters():
            self._publish()
        self._counter_timer = self.loop.call_later(COUNTER_REFRESH, self._on_counters)

    def replace_ip_ranges(self, document: object) -> dict[str, Any]:
        """A copy of ip-ranges.json (from the portal) replaces the local file, if trustworthy.

        Checked exactly like the file itself; a document that does not parse or lists no S3
        eu-central-1 prefix raises ValueError and file and allowlist set stay as they were.
        Written atomically and only when it differs; the allowlist then re-learns its set.
        """
        if not isinstance(document, dict):
            raise ValueError("argument 'document' must be the ip-ranges.json object")
        data = (json.dumps(document, indent=1, sort_keys=True) + "\n").encode()
        try:
            prefixes = ipranges.parse_ip_ranges(data)
        except ipranges.IpRangesError as exc:
            raise ValueError(f"{exc}; the previous set is kept") from None
        path = self.settings.ip_ranges_file
        try:
            written = write_if_changed(path, data)
        except OSError as exc:
            raise ValueError(f"cannot write {path}: {exc.strerror}") from None
        self.refresh("ip ranges replaced")
        log.info(
            "ip-ranges.json replaced: %d S3 prefixes, %s",
            len(prefixes),
            "written" if written else "unchanged",
        )
        return {"file": path, "s3_prefixes": len(prefixes), "written": written}

    def status(self) -> dict[str, Any]:
        if not self.allowlist:
            return {"mode": "open"}
        e = self.state
        return {
            "mode": "allowlist",
            "dns_servers": list(e.dns_servers),
            "dns_source": e.dns_source,
            "broker": self.settings.broker_host,
            "broker_addresses": list(e.broker_addresses),
            "broker_resolved": iso(e.broker_resolved),
            "broker_error": e.broker_error,
            "gateway": f"{self.settings.gateway_address}:{self.settings.gateway_port}",
            "s3_prefixes": len(e.s3_prefixes),
            "ip_ranges_file": self.settings.ip_ranges_file,
            "ip_ranges_loaded": iso(e.ip_ranges_loaded),
            "ip_ranges_error": e.ip_ranges_error,
            "sets_updated": iso(e.last_push),
            "sets_error": e.push_error,
            "drops": e.drops,
            "drops_as_of": iso(e.drops_at),
        }
