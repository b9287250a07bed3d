"""Test helper: a real mosquitto with mutual TLS on 127.0.0.1, plus certificates and an
observer client standing in for the Ferroamp portal.

Reusable by other test modules: ``make_pki(tmp_path)``, ``Broker(pki, workdir)`` (a context
manager that always kills the process), ``Observer(pki, port)``.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import trustme

from energyhubd.config.sections.portal import PortalSettings
from energyhubd.portal.link import LinkState, PortalLink
from energyhubd.portal.topics import mosquitto_acl

DEVICE = "eh-test1"
PORTAL_USER = "portal"
SERVER_NAMES = ("localhost", "broker.lab.test")


@dataclass(frozen=True)
class Pki:
    """Paths of every certificate the portal tests need."""

    dir: Path
    ca: Path  # the CA that signed the broker and the good clients
    server_cert: Path
    server_key: Path
    client_cert: Path  # CN = DEVICE
    client_key: Path
    portal_cert: Path  # CN = portal (the observer)
    portal_key: Path
    other_ca: Path  # an unrelated CA
    rogue_cert: Path  # CN = DEVICE but signed by other_ca
    rogue_key: Path


def _write(ca_or_cert: Any, path: Path) -> Path:
    ca_or_cert.write_to_path(str(path))
    return path


def make_pki(directory: Path) -> Pki:
    """Generate a CA, a broker certificate for SERVER_NAMES and client certificates."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    other = trustme.CA()
    server = ca.issue_cert(*SERVER_NAMES)
    client = ca.issue_cert(f"{DEVICE}.devices.test", common_name=DEVICE)
    portal = ca.issue_cert("portal.devices.test", common_name=PORTAL_USER)
    rogue = other.issue_cert(f"{DEVICE}.devices.test", common_name=DEVICE)
    d = directory
    pki = Pki(
        dir=d,
        ca=_write(ca.cert_pem, d / "ca.pem"),
        server_cert=d / "server.pem",
        server_key=_write(server.private_key_pem, d / "server.key"),
        client_cert=d / "client.pem",
        client_key=_write(client.private_key_pem, d / "client.key"),
        portal_cert=d / "portal.pem",
        portal_key=_write(portal.private_key_pem, d / "portal.key"),
        other_ca=_write(other.cert_pem, d / "other-ca.pem"),
        rogue_cert=d / "rogue.pem",
        rogue_key=_write(rogue.private_key_pem, d / "rogue.key"),
    )
    # Leaf plus chain in one file, as mosquitto and ssl.load_cert_chain expect.
    for leaf, path in (
        (server, pki.server_cert),
        (client, pki.client_cert),
        (portal, pki.portal_cert),
        (rogue, pki.rogue_cert),
    ):
        path.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    return pki


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Any, timeout: float = 10.0, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until it is truthy or the deadline passes (never a speed assertion)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


class Broker:
    """mosquitto with ``require_certificate``, CN as user name and a per-device topic ACL."""

    def __init__(
        self, pki: Pki, workdir: Path, port: int | None = None, extra_conf: str = ""
    ) -> None:
        self.pki = pki
        self.workdir = workdir
        self.port = port or free_port()
        self.extra_conf = extra_conf
        self.proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        self.log = workdir / "mosquitto.log"
        self.conf = workdir / "mosquitto.conf"
        acl = workdir / "acl"
        acl.write_text(mosquitto_acl(PORTAL_USER))
        self.conf.write_text(
            "\n".join(
                [
                    "per_listener_settings false",
                    "allow_anonymous false",
                    "user root",
                    "persistence true",
                    f"persistence_location {workdir}/",
                    f"log_dest file {self.log}",
                    "log_type all",
                    f"acl_file {acl}",
                    f"listener {self.port} 127.0.0.1",
                    f"cafile {pki.ca}",
                    f"certfile {pki.server_cert}",
                    f"keyfile {pki.server_key}",
                    "require_certificate true",
                    "use_identity_as_username true",
                    extra_conf,
                    "",
                ]
            )
        )

    def start(self, timeout: float = 10.0) -> None:
        self.proc = subprocess.Popen(
            ["mosquitto", "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

        def listening() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.logs()}")
            with socket.socket() as sock:
                return sock.connect_ex(("127.0.0.1", self.port)) == 0

        if not wait_for(listening, timeout):
            raise RuntimeError(f"mosquitto did not listen on {self.port}: {self.logs()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop and wait; SIGTERM lets mosquitto save its persistence file."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        self.proc = None

    def logs(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-4000:]
        except FileNotFoundError:
            return ""

    def __enter__(self) -> Broker:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop(signal.SIGKILL)


@contextlib.contextmanager
def running_broker(pki: Pki, workdir: Path, **kwargs: Any) -> Iterator[Broker]:
    broker = Broker(pki, workdir, **kwargs)
    try:
        broker.start()
        yield broker
    finally:
        broker.stop(signal.SIGKILL)


def client_tls(pki: Pki, cert: Path, key: Path, ca: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca or pki.ca))
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


class Observer:
    """A plain paho client (either major version) playing the portal: collects messages."""

    def __init__(
        self,
        pki: Pki,
        port: int,
        topics: list[str],
        client_id: str = "observer",
        clean: bool = True,
    ) -> None:
        self.messages: queue.Queue[tuple[str, bytes, bool]] = queue.Queue()
        self.connected = False
        kwargs: dict[str, Any] = {
            "client_id": client_id,
            "clean_session": clean,
            "protocol": mqtt.MQTTv311,
        }
        api = getattr(mqtt, "CallbackAPIVersion", None)
        if api is not None:
            kwargs["callback_api_version"] = api.VERSION2
        self.client = mqtt.Client(**kwargs)
        self.client.tls_set_context(client_tls(pki, pki.portal_cert, pki.portal_key))
        self.topics = topics
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.subscribed = False
        self.client.on_subscribe = self._on_subscribe
        self.client.connect("localhost", port, 30)
        self.client.loop_start()
        if not wait_for(lambda: self.subscribed, 10):
            self.close()
            raise RuntimeError("observer could not connect/subscribe")

    def _on_connect(self, client: Any, _u: Any, *_args: Any) -> None:
        self.connected = True
        for topic in self.topics:
            client.subscribe(topic, qos=1)

    def _on_subscribe(self, *_args: Any) -> None:
        self.subscribed = True

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        self.messages.put((msg.topic, bytes(msg.payload), bool(msg.retain)))

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(10)

    def get(self, topic: str | None = None, timeout: float = 10.0) -> tuple[str, bytes, bool]:
        """Next message (on ``topic`` if given); raises queue.Empty after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise queue.Empty
            item = self.messages.get(timeout=left)
            if topic is None or item[0] == topic:
                return item

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.disconnect()
        self.client.loop_stop()


def kill_quietly(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


class Daemon:
    """The daemon's event loop in miniature: runs posted callables on the test thread."""

    def __init__(self) -> None:
        self.queue: queue.Queue[Callable[[], None]] = queue.Queue()
        self.states: list[LinkState] = []
        self.desired: list[bytes] = []
        self.round_trips: list[int] = []
        self.callback_threads: set[int] = set()

    def post(self, fn: Callable[[], None]) -> None:
        self.queue.put(fn)

    def _mark(self) -> None:
        self.callback_threads.add(threading.get_ident())

    def on_state(self, state: LinkState) -> None:
        self._mark()
        self.states.append(state)

    def on_desired(self, payload: bytes) -> None:
        self._mark()
        self.desired.append(payload)

    def on_round_trip(self, token: int) -> None:
        self._mark()
        self.round_trips.append(token)

    def run_until(self, predicate: Callable[[], bool], timeout: float = 15.0) -> bool:
        def step() -> bool:
            with contextlib.suppress(queue.Empty):
                self.queue.get(timeout=0.05)()
            return predicate()

        return wait_for(step, timeout, interval=0)

    @property
    def connected(self) -> bool:
        return bool(self.states) and self.states[-1].connected


def settings_for(pki: Pki, port: int, **overrides: Any) -> PortalSettings:
    values: dict[str, Any] = {
        "host": "localhost",
        "port": port,
        "server_name": "localhost",
        "ca_file": str(pki.ca),
        "cert_file": str(pki.client_cert),
        "key_file": str(pki.client_key),
        "backoff_initial": 0.2,
        "backoff_max": 1.0,
        "keepalive": 10,
        "fresh_confirm_delay": 0.5,
    }
    values.update(overrides)
    return PortalSettings(**values)


@contextlib.contextmanager
def link_maker(**defaults: Any) -> Iterator[Callable[..., tuple[PortalLink, Daemon]]]:
    """Builds started ``PortalLink``s, each with its own miniature ``Daemon``; ``defaults``
    are keyword arguments every link gets unless the call gives its own. All are stopped
    afterwards."""
    links: list[PortalLink] = []

    def build(s: PortalSettings, **kwargs: Any) -> tuple[PortalLink, Daemon]:
        daemon = Daemon()
        link = PortalLink(
            s,
            DEVICE,
            daemon.post,
            software_version="9.9.9",
            applied_version=lambda: 41,
            on_state=daemon.on_state,
            on_desired=daemon.on_desired,
            on_round_trip=daemon.on_round_trip,
            **{**defaults, **kwargs},
        )
        links.append(link)
        link.start()
        return link, daemon

    try:
        yield build
    finally:
        for link in links:
            link.stop()
