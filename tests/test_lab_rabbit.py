"""energyhub_lab.rabbit: a 2-node RabbitMQ cluster (MQTT plugin, per-node retained store, MQTT
3.1.1 only) on which the fleet design must hold.

The pure parts (topic permissions = the directional ACL, users without passwords, a node that
listens only for MQTT over mutual TLS on loopback) are checked without a broker; the tests
marked ``rabbitmq`` start a real cluster: a device on node 1 gets what the portal publishes on
node 2 through ``config/get`` although the retained copy stays on node 2, after falling back
to MQTT 3.1.1; and the ACL keeps a device from writing its own desired state.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from energyhub_lab import rabbit
from energyhub_lab.portal import PortalStandIn
from energyhubd.portal.link import PortalLink
from energyhubd.portal.topics import DEVICE_PUBLISHES, DEVICE_SUBSCRIBES
from tests.portal_broker import (
    DEVICE,
    PORTAL_USER,
    Daemon,
    Observer,
    Pki,
    client_tls,
    make_pki,
    settings_for,
)

DESIRED = f"energyhub/{DEVICE}/config/desired"


def _key(device: str, leaf: str) -> str:
    """The AMQP routing key RabbitMQ's MQTT plugin makes of energyhub/<device>/<leaf>."""
    return f"energyhub.{device}.{leaf.replace('/', '.')}"


def _expand(pattern: str, user: str) -> re.Pattern[str]:
    return re.compile(pattern.replace("{username}", user))


# ---- pure ------------------------------------------------------------------------------------


def test_topic_permissions_are_the_directional_acl() -> None:
    write, read = (_expand(p, DEVICE) for p in rabbit.topic_permissions())
    for leaf in DEVICE_PUBLISHES:
        assert write.search(_key(DEVICE, leaf)) and not read.search(_key(DEVICE, leaf)), leaf
    for leaf in DEVICE_SUBSCRIBES:
        assert read.search(_key(DEVICE, leaf)) and not write.search(_key(DEVICE, leaf)), leaf
    for key in (_key("eh-other", "status"), _key(DEVICE, "#"), _key(DEVICE, "status.x"),
                f"x{_key(DEVICE, 'status')}", _key(DEVICE + "x", "status")):  # fmt: skip
        assert not write.search(key) and not read.search(key), key


def test_definitions_give_no_password_and_no_guest() -> None:
    defs = rabbit.definitions(["eh-1", "eh-2"], PORTAL_USER)
    assert [u["name"] for u in defs["users"]] == ["eh-1", "eh-2", PORTAL_USER]
    assert all(u["password_hash"] == "" for u in defs["users"])
    topics = {t["user"]: t for t in defs["topic_permissions"]}
    assert (topics["eh-1"]["write"], topics["eh-1"]["read"]) == rabbit.topic_permissions()
    assert topics[PORTAL_USER]["write"] == topics[PORTAL_USER]["read"] == r"^energyhub\."
    assert {t["exchange"] for t in topics.values()} == {"amq.topic"}


def test_node_listens_only_for_mqtt_over_mutual_tls_on_loopback(tmp_path: Path) -> None:
    tls = rabbit.Tls(tmp_path / "ca.pem", tmp_path / "s.pem", tmp_path / "s.key")
    conf = dict(
        line.split(" = ", 1)
        for line in rabbit.node_config(18883, 25000, tls, tmp_path / "d.json").splitlines()
        if line
    )
    assert conf["listeners.tcp"] == conf["mqtt.listeners.tcp"] == "none"
    assert conf["mqtt.listeners.ssl.default"] == "127.0.0.1:18883"
    assert conf["mqtt.allow_anonymous"] == "false" and conf["mqtt.ssl_cert_login"] == "true"
    assert conf["ssl_options.fail_if_no_peer_cert"] == "true"
    assert conf["distribution.listener.interface"] == "127.0.0.1"


# ---- a real 2-node cluster -------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def cluster(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[rabbit.RabbitCluster]:
    if not rabbit.available():
        pytest.skip("rabbitmq-server is not installed (scripts/setup.sh installs it)")
    tls = rabbit.Tls(pki.ca, pki.server_cert, pki.server_key)
    with rabbit.RabbitCluster(tmp_path_factory.mktemp("rabbit"), tls, [DEVICE]) as running:
        yield running


@pytest.fixture
def portal(pki: Pki, cluster: rabbit.RabbitCluster) -> Iterator[tuple[PortalStandIn, dict]]:
    """The reference portal stand-in on node 2 (MQTT 3.1.1: RabbitMQ 3.10 has no MQTT 5)."""
    desired: dict[str, bytes] = {}
    ctx = client_tls(pki, pki.portal_cert, pki.portal_key)
    stand_in = PortalStandIn("localhost", cluster.nodes[1].mqtt_port, ctx, desired.get,
                             client_id="test-portal", protocol="3.1.1")  # fmt: skip
    try:
        yield stand_in, desired
    finally:
        stand_in.close()


@pytest.mark.rabbitmq
@pytest.mark.feed
def test_device_on_node1_gets_the_push_from_node2_through_config_get(
    pki: Pki, cluster: rabbit.RabbitCluster, portal: tuple[PortalStandIn, dict], tmp_path: Path
) -> None:
    stand_in, desired = portal
    node1, node2 = (n.mqtt_port for n in cluster.nodes)
    doc = json.dumps({"version": 5, "device_id": DEVICE}).encode()
    desired[DEVICE] = doc
    stand_in.client.publish(DESIRED, doc, qos=1, retain=True).wait_for_publish(10)

    def marker(data: bytes) -> None:
        stand_in.client.publish(DESIRED, data, qos=1)

    device_tls = client_tls(pki, pki.client_cert, pki.client_key)
    # The retained copy lives on node 2 only: a subscriber there gets it, one on node 1 not.
    on2 = rabbit.seen_before_marker(node2, device_tls, "probe-2", DESIRED, marker)
    on1 = rabbit.seen_before_marker(node1, device_tls, "probe-1", DESIRED, marker)
    assert on2 == [(doc, True)] and on1 == []

    daemon = Daemon()
    link = PortalLink(settings_for(pki, node1, backoff_initial=1.0), DEVICE, daemon.post,
                      software_version="9.9.9", applied_version=lambda: None,
                      on_state=daemon.on_state, on_desired=daemon.on_desired,
                      state_dir=str(tmp_path / "state"))  # fmt: skip
    link.start()
    try:
        # MQTT 5 asked first (the default), refused, then 3.1.1; config/get answered from node 2.
        assert daemon.run_until(lambda: doc in daemon.desired, timeout=60), daemon.states
        assert link.protocol == "3.1.1"
        assert any("trying MQTT 3.1.1" in s.reason for s in daemon.states)
        assert [d for d, _r in stand_in.requests] == [DEVICE]
        # A live push from node 2 reaches the subscribed device on node 1.
        newer = json.dumps({"version": 6, "device_id": DEVICE}).encode()
        desired[DEVICE] = newer
        stand_in.push(DEVICE, newer)
        assert daemon.run_until(lambda: newer in daemon.desired, timeout=30)
    finally:
        link.stop()


@pytest.mark.rabbitmq
@pytest.mark.feed
def test_device_cannot_write_its_own_desired_state(pki: Pki, cluster: rabbit.RabbitCluster) -> None:
    """RabbitMQ refuses the publish by closing the connection; nothing reaches the portal."""
    node1, node2 = (n.mqtt_port for n in cluster.nodes)
    observer = Observer(pki, node2, [DESIRED], client_id="test-observer")
    kwargs: dict[str, Any] = {"client_id": "thief", "protocol": mqtt.MQTTv311}
    api = getattr(mqtt, "CallbackAPIVersion", None)
    if api is not None:
        kwargs["callback_api_version"] = api.VERSION2
    thief = mqtt.Client(**kwargs)
    thief.tls_set_context(client_tls(pki, pki.client_cert, pki.client_key))
    connected, closed = threading.Event(), threading.Event()
    thief.on_connect = lambda *_a: connected.set()
    thief.on_disconnect = lambda *_a: closed.set()
    try:
        thief.connect("localhost", node1, 30)
        thief.loop_start()
        assert connected.wait(15)
        thief.publish(DESIRED, b'{"version": 1099511627776}', qos=1)
        assert closed.wait(15)
        observer.publish(DESIRED, b"marker")
        live = []  # what arrived before the marker, apart from the retained cache
        while (item := observer.get(DESIRED, timeout=15))[1] != b"marker":
            live += [] if item[2] else [item]
        assert live == []
    finally:
        with contextlib.suppress(Exception):
            thief.disconnect()
        thief.loop_stop()
        observer.close()
