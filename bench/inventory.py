"""Device-inventory benchmark: join latency into the status snapshot, and idle wake-ups.

1. DHCPACK -> device in the status snapshot, over ``--joins`` new clients (distinct MACs
   ``02:bb:00:00:00:NN``) plugged into the lab's LAN switch one after the other. The DHCPACK
   time is taken on the client: a wrapper around the lab's udhcpc hook writes a
   CLOCK_REALTIME stamp (``date +%s.%N``) the moment udhcpc calls it with ``bound``. The
   status is polled over the control socket every ``--poll`` ms from the moment the client
   starts. Two sightings are timed: the device present at all, and present with its lease
   (``lease_ip`` and host name known). Baseline, same run, same clock: the time from the same
   stamp until the lease line appears in the daemon's lease file (what dnsmasq itself takes),
   seen by an inotify watch in this process. A packet socket on the switch's uplink also
   stamps the DHCPOFFER and DHCPACK on the wire (kernel receive time, CLOCK_REALTIME), so the
   hook's own lag is visible. Each client is removed (namespace deleted: udhcpc releases) once
   it has been seen.
2. Wake-ups of the daemon on a steady site: growth of ``voluntary_ctxt_switches`` per thread
   (``/proc/PID/task/*/status``) over ``--window`` s with nobody talking to the daemon, split
   into the event-loop thread and the others. Python does not name its threads in ``comm``,
   so a thread is named by what it is blocked on (accept on the control socket, a select
   that includes the MQTT connection) when ``comm`` does not tell.

Run as root: ``.venv/bin/python bench/inventory.py [--json]`` (``make bench``). Everything runs
in a lab site built for the purpose (namespaces ``ehI<random>-*``), removed afterwards, also
on failure or SIGTERM. No assertions: this reports, it does not judge.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import secrets
import select
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from energyhub_lab import netns
from energyhub_lab.site import Site
from energyhubd.control.client import ControlError, call
from energyhubd.kernel.filewatch import FileWatch

PYTHON = sys.executable
TARGET_MS = 200.0
MQTT_PORT = 8883
NUD_WORDS = {"REACHABLE", "STALE", "DELAY", "PROBE", "FAILED", "INCOMPLETE", "NOARP", "PERMANENT"}

# Wraps the lab's hook: stamp first (CLOCK_REALTIME, shared by every namespace), then hand over.
STAMP_SCRIPT = """#!/bin/sh
# bench/inventory.py: note when udhcpc handled the DHCPACK, then run the lab's hook.
if [ "$1" = bound ]; then
  echo "$(date +%s.%N) $ip" >> "$BENCH_STAMP"
fi
exec {lab_script} "$@"
"""

# Runs in the switch namespace: DHCP server replies seen on the uplink, kernel-stamped.
CAPTURE_WORKER = r"""
import json, socket, struct, sys, time
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.bind((sys.argv[1], 0))
s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
print(json.dumps({"ready": time.time()}), flush=True)
kinds = {2: "offer", 5: "ack", 6: "nak"}
while True:
    data, anc, _flags, _addr = s.recvmsg(4096, 256)
    ts = time.time()
    for level, kind, raw in anc:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
            sec, nsec = struct.unpack("qq", raw[:16])
            ts = sec + nsec / 1e9
    if len(data) < 14 + 20 + 8 + 240 or data[12:14] != b"\x08\x00" or data[23] != 17:
        continue
    udp = 14 + (data[14] & 0x0F) * 4
    if struct.unpack("!H", data[udp:udp + 2])[0] != 67:
        continue
    bootp = udp + 8
    mac = ":".join(f"{b:02x}" for b in data[bootp + 28:bootp + 34])
    yiaddr = socket.inet_ntoa(data[bootp + 16:bootp + 20])
    i, kind = bootp + 240, None
    while i + 1 < len(data) and data[i] != 255:
        if data[i] == 0:
            i += 1
            continue
        if data[i] == 53:
            kind = kinds.get(data[i + 2])
        i += 2 + data[i + 1]
    if kind:
        print(json.dumps({"kind": kind, "mac": mac, "ip": yiaddr, "t": ts}), flush=True)
"""

# x86_64 numbers; elsewhere threads are named by comm and tid only.
SYSCALLS = {
    "x86_64": {
        0: "read",
        7: "poll",
        23: "select",
        43: "accept",
        202: "futex",
        230: "clock_nanosleep",
        232: "epoll_wait",
        270: "pselect6",
        271: "ppoll",
        281: "epoll_pwait",
        288: "accept4",
        441: "epoll_pwait2",
    }
}.get(platform.machine(), {})


# -- small helpers ------------------------------------------------------------------------
def summary(samples: list[float]) -> dict[str, Any]:
    if not samples:
        return {"n": 0}
    ordered = sorted(samples)
    return {
        "n": len(ordered),
        "min": round(ordered[0], 1),
        "median": round(statistics.median(ordered), 1),
        "p90": round(ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))], 1),
        "worst": round(ordered[-1], 1),
    }


def read_status(pid: int) -> dict[str, str]:
    result: dict[str, str] = {}
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            result[key] = value.strip()
    return result


def thread_switches(pid: int) -> dict[int, int]:
    counts: dict[int, int] = {}
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError, KeyError, ValueError):
            status = read_status(int(task))  # /proc/TID works for any thread id
            counts[int(task)] = int(status["voluntary_ctxt_switches"])
    return counts


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def socket_inodes(pid: int) -> dict[int, int]:
    """fd -> socket inode of every socket the process holds."""
    result = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                result[int(fd)] = int(target[8:-1])
    return result


def unix_paths(pid: int) -> dict[int, str]:
    """socket inode -> bound path, from the process's own network namespace."""
    result = {}
    with open(f"/proc/{pid}/net/unix") as handle:
        next(handle)
        for line in handle:
            parts = line.split()
            if len(parts) >= 8:
                result[int(parts[6])] = parts[7]
    return result


def tcp_remote_ports(pid: int) -> dict[int, int]:
    """socket inode -> remote TCP port (IPv4 and IPv6), in the process's namespace."""
    result = {}
    for name in ("tcp", "tcp6"):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/net/{name}") as handle:
            next(handle)
            for line in handle:
                parts = line.split()
                result[int(parts[9])] = int(parts[2].rsplit(":", 1)[1], 16)
    return result


def select_fds(pid: int, nfds: int, address: int) -> list[int]:
    """The fds in a blocked select()'s read set, read from the process's memory (root)."""
    if not address or nfds <= 0:
        return []
    with open(f"/proc/{pid}/mem", "rb") as mem:
        mem.seek(address)
        bits = mem.read((nfds + 7) // 8)
    return [fd for fd in range(nfds) if bits[fd // 8] >> (fd % 8) & 1]


def thread_name(pid: int, tid: int, control_socket: str) -> str:
    """comm when it tells; otherwise what the thread waits in, and on which socket."""
    base = f"/proc/{pid}/task/{tid}"
    with open(f"{base}/comm") as handle:
        comm = handle.read().strip()
    with open(f"/proc/{pid}/comm") as handle:
        main_comm = handle.read().strip()
    if tid == pid:
        return f"main/event loop ({comm})"
    if comm != main_comm:
        return comm
    for _ in range(20):  # a running thread shows "running"; catch it asleep
        with open(f"{base}/syscall") as handle:
            fields = handle.read().split()
        if fields and fields[0].lstrip("-").isdigit():
            break
        time.sleep(0.01)
    else:
        return f"{comm} (running)"
    call_name = SYSCALLS.get(int(fields[0]), f"syscall {fields[0]}")
    args = [int(a, 16) for a in fields[1:7]]
    sockets = socket_inodes(pid)
    if call_name in ("accept", "accept4"):
        path = unix_paths(pid).get(sockets.get(args[0], -1), "")
        if path == control_socket:
            return "control socket (accept)"
        return f"{comm} (accept on {path or 'fd ' + str(args[0])})"
    if call_name in ("select", "pselect6"):
        with contextlib.suppress(OSError):
            ports = tcp_remote_ports(pid)
            fds = select_fds(pid, args[0], args[1])
            if any(ports.get(sockets.get(fd, -1)) == MQTT_PORT for fd in fds):
                return "portal link (MQTT select)"
    return f"{comm} ({call_name})"


def event_loop_context(site: Site) -> dict[str, Any]:
    """What keeps the steady site's daemon busy, from its configuration and status."""
    doc = site.router_config()
    status = call(site.socket, "status")
    portal, outbound = doc.get("portal", {}), doc.get("outbound", {})
    return {
        "portal_connected": status.get("portal", {}).get("connected"),
        "portal_keepalive_s": portal.get("keepalive", 60),
        "portal_health_interval_s": portal.get("health_interval"),
        "outbound_configured": sorted(outbound),
        "outbound_egress": status.get("outbound", {}).get("egress", {}).get("mode"),
        "outbound_diagnose_interval_s": status.get("outbound", {})
        .get("diagnostics", {})
        .get("interval_s"),
        "outbound_tunnel": status.get("outbound", {}).get("tunnel", {}).get("state"),
        "devices_present": sum(1 for d in status.get("devices", []) if d.get("present")),
        "lan_clients": [c.name for c in site.clients],
    }


# -- 2: wake-ups --------------------------------------------------------------------------
def bench_wakeups(site: Site, window: float) -> dict[str, Any]:
    pid = site.daemon_pid()
    assert pid is not None
    names = {tid: thread_name(pid, tid, site.socket) for tid in thread_switches(pid)}
    # What the event loop may have heard: the kernel events it subscribes to (a passive
    # listener in the router namespace) and what it logged.
    log_path = site.dir / "energyhubd.log"
    log_offset = log_path.stat().st_size
    (site.dir / "bench").mkdir(exist_ok=True)
    kernel_log = site.dir / "bench" / "monitor.log"
    with open(kernel_log, "wb") as out:
        monitor = subprocess.Popen(
            ["ip", "-n", site.router, "-ts", "monitor", "link", "address", "route", "neigh"],
            stdout=out,
            stderr=subprocess.DEVNULL,
        )
    try:
        time.sleep(0.2)
        cpu_before = cpu_seconds(pid)
        before = thread_switches(pid)
        time.sleep(window)
        after = thread_switches(pid)
        cpu_after = cpu_seconds(pid)
    finally:
        monitor.terminate()
        monitor.wait(5)
    with open(log_path, "rb") as handle:
        handle.seek(log_offset)
        logged = handle.read().decode(errors="replace").splitlines()
    kernel = [line for line in kernel_log.read_text(errors="replace").splitlines() if line]
    neigh = [line for line in kernel if line.split()[-1] in NUD_WORDS]
    threads: list[dict[str, Any]] = []
    for tid in sorted(set(before) | set(after)):
        name = names.get(tid) or thread_name(pid, tid, site.socket)
        grown = after.get(tid, before.get(tid, 0)) - before.get(tid, 0)
        note = "" if tid in before and tid in after else ("new" if tid in after else "ended")
        threads.append({"tid": tid, "name": name, "switches": grown, "note": note})
    total = sum(t["switches"] for t in threads)
    main = sum(t["switches"] for t in threads if t["tid"] == pid)
    per_min = 60.0 / window
    return {
        "window_s": window,
        "total": total,
        "total_per_min": round(total * per_min, 1),
        "event_loop": main,
        "event_loop_per_min": round(main * per_min, 1),
        "others_per_min": round((total - main) * per_min, 1),
        "threads": [{**t, "per_min": round(t["switches"] * per_min, 1)} for t in threads],
        "cpu_ms": round((cpu_after - cpu_before) * 1000),
        "kernel_events": len(kernel),
        "neighbour_events": len(neigh),
        "kernel_event_lines": kernel[:40],
        "log_lines": logged[:40],
    }


# -- 1: join latency ----------------------------------------------------------------------
class LeaseWatch(threading.Thread):
    """When each MAC's line first appears in the lease file (inotify, no polling)."""

    def __init__(self, path: Path) -> None:
        super().__init__(name="lease-watch", daemon=True)
        self.path = path
        self.seen: dict[str, float] = {}
        self.watch = FileWatch(str(path))
        self.stopping = threading.Event()

    def scan(self, now: float) -> None:
        with contextlib.suppress(OSError):
            for line in self.path.read_text(errors="replace").splitlines():
                parts = line.split()
                if len(parts) >= 3:
                    self.seen.setdefault(parts[1].lower(), now)

    def run(self) -> None:
        self.scan(time.time())
        while not self.stopping.is_set():
            ready, _, _ = select.select([self.watch], [], [], 0.2)
            if ready:
                now = time.time()  # the write happened just before the wake-up
                if self.watch.drain():
                    self.scan(now)

    def stop(self) -> None:
        self.stopping.set()
        self.join(2)
        self.watch.close()


def wire_events(path: Path) -> list[dict[str, Any]]:
    events = []
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                events.append(json.loads(line))
    return events


def first_wire(events: list[dict[str, Any]], mac: str, kind: str) -> float | None:
    times = [e["t"] for e in events if e.get("mac") == mac and e.get("kind") == kind]
    return min(times) if times else None


def spawn(
    ns: str, cmd: list[str], log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """As ``Site.spawn``, but logging into the bench's own directory.

    The daemon watches the lab directory (its resolv file lives there) with inotify, so every
    line a lab process logs there wakes its event loop; the bench's files stay out of it.
    """
    with open(log, "ab") as out:
        return subprocess.Popen(
            netns.ns_cmd(ns, cmd),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )


def plug_in(
    site: Site, name: str, mac: str, hostname: str, script: Path, stamp: Path
) -> subprocess.Popen[bytes]:
    """As ``Site.add_client`` but with the stamping hook, and without waiting."""
    ns, sw = site.ns(name), site.ns("sw")
    netns.add_namespace(ns)
    port = f"p-{name}"[:15]
    netns.veth(sw, port, ns, "eth0", mac_b=mac)
    netns.ip(sw, "link", "set", port, "master", "sw")
    cmd = site.udhcpc("eth0", hostname)
    cmd[cmd.index("-s") + 1] = str(script)
    return spawn(ns, cmd, stamp.with_suffix(".log"), env={"BENCH_STAMP": str(stamp)})


def one_join(
    site: Site, index: int, script: Path, leases: LeaseWatch, wire_log: Path, poll: float
) -> dict[str, Any]:
    """Plug in one new client, poll the status until it shows with its lease, pull it out.

    Every time is kept as an absolute CLOCK_REALTIME stamp (``time.time()`` here, in the
    daemon and in the capture worker; ``date +%s.%N`` in the hook): one clock for all.
    """
    name = f"j{index:02d}"
    mac = f"02:bb:00:00:00:{index:02x}"
    # Every other client carries a unit host name: its classification needs the lease.
    hostname = f"energyhub-unit{100 + index}" if index % 2 == 0 else f"bench-{name}"
    stamp = script.parent / f"{name}.bound"
    client = plug_in(site, name, mac, hostname, script, stamp)
    started = time.time()
    first_any: dict[str, Any] | None = None
    first_lease: dict[str, Any] | None = None
    polls, call_s = 0, []
    deadline = started + 20
    while time.time() < deadline and first_lease is None:
        sent = time.time()
        try:
            devices = call(site.socket, "status", timeout=5).get("devices", [])
        except ControlError:
            devices = []
        got = time.time()
        polls += 1
        call_s.append(got - sent)
        mine = next((d for d in devices if d.get("mac") == mac and d.get("present")), None)
        if mine is not None:
            sighting = {"t": got, "sent": sent, "device": mine}
            first_any = first_any or sighting
            if mine.get("lease_ip") and mine.get("hostname"):
                first_lease = sighting
        if first_lease is None:
            time.sleep(poll)
    for _ in range(100):  # the hook runs after the ACK; give it a moment to land
        if stamp.exists() or first_lease is None:
            break
        time.sleep(0.01)
    events = [
        e
        for e in call(site.socket, "status").get("events", [])
        if (e.get("data") or {}).get("mac") == mac
    ]
    time.sleep(0.05)  # let the capture worker's last line land
    wire = wire_events(wire_log)
    site.remove_client(name)  # SIGTERM: udhcpc -R releases the lease on its way out
    with contextlib.suppress(subprocess.TimeoutExpired):
        client.wait(5)

    def event_time(kind: str) -> float | None:
        return next((e["time"] for e in events if e["kind"] == kind), None)

    return {
        "mac": mac,
        "hostname": hostname,
        "ip": (first_lease or first_any or {}).get("device", {}).get("ip"),
        "polls": polls,
        "call_ms_median": round(statistics.median(call_s) * 1000, 2) if call_s else None,
        "first_role": first_any["device"]["role"] if first_any else None,
        "first_hostname": first_any["device"]["hostname"] if first_any else None,
        "final_role": first_lease["device"]["role"] if first_lease else None,
        "unknown_device_raised": event_time("unknown_device") is not None,
        # the last poll's round trip: the sighting is at most this much late, plus the interval
        "lease_poll_rtt_ms": (
            round((first_lease["t"] - first_lease["sent"]) * 1000, 2) if first_lease else None
        ),
        "t": {
            "client_start": started,
            "offer": first_wire(wire, mac, "offer"),
            "ack": first_wire(wire, mac, "ack"),
            "bound": float(stamp.read_text().split()[0]) if stamp.exists() else None,
            "lease_line": leases.seen.get(mac),
            "status_any": first_any["t"] if first_any else None,
            "status_lease": first_lease["t"] if first_lease else None,
            "first_seen": first_any["device"]["first_seen"] if first_any else None,
            "event_joined": event_time("device_joined"),
            "event_changed": event_time("device_changed"),
            # The registry event raised when the lease was read: a device announced only
            # with its lease joins then (device_joined); one seen earlier without it changes.
            "event_lease": event_time("device_changed") or event_time("device_joined"),
        },
    }


def since(samples: list[dict[str, Any]], key: str, zero: str) -> list[float]:
    """``t[key] - t[zero]`` in ms for every sample that has both."""
    out = []
    for sample in samples:
        t = sample["t"]
        if t.get(key) is not None and t.get(zero) is not None:
            out.append((t[key] - t[zero]) * 1000)
    return out


def bench_joins(site: Site, joins: int, poll: float, gap: float, linger: float) -> dict[str, Any]:
    work = site.dir / "bench"
    work.mkdir(exist_ok=True)
    script = work / "udhcpc.sh"
    script.write_text(STAMP_SCRIPT.format(lab_script=site.dir / "udhcpc.sh"))
    script.chmod(0o755)
    wire_log = work / "capture.log"
    capture = spawn(site.ns("sw"), [PYTHON, "-c", CAPTURE_WORKER, "uplink"], wire_log)
    site.wait_for(lambda: wire_log.exists() and wire_log.stat().st_size > 0, 10, "no capture")
    leases = LeaseWatch(site.lease_file)
    leases.start()
    samples = []
    try:
        for index in range(1, joins + 1):
            samples.append(one_join(site, index, script, leases, wire_log, poll))
            time.sleep(gap)
    finally:
        leases.stop()
        capture.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            capture.wait(5)
    # Each removed client released its lease on the way out: how long does it stay present?
    removed_at = time.time()
    gone_after = None
    while time.time() < removed_at + linger:
        lingering = [
            {"mac": d["mac"], "neighbour": d.get("neighbour"), "lease_ip": d.get("lease_ip")}
            for d in call(site.socket, "status").get("devices", [])
            if d["mac"].startswith("02:bb:") and d.get("present")
        ]
        if not lingering:
            gone_after = round(time.time() - removed_at, 1)
            break
        time.sleep(0.25)
    units = [s for s in samples if s["hostname"].startswith("energyhub-unit")]
    in_status = since(samples, "status_lease", "ack")
    return {
        "joins": joins,
        "poll_ms": poll * 1000,
        "gap_s": gap,
        "call_ms": summary([s["call_ms_median"] for s in samples if s["call_ms_median"]]),
        # t=0: the DHCPACK on the wire
        "from_ack": {
            "status_lease": summary(in_status),
            "lease_line": summary(since(samples, "lease_line", "ack")),
            "event_changed": summary(since(samples, "event_changed", "ack")),
            "bound_hook": summary(since(samples, "bound", "ack")),
            "status_any": summary(since(samples, "status_any", "ack")),
            "offer": summary(since(samples, "offer", "ack")),
            "client_start": summary(since(samples, "client_start", "ack")),
        },
        # t=0: the udhcpc `bound` hook on the client
        "from_bound": {
            "status_lease": summary(since(samples, "status_lease", "bound")),
            "lease_line": summary(since(samples, "lease_line", "bound")),
        },
        "daemon_share": summary(since(samples, "status_lease", "lease_line")),
        "settle_and_read": summary(since(samples, "event_lease", "lease_line")),
        "event_to_status": summary(since(samples, "status_lease", "event_lease")),
        "within_target": sum(1 for v in in_status if v <= TARGET_MS),
        "seen_with_lease": len(in_status),
        "first_sighting_without_lease": sum(
            1 for s in samples if s["first_role"] is not None and s["first_hostname"] is None
        ),
        "joined_at_offer": summary(since(samples, "event_joined", "offer")),
        "units": len(units),
        "units_reported_unknown": sum(
            1 for s in units if s["unknown_device_raised"] and s["final_role"] == "unit"
        ),
        "lingering_after_removal": lingering,
        "linger_wait_s": linger,
        "all_gone_after_s": gone_after,
        "samples": samples,
    }


# -- output -------------------------------------------------------------------------------
def fmt(s: dict[str, Any]) -> str:
    if not s.get("n"):
        return "no samples"
    return f"median {s['median']} ms, p90 {s['p90']} ms, worst {s['worst']} ms (n={s['n']})"


def render(result: dict[str, Any]) -> str:
    j, w, c = result["joins"], result["wakeups"], result["context"]
    a, b = j["from_ack"], j["from_bound"]
    lines = [
        f"join latency, {j['joins']} new clients (one every ~{j['gap_s']:.0f} s), status polled "
        f"every {j['poll_ms']:.0f} ms (one status call {j['call_ms'].get('median')} ms).",
        "t=0 is the DHCPACK on the wire (kernel stamp on the switch uplink):",
        f"  device in status with its lease      {fmt(a['status_lease'])}; "
        f"{j['within_target']}/{j['seen_with_lease']} within {TARGET_MS:.0f} ms",
        f"  baseline: lease line in lease file   {fmt(a['lease_line'])}",
        f"  daemon's own share (status - file)   {fmt(j['daemon_share'])}",
        f"    of which settle + read (event)     {fmt(j['settle_and_read'])}",
        f"    of which event -> seen in status   {fmt(j['event_to_status'])}",
        f"  udhcpc `bound` hook on the client    {fmt(a['bound_hook'])}",
        f"  device in status at all              {fmt(a['status_any'])}",
        f"  DHCPOFFER on the wire                {fmt(a['offer'])}",
        f"  client started (udhcpc spawned)      {fmt(a['client_start'])}",
        "t=0 is the client's `bound` hook:",
        f"  device in status with its lease      {fmt(b['status_lease'])}",
        f"  baseline: lease line in lease file   {fmt(b['lease_line'])}",
        f"first sighting without a lease (no host name, role from MAC only): "
        f"{j['first_sighting_without_lease']}/{j['joins']}, device_joined after the OFFER by "
        f"{fmt(j['joined_at_offer'])}",
        f"unit-named clients that raised unknown_device: {j['units_reported_unknown']}/"
        f"{j['units']}",
        "removed clients (lease released): all gone from status "
        + (
            f"{j['all_gone_after_s']} s after the last removal"
            if j["all_gone_after_s"] is not None
            else f"not within {j['linger_wait_s']:.0f} s: {j['lingering_after_removal']}"
        ),
        f"wake-ups over {w['window_s']:.0f} s idle: {w['total_per_min']} /min in total, "
        f"event loop {w['event_loop_per_min']} /min, others {w['others_per_min']} /min; "
        f"daemon CPU {w['cpu_ms']} ms; kernel events it listens to: {w['kernel_events']} "
        f"({w['neighbour_events']} neighbour); lines it logged: {len(w['log_lines'])}",
    ]
    for t in w["threads"]:
        note = f" [{t['note']}]" if t["note"] else ""
        lines.append(
            f"  {t['name']:<30} tid {t['tid']:<8} {t['switches']:>5} ({t['per_min']} /min){note}"
        )
    lines.append(
        f"context: portal connected={c['portal_connected']}, keepalive {c['portal_keepalive_s']} s,"
        f" health every {c['portal_health_interval_s']} s; outbound egress {c['outbound_egress']},"
        f" diagnostics every {c['outbound_diagnose_interval_s']} s; "
        f"{c['devices_present']} devices present ({', '.join(c['lan_clients'])})"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument("--joins", type=int, default=20, help="clients to join (20, max 40)")
    parser.add_argument("--poll", type=float, default=5.0, help="status poll interval, ms (5)")
    parser.add_argument("--gap", type=float, default=1.0, help="pause between joins, s (1)")
    parser.add_argument(
        "--linger", type=float, default=30.0, help="wait for removed clients to leave, s (30)"
    )
    parser.add_argument("--settle", type=float, default=5.0, help="quiet before the window (5)")
    parser.add_argument("--window", type=float, default=60.0, help="wake-up window, s (60)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench/inventory.py needs root (it creates network namespaces)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    site = Site(prefix=f"ehI{secrets.token_hex(2)}")
    progress = (lambda m: print(m, file=sys.stderr)) if not args.json else (lambda m: None)
    started = time.monotonic()
    try:
        progress(f"lab site up ({site.prefix})")
        site.up(lambda m: None)
        time.sleep(args.settle)
        context = event_loop_context(site)
        progress(f"wake-ups: {args.window:.0f} s window, nobody talking to the daemon")
        wakeups = bench_wakeups(site, args.window)
        progress(f"joins: {args.joins} new clients")
        joins = bench_joins(site, min(args.joins, 40), args.poll / 1000, args.gap, args.linger)
    finally:
        site.down()
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": {"nproc": os.cpu_count(), "kernel": platform.release()},
        "context": context,
        "wakeups": wakeups,
        "joins": joins,
        "wall_seconds": round(time.monotonic() - started, 1),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(render(result))
        print(f"(benchmark wall time {result['wall_seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
