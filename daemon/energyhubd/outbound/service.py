"""The outbound flows inside the running daemon: diagnostics, the allowlist's learned data,
and the support tunnel.

Owned by the daemon's event loop, like every other piece of state. Anything that waits on the
network runs on a short-lived worker thread and hands its result back with ``loop.post``:

* **diagnostics** (``diagnose.run_all``): at most one run in flight; a request during a run
  is answered by that run; runs are at least ``MIN_GAP`` apart (a later request is deferred,
  not dropped). Triggers: on demand (control method), WAN up, start-up, and a loop timer
  every ``outbound.diagnose_interval`` counted from the end of the last run.
* **allowlist inputs** (``egress.mode: allowlist``): the WAN's DNS servers, the broker's
  addresses and the S3 prefixes of ``ip-ranges.json``. A refresh job learns them (start,
  reload, WAN up, every ``broker_ttl / 3``) and hands the table owner (``kernel.table``) one
  set-only transaction that brings the kernel's sets up to date; it never writes the kernel.
  The compiled table gets the same data (``egress_inputs``), so a full table replace never
  empties a set.
* **tunnel**: a ``TunnelSupervisor`` (the package's one child-process shape) driven by a
  ``LoopWatch``: its pidfd as a reader, its deadline as a timer; no polling.

Where the DNS servers come from (``wan_dns_servers``): static ``wan.dns``; else the resolv
file the daemon was given (``--resolv-file``, written by the WAN DHCP client); else on
OpenWrt netifd's ``/tmp/resolv.conf.d/resolv.conf.auto``; else ``/etc/resolv.conf``.
Loopback entries (the router's own dnsmasq) are skipped: they are not the WAN's servers.
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
from energyhubd.outbound.diagnose import Row
from energyhubd.outbound.tunnel import TunnelSupervisor, TunnelTarget
from energyhubd.policy import egress
from energyhubd.supervisor import LoopWatch

log = logging.getLogger("energyhubd.outbound")

MIN_GAP = 10.0  # seconds between the end of one diagnostics run and the start of the next
STARTUP_DELAY = 5.0  # first run after start: let the WAN lease and the resolv file settle
WAN_SETTLE = 3.0  # after the WAN gained an address: the resolv file follows the address
COUNTER_REFRESH = 10.0  # allowlist only: how fresh the drop counters in status are

OPENWRT_RESOLV = ("/tmp/resolv.conf.d/resolv.conf.auto", "/tmp/resolv.conf.auto")
SYSTEM_RESOLV = "/etc/resolv.conf"

Runner = Callable[..., list[Row]]
Resolver = Callable[[str, Sequence[str], float], tuple[list[str], str]]


def iso(ts: float | None) -> str | None:
    return None if ts is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


# -- DNS servers -------------------------------------------------------------------------------


def read_nameservers(path: str) -> list[str] | None:
    """IPv4 ``nameserver`` entries of a resolv file; None when the file cannot be read."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            lines = handle.read(65536).splitlines()
    except OSError:
        return None
    servers: list[str] = []
    for line in lines:
        parts = line.split()
        if len(parts) < 2 or parts[0] != "nameserver":
            continue
        try:
            address = ipaddress.IPv4Address(parts[1])
        except ValueError:
            continue  # IPv6 servers: the diagnostics and the allowlist are IPv4
        if address.is_loopback or address.is_unspecified:
            continue
        if str(address) not in servers:
            servers.append(str(address))
    return servers


def wan_dns_servers(config: Config, resolv_file: str | None) -> tuple[list[str], str]:
    """(the WAN's DNS servers, where they were read); see the module docstring."""
    if config.wan.dns:
        return [str(a) for a in config.wan.dns], "wan.dns"
    if resolv_file:
        candidates: tuple[str, ...] = (resolv_file,)
    elif config.platform == "openwrt":
        candidates = OPENWRT_RESOLV
    else:
        candidates = (SYSTEM_RESOLV,)
    for path in candidates:
        servers = read_nameservers(path)
        if servers is not None:
            return servers, path
    return [], f"{candidates[0]} (unreadable)"


def _settings(config: Config) -> OutboundSettings:
    return config.outbound


def _client_cert(config: Config) -> tuple[str, str] | None:
    """The portal identity, when configured and present: a broker that asks for a client
    certificate aborts a TLS 1.2 handshake without one."""
    portal = config.portal
    if not portal.enabled:
        return None
    cert, key = portal.cert_file, portal.key_file
    if cert and key and os.path.exists(cert) and os.path.exists(key):
        return str(cert), str(key)
    return None


def broker_trust(config: Config) -> diagnose.Trust | None:
    """The broker is checked against what the portal link trusts (``portal.ca_file``), so a
    private portal CA is not taken for interception; None without a portal link."""
    portal = config.portal
    if portal is None or not getattr(portal, "enabled", False):
        return None
    ca_file = getattr(portal, "ca_file", None)
    return diagnose.Trust(str(ca_file), "portal.ca_file") if ca_file else None


# -- results -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunResult:
    """One finished diagnostics run."""

    number: int
    trigger: str
    started: float
    seconds: float
    dns_servers: tuple[str, ...]
    dns_source: str
    fallback: tuple[str, ...]
    rows: tuple[Row, ...]
    error: str | None = None

    @property
    def failed(self) -> list[Row]:
        return [r for r in self.rows if not r.passed]

    @property
    def passed(self) -> bool:
        return self.error is None and not self.failed

    def as_dict(self) -> dict[str, Any]:
        """The full answer of the ``diagnose`` method."""
        return {
            "run": self.number,
            "trigger": self.trigger,
            "at": iso(self.started),
            "seconds": round(self.seconds, 2),
            "dns_servers": list(self.dns_servers),
            "dns_source": self.dns_source,
            "fallback": list(self.fallback),
            "error": self.error,
            **diagnose.as_dict(self.rows),
            "passed": self.passed,
        }

    def summary(self) -> dict[str, Any]:
        """Compact, for status: per row pass/fail, latency and reason (no details)."""
        return {
            "run": self.number,
            "trigger": self.trigger,
            "at": iso(self.started),
            "seconds": round(self.seconds, 2),
            "passed": self.passed,
            "failed_flows": sorted({r.flow for r in self.failed}),
            "error": self.error,
            "rows": [{k: v for k, v in r.as_dict().items() if k != "detail"} for r in self.rows],
        }


@dataclass
class _EgressState:
    """The allowlist's learned inputs and what became of their last refresh."""

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


# -- the service -------------------------------------------------------------------------------


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
        self.loop = loop
        self.table = table
        self.resolv_file = resolv_file
        self._publish = publish
        self._runner = runner
        self._resolver = resolver
        self.config: Config | None = None
        self.settings = OutboundSettings()
        # diagnostics
        self._cond = threading.Condition()
        self._runs_started = 0
        self._completed = 0
        self._running: int | None = None
        self._last: RunResult | None = None
        self._last_end: float | None = None
        self._pending: tuple[Timer, float, int] | None = None
        self._interval_timer: Timer | None = None
        self._next_interval: float | None = None
        self._closed = False
        # egress
        self.egress = _EgressState()
        self._refreshing = False
        self._refresh_again = False
        self._refresh_timer: Timer | None = None
        self._counter_timer: Timer | None = None
        # tunnel
        self.tunnel: TunnelSupervisor | None = None
        self._tunnel_key: tuple[Any, ...] | None = None
        self._tunnel_watch: LoopWatch | None = None
        self._wan_addresses: tuple[str, ...] | None = None

    # -- configuration --------------------------------------------------------------------
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
            broker_addresses=self.egress.broker_addresses,
            s3_prefixes=self.egress.s3_prefixes,
        )

    def configure(self, config: Config) -> None:
        """A configuration was applied (start, reload, push, rollback)."""
        first = self.config is None
        old_interval = self.settings.diagnose_interval
        self.config = config
        self.settings = _settings(config)
        if first:
            self.request("start-up", STARTUP_DELAY)
        elif self.settings.diagnose_interval != old_interval and self._last_end is not None:
            self._arm_interval()
        if self.allowlist:
            self.refresh_egress("configuration applied")
            if self._counter_timer is None:
                self._counter_timer = self.loop.call_later(COUNTER_REFRESH, self._on_counters)
        else:
            for timer in (self._refresh_timer, self._counter_timer):
                if timer is not None:
                    timer.cancel()
            self._refresh_timer = self._counter_timer = None
            self.egress.drops = {}
        self._configure_tunnel(config)

    def wan_changed(self, addresses: Sequence[str]) -> bool:
        """Links changed; when the WAN gained (new) addresses, re-learn and re-check.

        Returns True when it did (the WAN came up or got a new address)."""
        addrs = tuple(addresses)
        gained = bool(addrs) and addrs != self._wan_addresses
        self._wan_addresses = addrs
        if not gained or self.config is None:
            return False
        log.info("WAN up (%s): outbound diagnostics in %.0f s", ", ".join(addrs), WAN_SETTLE)
        self.request("wan up", WAN_SETTLE)
        if self.allowlist:
            self.refresh_egress("WAN up")
        return True

    def table_restored(self) -> None:
        """Our table was restored from an older compilation: put the learned sets back."""
        if self.allowlist:
            self._push_sets()

    def close(self) -> None:
        """Daemon shutdown: timers off, tunnel down, waiting control calls released."""
        for timer in (
            self._interval_timer,
            self._refresh_timer,
            self._counter_timer,
            self._pending[0] if self._pending else None,
        ):
            if timer is not None:
                timer.cancel()
        self._stop_tunnel()
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    # -- diagnostics ----------------------------------------------------------------------
    def request(self, trigger: str, delay: float = 0.0) -> int:
        """Ask for a diagnostics run; returns the number of the run that will answer it."""
        if self.config is None:
            raise RuntimeError("no configuration is applied yet")
        if self._running is not None:
            return self._running
        now = time.monotonic()
        earliest = now + delay
        if self._last_end is not None:
            earliest = max(earliest, self._last_end + MIN_GAP)
        if self._pending is not None:
            timer, when, number = self._pending
            if when <= earliest:
                return number
            timer.cancel()
            self._pending = None
        number = self._runs_started + 1
        if earliest <= now:
            self._start_run(trigger)
        else:
            timer = self.loop.call_later(earliest - now, lambda: self._pending_due(trigger))
            self._pending = (timer, earliest, number)
        return number

    def _pending_due(self, trigger: str) -> None:
        self._pending = None
        if self._running is None and not self._closed:
            self._start_run(trigger)

    def _start_run(self, trigger: str) -> None:
        assert self.config is not None
        if self._pending is not None:
            self._pending[0].cancel()
            self._pending = None
        self._runs_started += 1
        number = self._runs_started
        self._running = number
        config, settings = self.config, self.settings
        thread = threading.Thread(
            target=self._run_worker,
            args=(number, trigger, config, settings),
            name=f"diagnose-{number}",
            daemon=True,
        )
        thread.start()
        self._publish()

    def _run_worker(
        self, number: int, trigger: str, config: Config, settings: OutboundSettings
    ) -> None:
        """Worker thread: the blocking checks; the result goes back to the loop."""
        started, t0 = time.time(), time.monotonic()
        servers, source = wan_dns_servers(config, self.resolv_file)
        fallback = tuple(str(a) for a in config.dns_fallback)
        rows: list[Row] = []
        error = None
        try:
            rows = self._runner(
                settings,
                servers,
                list(fallback),
                client_cert=_client_cert(config),
                broker_trust=broker_trust(config),
            )
        except Exception as exc:  # reported in status, never allowed to kill the daemon
            log.exception("outbound diagnostics failed")
            error = f"diagnostics failed: {exc}"
        result = RunResult(
            number,
            trigger,
            started,
            time.monotonic() - t0,
            tuple(servers),
            source,
            fallback,
            tuple(rows),
            error,
        )
        self.loop.post(lambda: self._run_finished(result))

    def _run_finished(self, result: RunResult) -> None:
        with self._cond:
            self._last = result
            self._running = None
        self._last_end = time.monotonic()
        self._arm_interval()
        if result.passed:
            log.info(
                "outbound diagnostics (%s): all %d checks pass in %.2f s",
                result.trigger,
                len(result.rows),
                result.seconds,
            )
        else:
            problems = "; ".join(f"{r.flow}: {r.reason}" for r in result.failed)
            log.warning("outbound diagnostics (%s): %s", result.trigger, result.error or problems)
        if self.allowlist:
            self._read_counters()
        self._publish()
        # Waiters are released only now, so a status read right after sees this run.
        with self._cond:
            self._completed = result.number
            self._cond.notify_all()

    def _arm_interval(self) -> None:
        if self._interval_timer is not None:
            self._interval_timer.cancel()
        interval = self.settings.diagnose_interval
        self._next_interval = time.time() + interval
        self._interval_timer = self.loop.call_later(interval, self._on_interval)

    def _on_interval(self) -> None:
        self._interval_timer = None
        self._next_interval = None
        if self.config is not None:
            self.request("interval")

    def wait_for(self, number: int, timeout: float) -> RunResult | None:
        """From a control thread: block until run ``number`` finished; None on timeout."""
        with self._cond:
            done = self._cond.wait_for(
                lambda: self._closed or self._completed >= number, timeout=timeout
            )
            if self._closed:
                raise RuntimeError("the daemon is stopping")
            return self._last if done else None

    @property
    def last(self) -> RunResult | None:
        return self._last

    def diagnostics_status(self) -> dict[str, Any]:
        state = "running" if self._running else ("scheduled" if self._pending else "idle")
        pending_at = None
        if self._pending is not None:
            pending_at = time.time() + max(0.0, self._pending[1] - time.monotonic())
        return {
            "state": state,
            "runs": self._last.number if self._last else 0,
            "interval_s": self.settings.diagnose_interval,
            "next_run": iso(pending_at or self._next_interval),
            "last": self._last.summary() if self._last else None,
        }

    # -- egress allowlist -----------------------------------------------------------------
    def refresh_egress(self, reason: str) -> None:
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
        config, settings, known = self.config, self.settings, self.egress.ip_ranges_signature
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
        elif signature != known_signature:
            try:
                s3 = tuple(ipranges.load_ip_ranges(settings.ip_ranges_file))
            except ipranges.IpRangesError as exc:
                s3_error = str(exc)
        learned = _Learned(
            tuple(servers), source, tuple(addrs), None if addrs else why, signature, s3, s3_error
        )
        self.loop.post(lambda: self._egress_learned(learned, reason))

    def _egress_learned(self, learned: _Learned, reason: str) -> None:
        self._refreshing = False
        state = self.egress
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
            self.refresh_egress(reason)
        elif self.allowlist:
            period = max(60.0, egress.DEFAULT_BROKER_TTL / 3)
            self._refresh_timer = self.loop.call_later(period, self._on_refresh_timer)
        self._publish()

    def _on_refresh_timer(self) -> None:
        self._refresh_timer = None
        self.refresh_egress("periodic")

    def _push_sets(self) -> None:
        """One set-only transaction: DNS and S3 replaced, broker timeouts restarted."""
        if self.table is None or self.config is None:
            return
        plan = egress.plan_for(
            self.config,
            egress.EgressInputs(
                self.egress.dns_servers, self.egress.broker_addresses, self.egress.s3_prefixes
            ),
        )
        try:
            self.table.update_sets(egress.sets_transaction(plan))
        except NftError as exc:
            self.egress.push_error = str(exc)
            log.error("egress allowlist: sets not updated: %s", exc)
            return
        self.egress.last_push = time.time()
        self.egress.push_error = None

    def _read_counters(self) -> bool:
        """Refresh the drop counters from the kernel; True when they changed."""
        if self.table is None:
            return False
        counters = self.table.counters()
        drops = egress.drop_counters(counters) if counters else {}
        changed = drops != self.egress.drops
        self.egress.drops, self.egress.drops_at = drops, time.time()
        return changed

    def _on_counters(self) -> None:
        self._counter_timer = None
        if not self.allowlist:
            return
        if self._read_counters():
            self._publish()
        self._counter_timer = self.loop.call_later(COUNTER_REFRESH, self._on_counters)

    def egress_status(self) -> dict[str, Any]:
        if not self.allowlist:
            return {"mode": "open"}
        e = self.egress
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

    # -- tunnel ---------------------------------------------------------------------------
    def _configure_tunnel(self, config: Config) -> None:
        s = self.settings
        key = (s.tunnel, s.gateway_address, s.gateway_port, config.state_dir)
        if key == self._tunnel_key:
            return
        self._stop_tunnel()
        self._tunnel_key = key
        if s.tunnel.mode == "disabled":
            return
        try:
            self.tunnel = TunnelSupervisor(
                s.tunnel,
                TunnelTarget(s.gateway_address, s.gateway_port),
                os.path.join(config.state_dir, "tunnel"),
                log=log.info,
            )
        except ValueError as exc:
            log.error("support tunnel not started: %s", exc)
            return
        self._tunnel_watch = LoopWatch(self.loop, self.tunnel, self._publish)
        self._tunnel_watch.run(self.tunnel.start)

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
        self.refresh_egress("ip ranges replaced")
        log.info(
            "ip-ranges.json replaced: %d S3 prefixes, %s",
            len(prefixes),
            "written" if written else "unchanged",
        )
        return {"file": path, "s3_prefixes": len(prefixes), "written": written}

    def tunnel_open(self, hours: float | None = None) -> dict[str, Any]:
        """Open the tunnel (on demand: until ``hours``, default ``expiry_hours``, from now)."""
        if self.tunnel is None:
            raise RuntimeError("the support tunnel is disabled in the configuration")
        tunnel = self.tunnel
        if hours is not None and tunnel.settings.mode != "on_demand":
            # An always-on tunnel has no expiry; accepting hours would promise one.
            raise RuntimeError(
                f"hours applies only to an on_demand tunnel (mode is {tunnel.settings.mode})"
            )
        self._tunnel_run(lambda: tunnel.open(hours))
        return tunnel.status()

    def tunnel_close(self) -> dict[str, Any]:
        if self.tunnel is None:
            raise RuntimeError("the support tunnel is disabled in the configuration")
        tunnel = self.tunnel
        self._tunnel_run(lambda: tunnel.close("closed on request"))
        return tunnel.status()

    def _stop_tunnel(self) -> None:
        tunnel, watch = self.tunnel, self._tunnel_watch
        if tunnel is not None and watch is not None:
            watch.run(tunnel.stop, notify=False)  # no child and no deadline after stop
            watch.close()
        self.tunnel = self._tunnel_watch = None

    def _tunnel_run(self, operation: Callable[[], None]) -> None:
        assert self._tunnel_watch is not None
        self._tunnel_watch.run(operation)

    def tunnel_status(self) -> dict[str, Any]:
        if self.tunnel is None:
            return {"mode": "disabled", "state": "disabled"}
        return self.tunnel.status()

    # -- status ---------------------------------------------------------------------------
    def wan_dns(self, config: Config) -> list[str]:
        """The WAN's DNS servers as the diagnostics and the allowlist use them (one source)."""
        return wan_dns_servers(config, self.resolv_file)[0]

    def status(self) -> dict[str, Any]:
        diagnostics = self.diagnostics_status()
        egress_state = self.egress_status()
        tunnel = self.tunnel_status()
        return {
            "diagnostics": diagnostics,
            "egress": egress_state,
            "tunnel": tunnel,
            "health": self.health(diagnostics, egress_state, tunnel),
        }

    @staticmethod
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
