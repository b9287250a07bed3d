"""PortalLink against a real mosquitto with mutual TLS (and a TLS-1.1-only Python server).

The test thread plays the daemon: it runs whatever the link ``post``s, so these tests also
check the threading contract (callbacks never run on the link thread).
"""

from __future__ import annotations

import json
import queue
import select
import signal
import socket
import ssl
import subprocess
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from energyhubd.portal.link import PortalLink
from tests.portal_broker import (
    DEVICE,
    Broker,
    Daemon,
    Observer,
    Pki,
    free_port,
    kill_quietly,
    link_maker,
    make_pki,
    running_broker,
    settings_for,
)

pytestmark = pytest.mark.feed

STATUS = f"energyhub/{DEVICE}/status"
EVENTS = f"energyhub/{DEVICE}/events"
DESIRED = f"energyhub/{DEVICE}/config/desired"
REPORTED = f"energyhub/{DEVICE}/config/reported"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def broker(pki: Pki, tmp_path: Path) -> Iterator[Broker]:
    with running_broker(pki, tmp_path / "broker") as b:
        yield b


@pytest.fixture
def make_link() -> Iterator[Callable[..., tuple[PortalLink, Daemon]]]:
    with link_maker() as build:
        yield build


def _status(observer: Observer, timeout: float = 10.0) -> tuple[dict[str, Any], bool]:
    _topic, payload, retained = observer.get(STATUS, timeout)
    return json.loads(payload), retained


# ---- connection, status, Last Will -----------------------------------------------------


@pytest.mark.parametrize("version", ["5", "3.1.1"])
def test_mutual_tls_connect_publishes_retained_online_and_serves_desired(
    pki: Pki, broker: Broker, make_link: Any, version: str
) -> None:
    link, daemon = make_link(settings_for(pki, broker.port, mqtt_version=version))
    assert daemon.run_until(lambda: daemon.connected), broker.logs()
    # A portal client arriving later sees the retained online status with the versions.
    observer = Observer(pki, broker.port, [STATUS, EVENTS, REPORTED, f"energyhub/{DEVICE}/health"])
    try:
        status, retained = _status(observer)
        assert retained and status["state"] == "online"
        assert status["software"] == "9.9.9" and status["config_version"] == 41
        # config/desired pushed by the portal reaches the daemon through post().
        observer.publish(DESIRED, b'{"version": 42}', retain=True)
        assert daemon.run_until(lambda: daemon.desired == [b'{"version": 42}'])
        # Round trip for confirm: reported back through post() with the token.
        link.request_round_trip(7, fresh=False)
        assert daemon.run_until(lambda: daemon.round_trips == [7])
        link.publish_event("lease_new", {"mac": "02:00:00:00:00:01"})
        link.publish_health({"uptime": 5})
        link.publish_reported({"applied_version": 41, "state": "applied"})
        got = {t: json.loads(p) for t, p, _r in (observer.get(timeout=10) for _ in range(3))}
        assert got[EVENTS]["type"] == "lease_new" and got[EVENTS]["seq"] == 1
        assert got[f"energyhub/{DEVICE}/health"]["health"] == {"uptime": 5}
        assert got[REPORTED]["state"] == "applied"
        # Threading contract: every callback ran on the daemon (test) thread.
        assert daemon.callback_threads == {threading.get_ident()}
        # Graceful stop replaces the retained status with offline.
        link.stop()
        status, _ = _status(observer)
        assert status["state"] == "offline"
    finally:
        observer.close()


def test_retained_desired_is_redelivered_on_every_reconnect(
    pki: Pki, broker: Broker, make_link: Any
) -> None:
    observer = Observer(pki, broker.port, [STATUS])
    observer.publish(DESIRED, b'{"version": 3}', retain=True)
    observer.close()
    _link, daemon = make_link(settings_for(pki, broker.port))
    assert daemon.run_until(lambda: len(daemon.desired) == 1)
    broker.stop()
    assert daemon.run_until(lambda: not daemon.connected)
    broker.start()
    assert daemon.run_until(lambda: len(daemon.desired) == 2, timeout=20)
    assert daemon.desired == [b'{"version": 3}'] * 2


CHILD = """
import queue, sys
from energyhubd.portal.link import PortalLink
from energyhubd.config.sections.portal import PortalSettings
ca, cert, key, port = sys.argv[1:5]
s = PortalSettings(host="localhost", port=int(port), server_name="localhost",
                   ca_file=ca, cert_file=cert, key_file=key, keepalive=30, will_delay=1)
q = queue.Queue()
def on_state(state):
    if state.connected:
        print("UP", flush=True)
link = PortalLink(s, sys.argv[5], q.put, software_version="c", applied_version=lambda: 1,
                  on_state=on_state)
link.start()
while True:
    q.get()()
"""


def test_last_will_offline_after_sigkill(pki: Pki, broker: Broker) -> None:
    observer = Observer(pki, broker.port, [STATUS])
    args = [str(pki.ca), str(pki.client_cert), str(pki.client_key), str(broker.port), DEVICE]
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert child.stdout is not None
        ready, _, _ = select.select([child.stdout], [], [], 20)
        assert ready and child.stdout.readline() == b"UP\n", "link child did not connect"
        birth, _ = _status(observer)
        assert birth["state"] == "online"
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        status, retained = _status(observer)
        # The Will names the session of the birth it ends (and the run), so the portal can
        # tell a late Will of an older session from a real offline.
        assert status["state"] == "offline" and status["reason"] == "lost"
        assert (status["session"], status["run"]) == (birth["session"], birth["run"])
    finally:
        kill_quietly(child.pid)
        child.wait(5)
        for stream in (child.stdout, child.stderr):
            if stream is not None:
                stream.close()
        observer.close()
    # The will was retained: a client connecting now still learns the device is offline.
    late = Observer(pki, broker.port, [STATUS], client_id="late")
    try:
        status, retained = _status(late)
        assert retained and status["state"] == "offline"
    finally:
        late.close()


# ---- refusals ------------------------------------------------------------------------------


def _never_connects(daemon: Daemon, failures: int = 2) -> str:
    """Wait for a few failed attempts; return the last reason. Fails if it ever connected."""
    assert daemon.run_until(lambda: sum(not s.connected for s in daemon.states) >= failures)
    assert not any(s.connected for s in daemon.states)
    return daemon.states[-1].reason


def test_wrong_ca_refused(pki: Pki, broker: Broker, make_link: Any) -> None:
    _link, daemon = make_link(settings_for(pki, broker.port, ca_file=str(pki.other_ca)))
    assert "CERTIFICATE_VERIFY_FAILED" in _never_connects(daemon)


def test_wrong_server_name_refused(pki: Pki, broker: Broker, make_link: Any) -> None:
    s = settings_for(pki, broker.port, server_name="data2.ferroamp.se")
    _link, daemon = make_link(s)
    reason = _never_connects(daemon)
    assert "CERTIFICATE_VERIFY_FAILED" in reason and "mismatch" in reason.lower()


def test_server_name_checked_instead_of_dialled_address(
    pki: Pki, broker: Broker, make_link: Any
) -> None:
    """The lab dials 127.0.0.1 but verifies the broker's name from its certificate."""
    s = settings_for(pki, broker.port, host="127.0.0.1", server_name="broker.lab.test")
    _link, daemon = make_link(s)
    assert daemon.run_until(lambda: daemon.connected), daemon.states


def test_wrong_client_certificate_refused_by_broker(
    pki: Pki, broker: Broker, make_link: Any
) -> None:
    s = settings_for(pki, broker.port, cert_file=str(pki.rogue_cert), key_file=str(pki.rogue_key))
    _link, daemon = make_link(s)
    # Client side the refusal shows up as an early close (TLS 1.3 verifies the client after
    # the client's handshake) - the text depends on the paho version, the broker log does not.
    assert _never_connects(daemon)
    assert "certificate verify failed" in broker.logs()  # the broker is the one refusing
    observer = Observer(pki, broker.port, [STATUS])
    try:
        with pytest.raises(queue.Empty):
            observer.get(STATUS, timeout=1.0)  # no online status was ever published
    finally:
        observer.close()


class _Tls11Server:
    """A TLS server that offers at most TLS 1.1 (mosquitto 2.0's tls_version is only a
    minimum, so mosquitto cannot be capped at 1.1; Debian's OpenSSL needs SECLEVEL=0)."""

    def __init__(self, pki: Pki) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.minimum_version = ssl.TLSVersion.TLSv1
            ctx.maximum_version = ssl.TLSVersion.TLSv1_1
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        ctx.load_cert_chain(str(pki.server_cert), str(pki.server_key))
        self.ctx = ctx
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = int(self.sock.getsockname()[1])
        self.versions: list[str] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            try:
                tls = self.ctx.wrap_socket(conn, server_side=True)
                self.versions.append(str(tls.version()))
                tls.close()
            except (OSError, ssl.SSLError):
                conn.close()

    def close(self) -> None:
        self.sock.close()


def test_tls11_only_broker_refused(pki: Pki, make_link: Any) -> None:
    server = _Tls11Server(pki)
    try:
        # Control: the server really completes a TLS 1.1 handshake with a permissive client,
        # so the refusal below is caused by the link's TLS 1.2 minimum.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            old.minimum_version = ssl.TLSVersion.TLSv1
        old.set_ciphers("DEFAULT:@SECLEVEL=0")
        old.load_verify_locations(str(pki.ca))
        try:
            with old.wrap_socket(
                socket.create_connection(("127.0.0.1", server.port), timeout=5),
                server_hostname="localhost",
            ) as tls:
                assert tls.version() == "TLSv1.1"
        except ssl.SSLError as exc:  # pragma: no cover - depends on the OpenSSL build
            pytest.skip(f"this OpenSSL cannot speak TLS 1.1 at all: {exc}")
        _link, daemon = make_link(settings_for(pki, server.port))
        reason = _never_connects(daemon)
        assert "PROTOCOL_VERSION" in reason or "protocol version" in reason.lower(), reason
    finally:
        server.close()


# ---- outbox across a broker outage --------------------------------------------------------


def test_events_buffered_while_broker_down_arrive_in_order_with_drops_counted(
    pki: Pki, broker: Broker, make_link: Any
) -> None:
    # A persistent portal session keeps the subscription across the broker restart, so the
    # broker queues what the link sends even before the observer is back.
    observer = Observer(pki, broker.port, [EVENTS], client_id="portal-persist", clean=False)
    observer.close()
    link, daemon = make_link(settings_for(pki, broker.port, queue_size=5))
    assert daemon.run_until(lambda: daemon.connected)
    broker.stop()  # SIGTERM: mosquitto saves sessions to its persistence file
    assert daemon.run_until(lambda: not daemon.connected)
    for i in range(8):
        link.publish_event("sample", {"i": i})
    assert link.outbox.dropped == 3
    broker.start()
    assert daemon.run_until(lambda: any(s.dropped for s in daemon.states), timeout=20)
    assert [s.dropped for s in daemon.states if s.dropped] == [3]
    observer = Observer(pki, broker.port, [EVENTS], client_id="portal-persist", clean=False)
    try:
        got = [json.loads(observer.get(EVENTS)[1]) for _ in range(6)]
    finally:
        observer.close()
    assert got[0]["type"] == "outbox_overflow"
    assert got[0]["data"] == {"dropped": 3, "dropped_total": 3}
    assert [e["data"]["i"] for e in got[1:]] == [3, 4, 5, 6, 7]  # oldest dropped, order kept
    seqs = [e["seq"] for e in got[1:]]
    assert seqs == sorted(seqs)


# ---- reconnect backoff -------------------------------------------------------------------


def test_backoff_capped_and_reset_only_after_the_connection_held(
    pki: Pki, broker: Broker, make_link: Any
) -> None:
    s = settings_for(
        pki, broker.port, backoff_initial=0.1, backoff_max=0.4, backoff_reset_after=1.0
    )
    link, daemon = make_link(s, rand=lambda: 1.0)  # jitter pinned to the top of its range
    assert daemon.run_until(lambda: daemon.connected)
    broker.stop(signal.SIGKILL)
    assert daemon.run_until(lambda: len(daemon.states) >= 6)
    delays = [st.retry_in for st in daemon.states[1:6]]
    assert delays == [0.1, 0.2, 0.4, 0.4, 0.4]
    broker.start()
    assert daemon.run_until(lambda: daemon.connected, timeout=20)
    assert link.backoff.attempt > 0  # a CONNACK alone does not reset it ...
    assert daemon.run_until(lambda: link.backoff.attempt == 0, timeout=10)  # ... holding does
    mark = len(daemon.states)
    broker.stop(signal.SIGKILL)
    assert daemon.run_until(lambda: len(daemon.states) > mark)
    assert daemon.states[mark].retry_in == 0.1  # back to the initial delay


def test_unused_port_is_just_retried(pki: Pki, make_link: Any) -> None:
    _link, daemon = make_link(settings_for(pki, free_port()))
    assert "refused" in _never_connects(daemon).lower()


def test_fresh_round_trip_proves_a_new_connection_without_flapping_status(
    pki: Pki, broker: Broker, make_link: Any
) -> None:
    """After a config change the confirm must come over a connection made AFTER the change
    (an established flow can outlive a firewall change); the reconnect is clean, so the
    portal never sees the device go offline."""
    link, daemon = make_link(settings_for(pki, broker.port))
    assert daemon.run_until(lambda: daemon.connected)
    observer = Observer(pki, broker.port, [STATUS])
    try:
        assert _status(observer)[0]["state"] == "online"  # the retained one
        link.request_round_trip(1, fresh=False)
        assert daemon.run_until(lambda: daemon.round_trips == [1])
        assert [s.connected for s in daemon.states] == [True]  # no reconnect for fresh=False
        link.request_round_trip(2)
        assert daemon.run_until(lambda: daemon.round_trips == [1, 2])
        assert [(s.connected, s.reason) for s in daemon.states] == [
            (True, "connected"),
            (False, "reconnecting to verify a new configuration"),
            (True, "connected"),
        ]
        status, _ = _status(observer)
        assert status["state"] == "online"  # the new connection's announcement
        with pytest.raises(queue.Empty):
            observer.get(STATUS, timeout=1.0)  # and no Last Will "offline" from the old one
    finally:
        observer.close()


def test_kick_skips_the_remaining_backoff(pki: Pki, tmp_path: Path, make_link: Any) -> None:
    """After the WAN comes back the daemon need not wait out a long backoff."""
    port = free_port()
    s = settings_for(pki, port, backoff_initial=120.0, backoff_max=120.0)
    link, daemon = make_link(s, rand=lambda: 1.0)
    assert daemon.run_until(lambda: len(daemon.states) == 1)
    assert daemon.states[0].retry_in == 120.0  # would sleep two minutes
    b = Broker(pki, tmp_path / "late-broker", port=port)
    try:
        b.start()
        link.kick()
        assert daemon.run_until(lambda: daemon.connected, timeout=20)  # far below 120 s
    finally:
        b.stop(signal.SIGKILL)
