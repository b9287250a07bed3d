"""energyhubd benchmark: what one DHCP lease event costs the inventory, with many devices.

No namespaces, no root: the inventory's side of a lease event is pure work on files and
memory. Printed beside a floor measured in the same run:

1. **CPU per DHCP event** with ``--devices`` (1,000) remembered devices, each with a lease in
   the file: one lease changes (renewal, new address, a device joining or leaving), the file
   is rewritten (untimed), then the inventory's whole reaction is timed in CPU seconds
   (``time.thread_time``): read and parse the lease file, read the vendor classes, update the
   registry, and answer the daemon's question "which devices are where"
   (``InventoryMonitor.live_addresses``). Floor: reading the same file and splitting it into
   lines and fields, the least any reader of it does.
2. **devices query** (``DeviceRegistry.devices()``, what ``status`` shows) with the same
   devices. Floor: building the same number of JSON-ready dicts from plain tuples.
3. **RSS growth per 10,000 lease changes** (the same loop, after 3,000 untimed ones; RSS
   before and after). A third of the changes bring a MAC never seen before, which the
   registry remembers (bounded: ``MAX_DEVICES``, ``MAX_UNKNOWN_REMEMBERED``).

``python bench/leases.py [--json] [--devices N] [--events N]``; part of ``make bench``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from energyhubd.config.sections.inventory import InventorySettings
from energyhubd.inventory import monitor
from energyhubd.inventory.leases import Lease, read_lease_file
from energyhubd.inventory.registry import DeviceRegistry

POOL = ("10.1.0.10", "10.1.255.250")
TARGET_EVENT_MS = 1.0
TARGET_DEVICES_MS = 2.0
WARM_EVENTS = 3000


def rss_kib() -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def mac(n: int) -> str:
    return "02:ee:{:02x}:{:02x}:{:02x}:{:02x}".format(*n.to_bytes(4, "big"))


def ip(n: int) -> str:
    return f"10.1.{(n + 10) >> 8 & 255}.{(n + 10) & 255}"


class LeaseFile:
    """A dnsmasq-style lease file whose leases the bench changes one at a time."""

    def __init__(self, path: Path, devices: int, now: int) -> None:
        self.path = path
        self.leases: dict[int, tuple[int, str, str, str]] = {
            n: (now + 86400 + n, mac(n), ip(n), f"host-{n}" if n % 3 else "*")
            for n in range(devices)
        }
        self.next_device = devices
        self.write()

    def write(self) -> None:
        text = "".join(
            f"{expiry} {m} {a} {host} 01:{m}\n" for expiry, m, a, host in self.leases.values()
        )
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.path)

    def change(self, step: int) -> None:
        """Alternately renew one lease, re-address one, and let one device leave for a new."""
        keys = list(self.leases)
        key = keys[(step * 7919) % len(keys)]
        expiry, m, a, host = self.leases[key]
        kind = step % 3
        if kind == 0:
            self.leases[key] = (expiry + 3600, m, a, host)
        elif kind == 1:
            self.leases[key] = (expiry, m, a, f"renamed-{step}")
        else:
            del self.leases[key]
            n = self.next_device
            self.next_device += 1
            self.leases[n] = (expiry, mac(n), ip(n % 60000), f"host-{n}")
        self.write()


class Inventory:
    """The inventory's part of a lease event, as ``InventoryMonitor.read_leases`` runs it."""

    def __init__(self, lease_file: Path) -> None:
        self.registry = DeviceRegistry(InventorySettings(), (), POOL)
        self.lease_file = str(lease_file)
        self.lines: dict[bytes, Lease] = {}
        self.vendor = monitor.VendorClasses(monitor.vendor_class_dir(self.lease_file))

    def on_lease_event(self) -> dict[str, str]:
        now = time.time()
        snapshot = read_lease_file(self.lease_file, self.lines)
        for m, vendor_class in self.vendor.read().items():
            self.registry.apply_vendor_class(m, vendor_class, now)
        self.registry.apply_leases(snapshot, now)
        return monitor.present_addresses(self.registry)


def floor_read(path: Path) -> int:
    with open(path, "rb") as handle:
        return sum(len(line.split()) for line in handle.read().split(b"\n"))


def run(devices: int, events: int, growth_events: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="ehbench-leases-") as tmp:
        path = Path(tmp) / "dhcp.leases"
        vendor_dir = Path(tmp) / "vendor-class"
        vendor_dir.mkdir()
        for n in range(0, devices, 4):  # a quarter of the clients sent a vendor class
            (vendor_dir / mac(n)).write_text("EnergyHub-unit" if n % 8 else "udhcp 1.35.0")
        leases = LeaseFile(path, devices, int(time.time()))
        inventory = Inventory(path)
        inventory.on_lease_event()  # the first read builds everything
        event_cpu: list[float] = []
        floor_cpu: list[float] = []
        devices_cpu: list[float] = []
        dicts_cpu: list[float] = []
        for step in range(events):
            leases.change(step)
            started = time.thread_time()
            floor_read(path)
            floor_cpu.append(time.thread_time() - started)
            started = time.thread_time()
            inventory.on_lease_event()
            event_cpu.append(time.thread_time() - started)
            started = time.thread_time()
            listing = inventory.registry.devices()
            devices_cpu.append(time.thread_time() - started)
            rows = [tuple(d.values()) for d in listing]
            keys = list(listing[0])
            started = time.thread_time()
            [dict(zip(keys, row, strict=True)) for row in rows]
            dicts_cpu.append(time.thread_time() - started)
        warm = events + WARM_EVENTS  # caches and the allocator's pools fill up first
        for step in range(events, warm):
            leases.change(step)
            inventory.on_lease_event()
            inventory.registry.devices()
        gc.collect()
        before = rss_kib()
        for step in range(warm, warm + growth_events):
            leases.change(step)
            inventory.on_lease_event()
            inventory.registry.devices()
        gc.collect()
        after = rss_kib()
        tracked = len(inventory.registry.devices())
    ms = 1000.0
    event, floor = statistics.median(event_cpu) * ms, statistics.median(floor_cpu) * ms
    query, dicts = statistics.median(devices_cpu) * ms, statistics.median(dicts_cpu) * ms
    return {
        "devices": tracked,
        "events": events,
        "event_cpu_ms": {"median": event, "p90": _p90(event_cpu) * ms},
        "event_floor_ms": floor,
        "ratio_event_vs_floor": event / floor,
        "devices_query_ms": {"median": query, "p90": _p90(devices_cpu) * ms},
        "devices_floor_ms": dicts,
        "ratio_devices_vs_floor": query / dicts,
        "growth_events": growth_events,
        "rss_growth_kib": after - before,
        "rss_growth_mib_per_10000": (after - before) / 1024 * 10000 / growth_events,
    }


def _p90(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]


def render(r: dict[str, Any]) -> str:
    rows = [
        ("measure", "energyhubd", "floor", "ratio", "target"),
        (
            f"CPU per DHCP event, {r['devices']} devices",
            f"{r['event_cpu_ms']['median']:.3f} ms (p90 {r['event_cpu_ms']['p90']:.3f})",
            f"{r['event_floor_ms']:.3f} ms read+split the file",
            f"{r['ratio_event_vs_floor']:.1f}x",
            f"<= {TARGET_EVENT_MS} ms",
        ),
        (
            f"devices query, {r['devices']} devices",
            f"{r['devices_query_ms']['median']:.3f} ms (p90 {r['devices_query_ms']['p90']:.3f})",
            f"{r['devices_floor_ms']:.3f} ms as many plain dicts",
            f"{r['ratio_devices_vs_floor']:.1f}x",
            f"<= {TARGET_DEVICES_MS} ms",
        ),
        (
            f"RSS growth over {r['growth_events']} lease changes",
            f"{r['rss_growth_mib_per_10000']:.2f} MiB per 10,000",
            "",
            "",
            "<= 1 MiB",
        ),
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = []
    for n, row in enumerate(rows):
        lines.append("  ".join(c.ljust(widths[i]) for i, c in enumerate(row)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--events", type=int, default=300, help="timed events (300)")
    parser.add_argument("--growth", type=int, default=10000, help="events for RSS growth")
    args = parser.parse_args(argv)
    result = run(args.devices, args.events, args.growth)
    print(json.dumps(result, indent=2) if args.json else render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
