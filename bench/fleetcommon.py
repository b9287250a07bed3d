"""What the fleet benchmarks share: N simulated sites with the project's own portal links.

Every site is a real ``PortalLink`` (its own thread, mutual TLS with its own certificate, the
directional ACL) plus a real ``PushController`` with a stub apply, all in one process on
loopback; the portal side (the lab's reference ``PortalStandIn`` answering ``config/get``,
and an observer counting events) runs in a child process (``PortalProcess``). Used by
``bench/fleet.py`` (one mosquitto) and ``bench/fleet_cluster.py`` (a RabbitMQ cluster): the
sites, the scenarios' measurements, the floors, the report lines both print, the working
directory.

Threading contract: each site's link runs on its own thread and posts every callback to the
fleet's ``Dispatcher``, one thread that runs them in order (the daemon's event loop in
miniature) and owns every ``Site``'s controller and lists; the benchmark's main thread reads
those lists while waiting (appends and reads of a list are atomic) and starts and stops the
links. The ``Observer`` collects events on paho's thread under its lock.
"""

from __future__ import annotations

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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import paho.mqtt.client as mqtt
import trustme

from energyhub_lab.portal import PortalStandIn
from energyhubd.config.sections.portal import PortalSettings
from energyhubd.portal.controller import PushController
from energyhubd.portal.link import LinkState, PortalLink
from energyhubd.portal.store import ConfigStore

HOLD = 30.0  # backoff_reset_after (the default)


def rss_kib() -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


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


class Endpoint(Protocol):
    """What a fleet needs of its broker: where it listens, and an outage on request."""

    port: int

    def stop(self) -> None: ...

    def start(self) -> None: ...


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
    on stdin, answers JSON lines on stdout. ``argv``: CA, certificate, key, broker port, and
    the stand-in's MQTT protocol ("5", or "3.1.1" for a broker that refuses MQTT 5)."""
    ca, cert, key, port, protocol = argv[0], argv[1], argv[2], int(argv[3]), argv[4]
    ctx = ssl.create_default_context(cafile=ca)
    ctx.load_cert_chain(cert, key)
    desired: dict[str, bytes] = {}
    portal = PortalStandIn(
        "localhost", port, ctx, desired.get, client_id="bench-portal", protocol=protocol
    )
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
    """``portal_child`` started from this file, with the "portal" identity of ``pki``."""

    def __init__(self, pki: Pki, port: int, protocol: str = "5") -> None:
        cert, key = pki.clients["portal"]
        cmd = [sys.executable, str(Path(__file__).resolve()), "--portal-child",
               str(pki.ca), str(cert), str(key), str(port), protocol]  # fmt: skip
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
        self, n: int, pki: Pki, broker: Endpoint, root: Path, first: int = 0, **overrides: Any
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

    def outage(self, broker: Endpoint, seconds: float, during: Callable[[], None] = lambda: None,
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

    def connect_all(self, floor_tls: float, timeout: float = 600) -> dict[str, Any]:
        """Every link started at once; the time until all are connected, beside ``floor_tls``
        (one TLS handshake) times the fleet's size."""
        t0 = time.monotonic()
        self.start()
        ok = wait(self.all_connected, timeout)
        return {
            "connect_all_s": round(time.monotonic() - t0, 2),
            "connect_all_ok": ok,
            "connect_all_floor_s": round(floor_tls * len(self.sites), 2),
        }

    def desired(self, version: int, doc: dict[str, Any]) -> dict[str, bytes]:
        """Each site's desired document: ``doc`` with the version and the site's id."""
        return {s.name: json.dumps({"version": version, "device_id": s.name, **doc}).encode()
                for s in self.sites}  # fmt: skip

    def push(self, portal: PortalProcess, version: int, doc: dict[str, Any],
             timeout: float = 600) -> dict[str, Any]:  # fmt: skip
        n = len(self.sites)
        t0 = time.monotonic()
        portal.set(self.desired(version, doc), push=True)
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

    def synchronised(self, version: int, since: float, timeout: float = 900) -> dict[str, Any]:
        """Waits until every site confirmed ``version``; how long after ``since`` they did."""
        n = len(self.sites)
        done = wait(lambda: all(version in s.confirmed for s in self.sites), timeout)
        times = [s.confirmed[version] - since for s in self.sites if version in s.confirmed]
        return {
            "all_synchronised": done,
            "unsynchronised": n - len(times),
            "p50_s": round(statistics.median(times), 2) if times else None,
            "max_s": round(max(times), 2) if times else None,
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


def floors(pki: Pki, port: int, n: int, handshakes: int = 200) -> tuple[float, dict[str, Any]]:
    """The floors of connect-all (seconds per TLS handshake, ``handshakes`` of them) and of
    memory per link; the first also as a number for the connect-all figure."""
    floor_tls = tls_floor(pki, port, "eh-00000", handshakes)
    return floor_tls, {
        "floor_tls_handshake_ms": round(floor_tls * 1000, 2),
        "floor_thread_kib": round(thread_floor_kib(min(n, 500)), 1),
    }


@contextlib.contextmanager
def work_dir(prefix: str) -> Iterator[Path]:
    """A temporary directory (in /dev/shm when there is one) for certificates, broker and
    site state, removed afterwards, also on failure; the open-files limit raised to its
    maximum first (a site holds a socket and its state files)."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    work = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def ratio(value: float, floor: float) -> str:
    return f"x{value / floor:.1f}" if floor else "-"


def connect_all_text(r: dict[str, Any]) -> str:
    n, floor = r["sites"], r["connect_all_floor_s"]
    return (f"connect-all: {r['connect_all_s']} s (floor: {n} sequential TLS handshakes "
            f"{floor} s, {ratio(r['connect_all_s'], floor)})")  # fmt: skip


def memory_text(r: dict[str, Any]) -> str:
    mem, tfloor = r["memory_per_link_kib"], r["floor_thread_kib"]
    return (f"memory per link: {mem} KiB (floor: an idle thread in poll {tfloor} KiB, "
            f"{ratio(mem, tfloor)})")  # fmt: skip


def push_text(label: str, p: dict[str, Any], n: int) -> str:
    return (f"{label}: {p['confirmed']}/{n} confirmed, p50 {p['p50_s']} s, p99 {p['p99_s']} s, "
            f"busiest second of reconnects {p['busiest_second_reconnects_share']:.1%}")  # fmt: skip


def log(text: str) -> None:
    """Progress, on stderr: stdout carries the report (or its JSON)."""
    print(text, file=sys.stderr, flush=True)


def exit_on_sigterm() -> None:
    """SIGTERM (e.g. from ``timeout``) unwinds like an exception: every ``finally`` runs, so
    brokers, nodes and the working directory are cleaned up."""
    signal.signal(signal.SIGTERM, lambda *_a: sys.exit(143))


if __name__ == "__main__" and sys.argv[1:2] == ["--portal-child"]:
    sys.exit(portal_child(sys.argv[2:]))
