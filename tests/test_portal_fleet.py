"""The fleet rules of the portal protocol against a real mosquitto with mutual TLS.

Directional ACL, desired state asked from the portal (not only a retained copy), honest
presence (session counter, Will Delay, identity conflict), resync, latest-only health, named
connection failures, MQTT 3.1.1 fallback and a link far above select()'s descriptor limit.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from energyhub_lab.portal import PortalStandIn
from energyhubd.config.sections.portal import PortalSettings
from energyhubd.portal.link import PortalLink
from energyhubd.portal.topics import DEVICE_PUBLISHES, DEVICE_SUBSCRIBES, mosquitto_acl
from tests.portal_broker import (
    DEVICE,
    Broker,
    Daemon,
    Observer,
    Pki,
    client_tls,
    free_port,
    link_maker,
    make_pki,
    running_broker,
    settings_for,
    wait_for,
)

pytestmark = pytest.mark.feed

T = f"energyhub/{DEVICE}/"
GOLDEN_ACL = Path(__file__).parent.parent / "docs" / "fleet-mosquitto.acl"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def broker(pki: Pki, tmp_path: Path) -> Iterator[Broker]:
    with running_broker(pki, tmp_path / "broker") as b:
        yield b


@pytest.fixture
def make_link(tmp_path: Path) -> Iterator[Callable[..., tuple[PortalLink, Daemon]]]:
    with link_maker(state_dir=str(tmp_path / "state")) as build:
        yield build


@contextlib.contextmanager
def stand_in(
    pki: Pki, port: int, desired: dict[str, bytes], protocol: str = "5"
) -> Iterator[PortalStandIn]:
    ctx = client_tls(pki, pki.portal_cert, pki.portal_key)
    s = PortalStandIn("localhost", port, ctx, desired.get, protocol=protocol)
    try:
        yield s
    finally:
        s.close()


def device_client(pki: Pki, port: int, client_id: str = "raw-device") -> Any:
    """A bare paho client holding the DEVICE's certificate (what a thief of the key has)."""
    kwargs: dict[str, Any] = {"client_id": client_id, "protocol": mqtt.MQTTv311}
    api = getattr(mqtt, "CallbackAPIVersion", None)
    if api is not None:
        kwargs["callback_api_version"] = api.VERSION2
    client = mqtt.Client(**kwargs)
    client.tls_set_context(client_tls(pki, pki.client_cert, pki.client_key))
    connected = threading.Event()
    client.on_connect = lambda *_a: connected.set()
    client.connect("localhost", port, 30)
    client.loop_start()
    assert connected.wait(10)
    return client


def _json(item: tuple[str, bytes, bool]) -> dict[str, Any]:
    return dict(json.loads(item[1]))


# ---- 1. ACL by direction --------------------------------------------------------------------


def test_acl_is_generated_from_the_topic_directions_and_shipped() -> None:
    acl = mosquitto_acl("portal")
    assert GOLDEN_ACL.read_text() == acl  # the file in docs/ is exactly what brokers run
    for leaf in DEVICE_PUBLISHES:
        assert f"pattern write energyhub/%u/{leaf}\n" in acl
    for leaf in DEVICE_SUBSCRIBES:
        assert f"pattern read energyhub/%u/{leaf}\n" in acl
    assert "readwrite energyhub/%u" not in acl


def test_device_cannot_write_its_own_desired_state_or_commands(pki: Pki, broker: Broker) -> None:
    portal = Observer(pki, broker.port, [T + "config/desired", T + "command"])
    portal.publish(T + "config/desired", b'{"version": 5}', retain=True)
    portal.get(T + "config/desired")  # the portal's own copy, delivered to itself
    thief = device_client(pki, broker.port)
    try:
        thief.publish(T + "config/desired", b'{"version": 1099511627776}', qos=1, retain=True)
        thief.publish(T + "command", b'{"method": "tunnel"}', qos=1).wait_for_publish(5)
        with pytest.raises(queue.Empty):
            portal.get(timeout=1.0)  # the broker dropped both
    finally:
        thief.loop_stop()
        thief.disconnect()
        portal.close()
    late = Observer(pki, broker.port, [T + "config/desired"], client_id="late")
    try:
        assert late.get(T + "config/desired")[1] == b'{"version": 5}'  # still the portal's
    finally:
        late.close()


def test_device_cannot_read_another_device_or_publish_outside_its_leaves(
    pki: Pki, broker: Broker
) -> None:
    got: queue.Queue[str] = queue.Queue()
    thief = device_client(pki, broker.port)
    thief.on_message = lambda _c, _u, msg: got.put(msg.topic)
    thief.subscribe("energyhub/#", qos=1)
    portal = Observer(pki, broker.port, ["energyhub/#"])
    try:
        portal.publish("energyhub/eh-other/config/desired", b'{"version": 1}')
        thief.publish(T + "junk", b"x" * 1000, qos=1, retain=True).wait_for_publish(5)
        seen = [portal.get(timeout=5)[0]]
        with contextlib.suppress(queue.Empty):
            while True:
                seen.append(portal.get(timeout=0.5)[0])
        assert T + "junk" not in seen  # not one of the device's publish leaves
        with pytest.raises(queue.Empty):
            got.get(timeout=0.5)  # nothing of eh-other reached the device
    finally:
        thief.loop_stop()
        thief.disconnect()
        portal.close()


def test_plain_listener_accepts_no_anonymous_client(pki: Pki, tmp_path: Path) -> None:
    plain = free_port()
    b = Broker(pki, tmp_path / "b", extra_conf=f"listener {plain} 127.0.0.1\n")
    b.start()

    def listening() -> bool:
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", plain)) == 0

    try:
        assert wait_for(listening)  # start() waited for the TLS listener only
        daemon = Daemon()
        s = settings_for(pki, plain, tls=False, allow_plain=True, mqtt_version="3.1.1")
        link = PortalLink(
            s, DEVICE, daemon.post, software_version="x", applied_version=lambda: None,
            on_state=daemon.on_state,
        )  # fmt: skip
        link.start()
        try:
            assert daemon.run_until(lambda: len(daemon.states) >= 1)
            assert not daemon.states[0].connected
            reason = daemon.states[0].reason
            # paho 1.6 gives the 3.1.1 code (5), paho 2.x maps it to MQTT 5's (135).
            assert reason.startswith("CONNACK refused:"), reason
            assert "not authori" in reason.lower() and reason.endswith(("(5)", "(135)")), reason
        finally:
            link.stop()
    finally:
        b.stop(signal.SIGKILL)


# ---- 2. desired state asked from the portal ---------------------------------------------------


@pytest.mark.parametrize("version", ["5", "3.1.1"])
def test_every_connection_asks_the_portal_for_its_desired_state(
    pki: Pki, broker: Broker, make_link: Any, version: str
) -> None:
    """No retained message exists (a cluster node without the retained store): the portal's
    answer alone brings the desired document, again after a reconnect."""
    desired = {DEVICE: b'{"version": 8}'}
    with stand_in(pki, broker.port, desired) as portal:
        link, daemon = make_link(settings_for(pki, broker.port, mqtt_version=version))
        assert daemon.run_until(lambda: daemon.desired == [b'{"version": 8}']), broker.logs()
        device, request = portal.requests[0]
        assert device == DEVICE and request["applied_version"] == 41
        assert request["session"] >= 1 and request["run"] == link.run_id
        desired[DEVICE] = b'{"version": 9}'
        broker.stop()
        assert daemon.run_until(lambda: not daemon.connected)
        broker.start()
        link.kick()
        assert daemon.run_until(lambda: b'{"version": 9}' in daemon.desired, timeout=30)


def test_portal_without_desired_state_answers_empty(
    pki: Pki, broker: Broker, make_link: Any
) -> None:
    with stand_in(pki, broker.port, {}):
        _link, daemon = make_link(settings_for(pki, broker.port))
        assert daemon.run_until(lambda: daemon.desired == [b""])


def test_mqtt5_request_carries_response_topic_and_correlation(
    pki: Pki, broker: Broker, make_link: Any
) -> None:
    seen: queue.Queue[Any] = queue.Queue()
    kwargs: dict[str, Any] = {"client_id": "spy", "protocol": mqtt.MQTTv5}
    api = getattr(mqtt, "CallbackAPIVersion", None)
    if api is not None:
        kwargs["callback_api_version"] = api.VERSION2
    spy = mqtt.Client(**kwargs)
    spy.tls_set_context(client_tls(pki, pki.portal_cert, pki.portal_key))
    spy.on_message = lambda _c, _u, msg: seen.put(msg)
    ready = threading.Event()
    spy.on_subscribe = lambda *_a: ready.set()
    spy.on_connect = lambda c, *_a: c.subscribe(T + "config/get", qos=1)
    spy.connect("localhost", broker.port, 30)
    spy.loop_start()
    try:
        assert ready.wait(10)
        make_link(settings_for(pki, broker.port))
        msg = seen.get(timeout=10)
        assert msg.properties.ResponseTopic == T + "config/desired"
        assert json.loads(msg.payload)["correlation"].encode() == msg.properties.CorrelationData
    finally:
        spy.loop_stop()
        spy.disconnect()


# ---- 4. honest presence -----------------------------------------------------------------------


def test_session_counter_persists_across_restarts_in_birth_and_death(
    pki: Pki, broker: Broker, make_link: Any
) -> None:
    observer = Observer(pki, broker.port, [T + "status"])
    try:
        sessions = []
        for _ in range(2):
            link, daemon = make_link(settings_for(pki, broker.port))
            assert daemon.run_until(lambda d=daemon: d.connected)  # type: ignore[misc]
            birth = _json(observer.get(T + "status", timeout=20))
            link.stop()
            death = _json(observer.get(T + "status", timeout=20))
            while death["state"] == "online":  # a reconnect on a loaded machine: a new birth
                birth, death = death, _json(observer.get(T + "status", timeout=20))
            assert birth["state"] == "online" and death["state"] == "offline"
            assert death["reason"] == "stopped"
            assert birth["session"] == death["session"] and birth["run"] == death["run"]
            sessions.append((birth["session"], birth["run"]))
        assert sessions[1][0] == sessions[0][0] + 1  # a new daemon run continues the count
        assert sessions[1][1] != sessions[0][1]  # with a new run id
    finally:
        observer.close()


def _twin(pki: Pki, port: int) -> Any:
    """Another site with our identity: MQTT 5, same client id."""
    kwargs: dict[str, Any] = {"client_id": DEVICE, "protocol": mqtt.MQTTv5}
    api = getattr(mqtt, "CallbackAPIVersion", None)
    if api is not None:
        kwargs["callback_api_version"] = api.VERSION2
    twin = mqtt.Client(**kwargs)
    twin.tls_set_context(client_tls(pki, pki.client_cert, pki.client_key))
    return twin


def test_takeover_within_will_delay_shows_no_false_offline_and_conflict_is_reported(
    pki: Pki, broker: Broker, make_link: Any
) -> None:
    observer = Observer(pki, broker.port, [T + "status", T + "events"])
    s = settings_for(pki, broker.port, will_delay=5, backoff_reset_after=2.0)
    link, daemon = make_link(s)
    try:
        for _ in range(3):
            assert daemon.run_until(lambda: daemon.connected, timeout=30)
            twin = _twin(pki, broker.port)
            up = threading.Event()
            twin.on_connect = lambda *_a, e=up: e.set()  # type: ignore[misc]
            twin.connect("localhost", broker.port, 30)
            twin.loop_start()
            assert up.wait(10)
            assert daemon.run_until(lambda: not daemon.connected)
            twin.disconnect()  # clean: the twin leaves no Will
            twin.loop_stop()
        # Now a connection holds: the conflict is reported once, as an event.
        assert daemon.run_until(lambda: any(x.reason == "identity_conflict" for x in daemon.states),
                                timeout=40)  # fmt: skip
        events = []
        with contextlib.suppress(queue.Empty):
            while True:
                item = observer.get(timeout=2)
                if item[0] == T + "events":
                    events.append(_json(item))
                elif _json(item)["state"] == "offline":
                    # Only a clean stop could publish offline; the Will never fired.
                    raise AssertionError(f"false offline: {item}")
        conflict = [e for e in events if e["type"] == "identity_conflict"]
        # mosquitto 2.0 closes the old connection without an MQTT 5 DISCONNECT (0x8E), so
        # only the short sessions count here; a broker that sends 0x8E also counts takeovers.
        assert len(conflict) == 1 and conflict[0]["data"]["short_sessions"] == 3
        assert link.backoff.attempt == 0
    finally:
        observer.close()


# ---- resync, buffers ------------------------------------------------------------------------


def test_resync_command_republishes_everything(pki: Pki, broker: Broker, make_link: Any) -> None:
    with stand_in(pki, broker.port, {DEVICE: b'{"version": 3}'}) as portal:
        link, daemon = make_link(settings_for(pki, broker.port))
        assert daemon.run_until(lambda: len(daemon.desired) == 1)
        link.publish_reported({"state": "applied"})
        link.publish_health({"uptime": 1})
        leaves = ["status", "config/reported", "health", "command/result"]
        observer = Observer(pki, broker.port, [T + leaf for leaf in leaves])
        try:
            with contextlib.suppress(queue.Empty):
                while True:
                    observer.get(timeout=1.0)  # retained copies and the first sends
            observer.publish(T + "command", b'{"id": "r1", "method": "resync"}')
            got = {}
            for _ in range(4):
                item = observer.get(timeout=10)
                got[item[0]] = _json(item)
            assert got[T + "status"]["state"] == "online"
            assert got[T + "config/reported"] == {"state": "applied"}
            assert got[T + "health"]["health"] == {"uptime": 1}
            assert got[T + "command/result"] == {"id": "r1", "ok": True,
                                                 "result": {"resync": "sent"}}  # fmt: skip
            assert daemon.run_until(lambda: len(daemon.desired) == 2)  # asked again
            assert len(portal.requests) == 2
        finally:
            observer.close()


def test_health_is_latest_only_and_events_all_survive_an_outage(
    pki: Pki, tmp_path: Path, make_link: Any
) -> None:
    port = free_port()
    s = settings_for(pki, port, backoff_initial=60.0, backoff_max=60.0)
    link, daemon = make_link(s)
    assert daemon.run_until(lambda: len(daemon.states) >= 1)  # first attempt failed
    for i in range(50):
        link.publish_health({"i": i})
    for i in range(5):
        link.publish_event("sample", {"i": i})
    b = Broker(pki, tmp_path / "late", port=port)
    b.start()
    try:
        observer = Observer(pki, port, [T + "health", T + "events"])
        try:
            link.kick()
            got = [observer.get(timeout=15) for _ in range(6)]
            with pytest.raises(queue.Empty):
                observer.get(timeout=1.0)
        finally:
            observer.close()
    finally:
        b.stop(signal.SIGKILL)
    health = [_json(g) for g in got if g[0] == T + "health"]
    events = [_json(g) for g in got if g[0] == T + "events"]
    assert [h["health"] for h in health] == [{"i": 49}]  # stale reports never queued
    assert [e["data"]["i"] for e in events] == [0, 1, 2, 3, 4]
    assert all(e["run"] == link.run_id for e in events + health)


# ---- 6. limits and labels -------------------------------------------------------------------


def test_push_cap_defaults_to_128_kib() -> None:
    assert PortalSettings().max_push_bytes == 131072


def _first_failure(make_link: Any, s: PortalSettings) -> str:
    _link, daemon = make_link(s)
    assert daemon.run_until(lambda: len(daemon.states) >= 1)
    assert not daemon.states[0].connected
    return str(daemon.states[0].reason)


def test_failures_are_named_by_stage(pki: Pki, broker: Broker, make_link: Any) -> None:
    dns = _first_failure(make_link, settings_for(pki, broker.port, host="nonexistent.invalid"))
    assert dns.startswith("DNS: cannot resolve nonexistent.invalid"), dns
    tcp = _first_failure(make_link, settings_for(pki, free_port()))
    assert tcp.startswith("TCP: connect to localhost:") and "refused" in tcp.lower(), tcp
    tls = _first_failure(make_link, settings_for(pki, broker.port, ca_file=str(pki.other_ca)))
    assert tls.startswith("TLS handshake: broker certificate refused"), tls
    assert "client certificate refused?" not in dns + tcp + tls


class _V5Refuser:
    """Answers an MQTT 5 CONNECT as a 3.1.1-only broker does (CONNACK 0x01) and records the
    protocol level of every CONNECT; 3.1.1 CONNECTs are accepted (CONNACK 0)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = int(self.sock.getsockname()[1])
        self.levels: list[int] = []
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            data = conn.recv(4096)
            # fixed header (1) + remaining length (varint) + protocol name (2 + 4) + level
            i = 1
            while i < len(data) and data[i] & 0x80:
                i += 1
            i += 1 + 6
            level = data[i] if len(data) > i else -1
            self.levels.append(level)
            conn.sendall(b"\x20\x02\x00" + (b"\x01" if level == 5 else b"\x00"))
            if level == 5:
                conn.close()

    def close(self) -> None:
        self.sock.close()
        for conn in self.conns:
            conn.close()


def test_mqtt5_refused_falls_back_to_311(pki: Pki, make_link: Any) -> None:
    server = _V5Refuser()
    try:
        s = settings_for(pki, server.port, tls=False, allow_plain=True, backoff_initial=0.1,
                         backoff_max=0.2)  # fmt: skip
        link, daemon = make_link(s)
        assert daemon.run_until(lambda: daemon.connected, timeout=20), daemon.states
        assert server.levels[:2] == [5, 4]
        assert "trying MQTT 3.1.1" in daemon.states[0].reason
        assert link.protocol == "3.1.1"
    finally:
        server.close()


def test_link_works_above_the_select_descriptor_limit(
    pki: Pki, broker: Broker, make_link: Any
) -> None:
    """A fleet test runs thousands of links in one process: every descriptor > 1024."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip("descriptor limit too low")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    fillers = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        link, daemon = make_link(settings_for(pki, broker.port))
        assert daemon.run_until(lambda: daemon.connected), daemon.states
        link.request_round_trip(1, fresh=False)
        assert daemon.run_until(lambda: daemon.round_trips == [1])
    finally:
        for fd in fillers:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_stand_in_answers_many_devices(pki: Pki, broker: Broker) -> None:
    """The reference portal side answers any device on its own desired topic."""
    observer = Observer(pki, broker.port, ["energyhub/+/config/desired"], client_id="watch")
    with stand_in(pki, broker.port, {"eh-a": b'{"version": 1}'}, protocol="3.1.1"):
        observer.publish("energyhub/eh-a/config/get", b"{}")
        observer.publish("energyhub/eh-b/config/get", b"{}")
        got = {observer.get(timeout=10)[:2] for _ in range(2)}
    observer.close()
    assert got == {("energyhub/eh-a/config/desired", b'{"version": 1}'),
                   ("energyhub/eh-b/config/desired", b"")}  # fmt: skip
