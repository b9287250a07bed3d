"""Fleet benchmark: N of the project's own portal links against one local mosquitto.

Every site is a real ``PortalLink`` (its own thread, mutual TLS with its own certificate, the
directional ACL) plus a real ``PushController`` with a stub apply; the portal side is the lab's
reference ``PortalStandIn`` (answers ``config/get``). All in this process, on loopback.

Scenarios, in order (each waits until every connection has held ``backoff_reset_after``):

1. connect-all: every link started at once (worst case: a region's power returns);
2. broker outage of 1 s, then 10 s (events published by every site while it is down):
   busiest second of reconnects as a share of the fleet; events lost;
3. push to all (a WAN change: confirmed over a fresh connection): push -> confirmed p50/p99,
   busiest second of the confirm reconnects; then a LAN-only push (confirmed live);
4. broker restart with an EMPTY store (no retained desired anywhere) while the portal's
   desired state changed: every site must end with reported = desired through ``config/get``;
5. memory per link.

Baselines, same run: the 1 s outage and the push repeated by a smaller fleet with the old
settings (first retry 0.5-1 s, backoff reset at CONNACK, immediate fresh reconnect); N
sequential TLS handshakes as the floor of connect-all; an idle thread blocked in ``poll`` as
the floor of memory per link. No assertions: this reports, it does not judge.

Run: ``.venv/bin/python bench/fleet.py [--sites 1000] [--json]`` (``make bench``). Uses only
loopback and a temporary directory (in /dev/shm when present), removed afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import resource
import select
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import trustme

from energyhub_lab.portal import PortalStandIn
from energyhubd.config.sections.portal import PortalSettings
from energyhubd.portal.controller import PushController
from energyhubd.portal.link import LinkState, PortalLink
from energyhubd.portal.store import ConfigStore
from energyhubd.portal.topics import mosquitto_acl

HOLD = 30.0  # backoff_reset_after (the default)
OLD = {"backoff_initial": 1.0, "backoff_max": 60.0, "backoff_reset_after": 1.0,
       "fresh_confirm_delay": 0.0}  # fmt: skip


def rss_kib() -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def busiest_share(times: list[float], n: int) -> float:
    """Largest number of events in any one-second bucket, as a share of ``n``."""
    if not times:
        return 0.0
    start = min(times)
    counts = Counter(int(t - start) for t in times)
    return max(counts.values()) / n


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Pki:
    def __init__(self, directory: Path, n: int, prefix: str) -> None:
        ca = trustme.CA()
        self.ca = directory / "ca.pem"
        ca.cert_pem.write_to_path(str(self.ca))
        server = ca.issue_cert("localhost")
        self.server_cert = directory / "server.pem"
        self.server_key = directory / "server.key"
        self.server_cert.write_bytes(b"".join(b.bytes() for b in server.cert_chain_pems))
        server.private_key_pem.write_to_path(str(self.server_key))
        self.clients: dict[str, tuple[Path, Path]] = {}
        for name in [*(f"{prefix}{i:05d}" for i in range(n)), "portal"]:
            leaf = ca.issue_cert(f"{name}.devices.test", common_name=name)
            cert, key = directory / f"{name}.pem", directory / f"{name}.key"
            cert.write_bytes(b"".join(b.bytes() for b in leaf.cert_chain_pems))
            leaf.private_key_pem.write_to_path(str(key))
            self.clients[name] = (cert, key)

    def context(self, name: str) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca))
        ctx.load_cert_chain(*map(str, self.clients[name]))
        return ctx


class Broker:
    def __init__(self, pki: Pki, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        acl = workdir / "acl"
        acl.write_text(mosquitto_acl("portal"))
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(
            f"per_listener_settings false\nallow_anonymous false\nuser root\n"
            f"persistence true\npersistence_location {workdir}/\nlog_dest none\n"
            f"acl_file {acl}\nmax_queued_messages 1000000\nmax_inflight_messages 0\n"
            f"message_size_limit 1048576\n"
            f"listener {self.port} 127.0.0.1\ncafile {pki.ca}\ncertfile {pki.server_cert}\n"
            f"keyfile {pki.server_key}\nrequire_certificate true\n"
            "use_identity_as_username true\n"
        )

    def start(self) -> None:
        def limits() -> None:
            hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

        self.proc = subprocess.Popen(
            ["mosquitto", "-c", str(self.conf)], preexec_fn=limits,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError("mosquitto did not start")

    def stop(self, sig: int = signal.SIGTERM, wipe: bool = False) -> None:
        if self.proc is not None:
            self.proc.send_signal(sig)
            self.proc.wait(30)
            self.proc = None
        if wipe:
            for db in self.workdir.glob("*.db"):
                db.unlink()


class Dispatcher:
    """The daemon event loop in miniature, shared by every site: runs posted callables in
    order on one thread and ticks the pending confirm windows once a second."""

    def __init__(self) -> None:
        self.queue: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self.sites: list[Site] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def post(self, fn: Callable[[], None]) -> None:
        self.queue.put(fn)

    def _run(self) -> None:
        next_tick = time.monotonic() + 1
        while True:
            try:
                fn = self.queue.get(timeout=max(0.0, next_tick - time.monotonic()))
            except queue.Empty:
                fn = None
            else:
                if fn is None:
                    return
                fn()
            if time.monotonic() >= next_tick:
                next_tick = time.monotonic() + 1
                for site in self.sites:
                    if site.controller.pending:
                        site.controller.tick()

    def stop(self) -> None:
        self.queue.put(None)
        self.thread.join(10)


class Site:
    """One simulated router: the real link and push controller, a stub apply."""

    def __init__(
        self, name: str, pki: Pki, port: int, root: Path, disp: Dispatcher, **overrides: Any
    ) -> None:
        self.name = name
        cert, key = pki.clients[name]
        values: dict[str, Any] = {"host": "localhost", "port": port, "server_name": "localhost",
                                  "ca_file": str(pki.ca), "cert_file": str(cert),
                                  "key_file": str(key)}  # fmt: skip
        values.update(overrides)
        self.settings = PortalSettings(**values)
        self.connects: list[float] = []
        self.states: list[LinkState] = []
        self.confirmed: dict[int, float] = {}  # version -> when reported applied
        state_dir = root / name
        self.controller = PushController(
            ConfigStore(str(state_dir / "portal")), self.settings, name,
            apply=lambda _doc, _cfg: None, restore=lambda _doc: None,
            publish_reported=self._reported, request_round_trip=self._round_trip,
            validate=lambda doc: doc,
        )  # fmt: skip
        self.link = PortalLink(
            self.settings, name, disp.post, software_version="bench",
            applied_version=lambda: self.controller.applied_version,
            applied_epoch=lambda: self.controller.machine.epoch,
            on_state=self._state, on_desired=self._desired,
            on_round_trip=self.controller.on_round_trip, state_dir=str(state_dir / "portal"),
        )  # fmt: skip
        self.controller.startup()

    def _desired(self, payload: bytes) -> None:
        self.controller.on_desired(payload)

    def _reported(self, doc: dict[str, Any]) -> None:
        if doc.get("state") == "applied" and doc.get("applied_version") is not None:
            self.confirmed.setdefault(int(doc["applied_version"]), time.monotonic())
        self.link.publish_reported(doc)

    def _round_trip(self, token: int, fresh: bool) -> None:
        self.link.request_round_trip(token, fresh)

    def _state(self, state: LinkState) -> None:
        self.states.append(state)
        if state.connected and state.reason == "connected":
            self.connects.append(state.at)  # the link thread's CONNACK time, not the queue's
        self.controller.on_link_state(state)

    @property
    def connected(self) -> bool:
        return bool(self.states) and self.states[-1].connected


class Observer:
    """The portal's monitoring side: a persistent session collecting events."""

    def __init__(self, ctx: ssl.SSLContext, port: int) -> None:
        kwargs: dict[str, Any] = {"client_id": "bench-observer", "clean_session": False}
        api = getattr(mqtt, "CallbackAPIVersion", None)
        if api is not None:
            kwargs["callback_api_version"] = api.VERSION2
        self.client = mqtt.Client(**kwargs)
        self.client.tls_set_context(ctx)
        self.client.max_inflight_messages_set(1000)
        self.client.reconnect_delay_set(1, 2)
        self.events: set[tuple[str, str, int]] = set()
        self.lock = threading.Lock()
        ready = threading.Event()
        self.client.on_connect = lambda c, *_a: c.subscribe("energyhub/+/events", qos=1)
        self.client.on_subscribe = lambda *_a: ready.set()
        self.client.on_message = self._message
        self.client.connect("localhost", port, 30)
        self.client.loop_start()
        if not ready.wait(15):
            raise RuntimeError("observer did not subscribe")

    def _message(self, _c: Any, _u: Any, msg: Any) -> None:
        try:
            doc = json.loads(msg.payload)
        except ValueError:
            return
        if doc.get("type") == "sample":
            with self.lock:
                self.events.add((msg.topic.split("/")[1], doc["run"], doc["seq"]))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def portal_child(argv: list[str]) -> int:
    """The portal side in its own process: the reference stand-in answering ``config/get``
    and the observer counting events. Its own process because paho waits with
    ``select()``: after a broker restart its new sockets would get descriptor numbers above
    the thousands the links hold, beyond what ``select()`` accepts. Commands are JSON lines
    on stdin, answers JSON lines on stdout."""
    ca, cert, key, port = argv[0], argv[1], argv[2], int(argv[3])
    ctx = ssl.create_default_context(cafile=ca)
    ctx.load_cert_chain(cert, key)
    desired: dict[str, bytes] = {}
    portal = PortalStandIn("localhost", port, ctx, desired.get, client_id="bench-portal")
    observer = Observer(ctx, port)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["op"] == "set":
            for device, payload in cmd["docs"].items():
                desired[device] = payload.encode()
                if cmd.get("push"):
                    portal.push(device, desired[device])
            answer: dict[str, Any] = {"ok": True}
        elif cmd["op"] == "stats":
            with observer.lock:
                events = len(observer.events)
            answer = {"answered": portal.answered, "events": events}
        else:
            break
        print(json.dumps(answer), flush=True)
    portal.close()
    observer.close()
    return 0


class PortalProcess:
    def __init__(self, pki: Pki, port: int) -> None:
        cert, key = pki.clients["portal"]
        cmd = [sys.executable, str(Path(__file__).resolve()), "--portal-child",
               str(pki.ca), str(cert), str(key), str(port)]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        if self._read().get("ready") is not True:
            raise RuntimeError("portal process did not start")

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("portal process ended")
        return dict(json.loads(line))

    def call(self, **cmd: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd).encode() + b"\n")
        self.proc.stdin.flush()
        return self._read()

    def set(self, docs: dict[str, bytes], push: bool) -> None:
        self.call(op="set", docs={k: v.decode() for k, v in docs.items()}, push=push)

    def stats(self) -> dict[str, Any]:
        return self.call(op="stats")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.call(op="quit")
        with contextlib.suppress(Exception):
            self.proc.wait(10)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def wait(predicate: Callable[[], bool], timeout: float, step: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


class Fleet:
    def __init__(
        self, n: int, pki: Pki, broker: Broker, root: Path, first: int = 0, **overrides: Any
    ) -> None:
        self.disp = Dispatcher()
        self.sites = [
            Site(f"eh-{first + i:05d}", pki, broker.port, root, self.disp, **overrides)
            for i in range(n)
        ]
        self.disp.sites = self.sites

    def start(self) -> None:
        for site in self.sites:
            site.link.start()

    def stop(self) -> None:
        # In parallel: one by one, each clean stop's DISCONNECT flush would add up.
        threads = [threading.Thread(target=s.link.stop, args=(10,)) for s in self.sites]
        for t in threads:
            t.start()
        for t in threads:
            t.join(15)
        self.disp.stop()

    def all_connected(self) -> bool:
        return all(s.connected for s in self.sites)

    def all_held(self) -> bool:
        return all(s.connected and s.link.backoff.attempt == 0 for s in self.sites)

    def connects_since(self, t0: float) -> list[float]:
        return [t for s in self.sites for t in s.connects if t >= t0]

    def outage(self, broker: Broker, seconds: float, during: Callable[[], None] = lambda: None,
               timeout: float = 600) -> dict[str, Any]:  # fmt: skip
        n = len(self.sites)
        broker.stop()
        t0 = time.monotonic()
        wait(lambda: not any(s.connected for s in self.sites), 30, 0.05)
        during()
        time.sleep(max(0.0, seconds - (time.monotonic() - t0)))
        broker.start()
        t_up = time.monotonic()
        done = wait(lambda: all(any(t >= t_up for t in s.connects) for s in self.sites), timeout)
        times = [min(t for t in s.connects if t >= t_up) for s in self.sites if
                 any(t >= t_up for t in s.connects)]  # fmt: skip
        return {
            "outage_s": seconds,
            "all_back": done,
            "back_within_s": round(max(times) - t_up, 1) if times else None,
            "busiest_second_share": round(busiest_share(times, n), 4),
            "busiest_second_sites": round(busiest_share(times, n) * n),
        }

    def push(self, portal: PortalProcess, version: int, doc: dict[str, Any],
             timeout: float = 600) -> dict[str, Any]:  # fmt: skip
        n = len(self.sites)
        docs = {s.name: json.dumps({"version": version, "device_id": s.name, **doc}).encode()
                for s in self.sites}  # fmt: skip
        t0 = time.monotonic()
        portal.set(docs, push=True)
        done = wait(lambda: all(version in s.confirmed for s in self.sites), timeout)
        latencies = [s.confirmed[version] - t0 for s in self.sites if version in s.confirmed]
        reconnects = self.connects_since(t0)
        return {
            "all_confirmed": done,
            "confirmed": len(latencies),
            "p50_s": round(statistics.median(latencies), 2) if latencies else None,
            "p99_s": round(pct(latencies, 0.99), 2) if latencies else None,
            "reconnects": len(reconnects),
            "busiest_second_reconnects_share": round(busiest_share(reconnects, n), 4),
        }


def tls_floor(pki: Pki, port: int, name: str, count: int) -> float:
    """Seconds for ``count`` sequential TLS handshakes (with client certificate) + close."""
    ctx = pki.context(name)
    start = time.perf_counter()
    for _ in range(count):
        raw = socket.create_connection(("127.0.0.1", port))
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.do_handshake()
    return (time.perf_counter() - start) / count


def thread_floor_kib(count: int) -> float:
    """RSS of ``count`` idle threads, each blocked in poll on its own pipe (KiB per thread)."""
    before = rss_kib()
    stop_r, stop_w = os.pipe()

    def idle() -> None:
        poller = select.poll()
        poller.register(stop_r, select.POLLIN)
        poller.poll()

    threads = [threading.Thread(target=idle, daemon=True) for _ in range(count)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    per = (rss_kib() - before) / count
    os.write(stop_w, b"x")
    for t in threads:
        t.join(5)
    os.close(stop_r)
    os.close(stop_w)
    return per


def run(n: int, baseline_n: int, log: Callable[[str], None]) -> dict[str, Any]:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    work = Path(tempfile.mkdtemp(prefix="eh-fleet-", dir=base))
    out: dict[str, Any] = {"sites": n}
    broker: Broker | None = None
    fleet: Fleet | None = None
    portal: PortalProcess | None = None
    try:
        log(f"certificates for {n + baseline_n} sites ...")
        pki = Pki(work, n + baseline_n, "eh-")
        (work / "broker").mkdir()
        broker = Broker(pki, work / "broker")
        broker.start()
        portal = PortalProcess(pki, broker.port)
        floor_tls = tls_floor(pki, broker.port, "eh-00000", 200)
        out["floor_tls_handshake_ms"] = round(floor_tls * 1000, 2)
        out["floor_thread_kib"] = round(thread_floor_kib(min(n, 500)), 1)

        rss0 = rss_kib()
        fleet = Fleet(n, pki, broker, work / "sites")
        t0 = time.monotonic()
        fleet.start()
        ok = wait(fleet.all_connected, 600)
        out["connect_all_s"] = round(time.monotonic() - t0, 2)
        out["connect_all_ok"] = ok
        out["connect_all_floor_s"] = round(floor_tls * n, 2)
        # Every site asked for its desired state and got the answer "none".
        portal_ = portal
        wait(lambda: portal_.stats()["answered"] >= n, 120, 1.0)
        out["desired_requests_answered"] = portal_.stats()["answered"]
        out["memory_per_link_kib"] = round((rss_kib() - rss0) / n, 1)
        log(f"connect-all {out['connect_all_s']} s; memory {out['memory_per_link_kib']} KiB/link")

        wait(fleet.all_held, HOLD + 60)
        out["outage_1s"] = fleet.outage(broker, 1.0)
        log(f"1 s outage: {out['outage_1s']}")

        wait(fleet.all_held, HOLD + 120)
        per_site = 3

        def publish_events() -> None:
            for site in fleet.sites:  # type: ignore[union-attr]
                for i in range(per_site):
                    site.link.publish_event("sample", {"i": i})

        out["outage_10s"] = fleet.outage(broker, 10.0, publish_events)
        expected = n * per_site
        wait(lambda: portal_.stats()["events"] >= expected, 120, 1.0)
        out["events_published"] = expected
        out["events_lost"] = expected - portal_.stats()["events"]
        log(f"10 s outage: {out['outage_10s']}; events lost {out['events_lost']}")

        wait(fleet.all_held, HOLD + 120)
        out["push_wan"] = fleet.push(portal, 1, {"wan": {"proto": "dhcp", "mtu": 1500}})
        log(f"push (fresh confirm): {out['push_wan']}")
        lan = {"wan": {"proto": "dhcp", "mtu": 1500}, "lan": {"lease": "12h"}}
        out["push_lan"] = fleet.push(portal, 2, lan)
        log(f"push (live confirm): {out['push_lan']}")

        # Broker restart with an empty store while the desired state changes: nothing
        # retained anywhere, every site must get version 3 by asking the portal.
        wait(fleet.all_held, HOLD + 120)
        broker.stop(signal.SIGKILL, wipe=True)
        docs = {s.name: json.dumps({"version": 3, "device_id": s.name,
                                    "wan": {"proto": "dhcp", "mtu": 1500},
                                    "lan": {"lease": "6h"}}).encode()
                for s in fleet.sites}  # fmt: skip
        portal.set(docs, push=False)  # the portal's state changes; nothing is published
        t_up = time.monotonic()
        broker.start()
        synced = wait(lambda: all(3 in s.confirmed for s in fleet.sites), 900)  # type: ignore[union-attr]
        times = [s.confirmed[3] - t_up for s in fleet.sites if 3 in s.confirmed]
        out["restart_resync"] = {
            "all_synchronised": synced,
            "unsynchronised": n - len(times),
            "p50_s": round(statistics.median(times), 2) if times else None,
            "max_s": round(max(times), 2) if times else None,
            "busiest_second_share": round(busiest_share(fleet.connects_since(t_up), n), 4),
        }
        log(f"restart with empty store: {out['restart_resync']}")
        fleet.stop()
        fleet = None

        if baseline_n:
            log(f"baseline: {baseline_n} sites with the old settings ...")
            # Its own certificates: numbered after the main fleet's.
            old = Fleet(baseline_n, pki, broker, work / "old", first=n, **OLD)
            fleet = old
            old.start()
            wait(old.all_connected, 300)
            time.sleep(2)
            out["baseline_outage_1s"] = old.outage(broker, 1.0)
            wait(old.all_connected, 120)
            time.sleep(2)
            out["baseline_push_wan"] = old.push(portal, 11, {"wan": {"mtu": 1400}})
            log(f"baseline: {out['baseline_outage_1s']}; {out['baseline_push_wan']}")
    finally:
        if fleet is not None:
            fleet.stop()
        if portal is not None:
            portal.close()
        if broker is not None:
            broker.stop(signal.SIGKILL)
        shutil.rmtree(work, ignore_errors=True)
    return out


def _ratio(value: float, floor: float) -> str:
    return f"x{value / floor:.1f}" if floor else "-"


def report(r: dict[str, Any]) -> str:
    n = r["sites"]
    out = [f"fleet benchmark: {n} portal links, one mosquitto on loopback, mutual TLS"]
    floor = r["connect_all_floor_s"]
    out.append(f"  connect-all: {r['connect_all_s']} s (floor: {n} sequential TLS handshakes "
               f"{floor} s, {_ratio(r['connect_all_s'], floor)})")  # fmt: skip
    mem, tfloor = r["memory_per_link_kib"], r["floor_thread_kib"]
    out.append(f"  memory per link: {mem} KiB (floor: an idle thread in poll {tfloor} KiB, "
               f"{_ratio(mem, tfloor)})")  # fmt: skip
    for key, label in (("outage_1s", "1 s"), ("outage_10s", "10 s")):
        o = r[key]
        line = f"  {label} broker outage: busiest second {o['busiest_second_share']:.1%}"
        line += f" of the fleet ({o['busiest_second_sites']} sites)"
        line += f", all back within {o['back_within_s']} s"
        old = r.get("baseline_" + key)
        if old:
            line += f" (old settings, same run: {old['busiest_second_share']:.1%})"
        out.append(line)
    out.append(f"  events lost over the 10 s outage: {r['events_lost']} of {r['events_published']}")
    for key, label in (("push_wan", "push, WAN change (fresh confirm)"),
                       ("push_lan", "push, LAN change (live confirm)")):  # fmt: skip
        p = r[key]
        line = f"  {label}: {p['confirmed']}/{n} confirmed, p50 {p['p50_s']} s"
        line += f", p99 {p['p99_s']} s, busiest second of reconnects"
        line += f" {p['busiest_second_reconnects_share']:.1%}"
        old = r.get("baseline_" + key)
        if old:
            line += f" (old settings: {old['busiest_second_reconnects_share']:.1%}"
            line += f", p50 {old['p50_s']} s)"
        out.append(line)
    s = r["restart_resync"]
    out.append(f"  broker restart, empty store: {n - s['unsynchronised']}/{n} synchronised "
               f"(unsynchronised {s['unsynchronised']}), p50 {s['p50_s']} s, last {s['max_s']} s"
               f", busiest second {s['busiest_second_share']:.1%}")  # fmt: skip
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--portal-child"]:
        return portal_child(argv[1:])
    # SIGTERM (e.g. from timeout) must still run the clean-up in ``run``.
    signal.signal(signal.SIGTERM, lambda *_a: sys.exit(143))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=1000)
    parser.add_argument("--baseline-sites", type=int, default=None,
                        help="sites of the old-settings baseline (default: a quarter)")  # fmt: skip
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    baseline = args.baseline_sites if args.baseline_sites is not None else args.sites // 4

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    result = run(args.sites, baseline, log)
    print(json.dumps(result, indent=1) if args.json else report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
