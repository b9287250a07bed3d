"""The inventory as the daemon runs it: lease file + neighbour table -> registry -> events.

Owned by the daemon's event loop. It wakes up only when the kernel says something changed:
inotify on the lease file's directory, SIGUSR1 from the dnsmasq hook, and netlink neighbour
events, and the LAN bridge's FDB moves of the reserved MACs (which show a clone). One slow
maintenance timer expires leases and asks the kernel to re-check (ARP) devices whose liveness
is uncertain.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from energyhubd.config.model import Config
from energyhubd.inventory.events import EventStream
from energyhubd.inventory.leases import Lease, read_lease_file
from energyhubd.inventory.registry import PROBE_QUIET_S, DeviceRegistry
from energyhubd.inventory.sanitize import safe_text
from energyhubd.kernel.dnsmasq import own_lease_file, vendor_class_dir
from energyhubd.kernel.fdb import FdbWatcher
from energyhubd.kernel.filewatch import FileWatch
from energyhubd.kernel.neighbours import NeighbourWatcher
from energyhubd.loop import EventLoop, Timer

MAC_NAME = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")

log = logging.getLogger("energyhubd.inventory")

# dnsmasq truncates the lease file before rewriting it; reading a moment later avoids seeing
# every device leave and come back.
LEASE_SETTLE = 0.05
# Maintenance runs when the registry says something is due (``next_due``), not on a minute
# tick. A quiet device is probed together with any other that is due within PROBE_BATCH_S,
# so the devices of a site stay in one round (one wake-up, one burst of answers).
PROBE_BATCH_S = 60.0
MAINTENANCE_MIN_GAP = 1.0  # a due time already past runs soon, never in a tight loop
# Safety net while devices are present but nothing is due: at most this long between rounds.
MAINTENANCE_MAX = 600.0
PORT_READ_INTERVAL = 1.0  # the bridge's FDB moves are read at most this often


def lease_file_for(config: Config) -> str:
    """The lease file the platform's DHCP server writes (resolved by the parser)."""
    return config.inventory.lease_file


def lease_addresses(path: str, now: float | None = None) -> dict[str, str]:
    """MAC -> address of every active lease: how forwards are resolved without the daemon."""
    now = time.time() if now is None else now
    return {lease.mac: lease.ip for lease in read_lease_file(path).leases if lease.active(now)}


def _reservations(config: Config) -> list[tuple[str, str | None, str]]:
    return [(r.name, r.mac, str(r.ip)) for r in config.lan.dhcp.reservations]


def _pool(config: Config) -> tuple[str, str]:
    return (str(config.lan.dhcp.start), str(config.lan.dhcp.end))


class InventoryMonitor:
    def __init__(
        self,
        loop: EventLoop,
        config: Config,
        lease_file: str,
        events: EventStream,
        on_change: Callable[[], None],
    ) -> None:
        self.loop = loop
        self.lease_file = lease_file
        self.events = events
        self.on_change = on_change
        settings = config.inventory
        # energyhubd's own dnsmasq runs a lease hook that reports every client (with or
        # without a vendor class): the inventory can wait for that report, not a guess.
        hook = lease_file == own_lease_file(config.state_dir)
        self.registry = DeviceRegistry(
            settings, _reservations(config), _pool(config), hook_reports=hook
        )
        self.filewatch = FileWatch(lease_file)
        self.neighbours = NeighbourWatcher(config.lan.device)
        try:
            self.fdb = FdbWatcher(config.lan.device)
        except BaseException:
            self.neighbours.close()
            raise
        self.fdb.watch_macs(self.registry.watched_macs())
        self._fdb_timer: Timer | None = None
        self.lease_reads = 0
        self._lease_lines: dict[bytes, Lease] = {}  # parse cache: only changed lines parsed
        self._vendor = VendorClasses(vendor_class_dir(lease_file))
        self._lease_timer: Timer | None = None
        self._maintenance: Timer | None = None
        self._settle_timer: Timer | None = None
        self._settle_at: float | None = None
        loop.add_reader(self.filewatch, self._on_lease_file)
        loop.add_reader(self.neighbours, self._on_neighbours)
        loop.add_reader(self.fdb, self._on_ports)
        for update in self.neighbours.dump():
            self._publish(self.registry.apply_neighbour(update, time.time()))
        self.read_leases()
        self._schedule_maintenance()

    # -- inputs -------------------------------------------------------------------------
    def leases_changed(self) -> None:
        """dnsmasq's hook (SIGUSR1) or inotify: read the file once the burst settles."""
        if self._lease_timer is None:
            self._lease_timer = self.loop.call_later(LEASE_SETTLE, self.read_leases)

    def _on_lease_file(self) -> None:
        if self.filewatch.drain():
            self.leases_changed()

    def read_leases(self) -> None:
        self._lease_timer = None
        snapshot = read_lease_file(self.lease_file, self._lease_lines)
        self.lease_reads += 1
        if snapshot.rejected_count:
            log.warning(
                "lease file %s: %d malformed line(s) ignored",
                self.lease_file,
                snapshot.rejected_count,
            )
        now = time.time()
        events = []
        for mac, vendor_class in self._vendor.read().items():
            events += self.registry.apply_vendor_class(mac, vendor_class, now)
        events += self.registry.apply_leases(snapshot, now)
        self._publish(events)
        self._schedule_maintenance()
        self.on_change()

    def _on_neighbours(self) -> None:
        now = time.time()
        events = []
        for update in self.neighbours.drain():
            events += self.registry.apply_neighbour(update, now)
        self._publish(events)
        self._schedule_maintenance()
        if events:
            self.on_change()

    def _on_ports(self) -> None:
        """The bridge moved a reserved MAC between ports. Two hosts sharing it can make that
        happen at every frame, so after a read this source rests ``PORT_READ_INTERVAL``: the
        moves queue meanwhile (in order; an overflow loses some, never the swing)."""
        events = self.registry.apply_ports(self.fdb.drain(), time.time())
        self._publish(events)
        if events:
            self.on_change()
        self.loop.remove_reader(self.fdb)
        self._fdb_timer = self.loop.call_later(PORT_READ_INTERVAL, self._resume_ports)

    def _resume_ports(self) -> None:
        self._fdb_timer = None
        self.loop.add_reader(self.fdb, self._on_ports)

    def _schedule_maintenance(self) -> None:
        """Arm the maintenance timer for the registry's next due time, earlier than an armed
        one when an update brought it forward; none on an empty LAN (the next lease or
        neighbour event arms it again)."""
        if not self.registry.needs_maintenance():
            return
        now = time.time()
        due = self.registry.next_due(now)
        delay = MAINTENANCE_MAX if due is None else min(due - now, MAINTENANCE_MAX)
        delay = max(delay, MAINTENANCE_MIN_GAP)
        if self._maintenance is not None:
            if self._maintenance.when <= time.monotonic() + delay:
                return  # armed early enough
            self._maintenance.cancel()
        self._maintenance = self.loop.call_later(delay, self._maintain)

    def _maintain(self) -> None:
        self._maintenance = None
        now = time.time()
        events = self.registry.expire(now)
        quiet = PROBE_QUIET_S - PROBE_BATCH_S
        for ip in self.registry.probe_candidates(now, quiet_for=quiet):
            try:
                self.neighbours.probe(ip)
            except OSError as exc:
                log.debug("ARP probe of %s failed: %s", ip, exc)
        self._publish(events)
        if events:
            self.on_change()
        self._schedule_maintenance()

    def reconfigure(self, config: Config) -> None:
        settings = config.inventory
        self._publish(
            self.registry.configure(settings, _reservations(config), _pool(config), time.time())
        )
        self.fdb.watch_macs(self.registry.watched_macs())

    def _publish(self, events: list[Any]) -> None:
        if events:
            self.events.publish_all(events)
        self._arm_settle()

    def _arm_settle(self) -> None:
        """Wake when a device's settle window ends, so an unknown_device alert is on time."""
        due = self.registry.next_deadline()
        if due == self._settle_at:
            return
        if self._settle_timer is not None:
            self._settle_timer.cancel()
            self._settle_timer = None
        self._settle_at = due
        if due is not None:
            self._settle_timer = self.loop.call_later(max(0.0, due - time.time()), self._settled)

    def _settled(self) -> None:
        """A settle window ended: judge on fresh inputs. A loop that was busy for seconds may
        run this timer before the hook's SIGUSR1 that brings the vendor class, so the lease
        file and the vendor classes are read first (measured: 1 false alert per ~10 power-up
        rounds under heavy load without this read)."""
        self._settle_timer = None
        self._settle_at = None
        self.read_leases()
        events = self.registry.expire(time.time())
        self._publish(events)
        if events:
            self.on_change()

    # -- answers ------------------------------------------------------------------------
    def live_addresses(self) -> Mapping[str, str]:
        """MAC -> current address of every device that is present (a lazy view)."""
        return self.registry.live_addresses()

    def status(self) -> dict[str, Any]:
        """The ``inventory`` part of status."""
        return {
            **self.registry.summary(),
            "lease_file": self.lease_file,
            "lease_reads": self.lease_reads,
        }

    def close(self) -> None:
        for timer in (self._lease_timer, self._maintenance, self._settle_timer, self._fdb_timer):
            if timer is not None:
                timer.cancel()
        for source in (self.filewatch, self.neighbours, self.fdb):
            self.loop.remove_reader(source)
            source.close()


MAX_VENDOR_FILES = 1024
# A directory changed this recently may change again within the file system's time stamp
# granularity without its mtime moving: such a listing is not trusted for the next read.
RECENT_NS = 50_000_000


def present_addresses(registry: DeviceRegistry) -> dict[str, str]:
    """MAC -> current address of every present device (``DeviceRegistry.address_of``)."""
    return registry.present_addresses()


class VendorClasses:
    """``read_vendor_classes`` again only when the directory changed.

    The hook replaces a MAC's file by rename, which moves the directory's mtime; so an
    unchanged (inode, mtime) means unchanged contents, and a lease event with a thousand
    remembered clients costs one ``stat`` instead of a thousand file reads.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._seen: tuple[int, int] | None = None
        self._found: dict[str, str] = {}

    def read(self) -> dict[str, str]:
        try:
            st = os.stat(self.directory)
        except OSError:
            self._seen, self._found = None, {}
            return self._found
        identity = (st.st_ino, st.st_mtime_ns)
        if identity != self._seen:
            self._found = read_vendor_classes(self.directory)
            recent = time.time_ns() - st.st_mtime_ns < RECENT_NS
            self._seen = None if recent else identity
        return self._found


def read_vendor_classes(directory: Path) -> dict[str, str]:
    """MAC -> DHCP vendor class left by the lease hook (client-chosen text: sanitised; ``""``
    when the hook reported the client without one).

    Only files named like a MAC are read, at most ``MAX_VENDOR_FILES``, each at most 256
    bytes, so a flood of clients cannot make a lease read expensive.
    """
    found: dict[str, str] = {}
    try:
        names = sorted(os.listdir(directory))[:MAX_VENDOR_FILES]
    except OSError:
        return found
    for name in names:
        mac = name.lower()
        if not MAC_NAME.match(mac):
            continue
        try:
            with open(directory / name, "rb") as handle:
                raw = handle.read(256)
        except OSError:
            continue
        found[mac] = safe_text(raw)  # "" : the hook reported the client without a class
    return found


def follow(
    current: InventoryMonitor | None,
    loop: EventLoop,
    config: Config,
    events: EventStream,
    on_change: Callable[[], None],
) -> InventoryMonitor | None:
    """The monitor for ``config``: the current one reconfigured, or a new one when the lease
    file moved. None (logged) when it cannot be started."""
    lease_file = lease_file_for(config)
    if current is not None and current.lease_file != lease_file:
        current.close()
        current = None
    if current is not None:
        current.reconfigure(config)
        return current
    try:
        return InventoryMonitor(loop, config, lease_file, events, on_change)
    except OSError as exc:
        log.error("device inventory not started: %s", exc)
        return None
