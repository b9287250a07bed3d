"""The portal's side of the lab: what the Ferroamp portal would see and send.

``PortalStandIn`` is the REFERENCE for the real portal's side of the desired-state protocol
(docs/mqtt.md § desired state): the portal owns the desired state and answers every device's
``config/get`` with the whole current document (or an empty payload for "no desired state"),
on the MQTT 5 Response Topic with the request's Correlation Data, or on ``config/desired`` for
an MQTT 3.1.1 request. Publishing ``config/desired`` retained is only a cache for brokers that
keep one retained store; correctness never depends on it (clustered brokers may not).

A recorder (``mosquitto_sub`` in the lab's internet namespace) writes every message the
router publishes under ``energyhub/<device_id>/`` to ``portal-recorder.log``; ``push`` puts a
desired configuration on the retained ``config/desired`` topic the way the portal does. Both
authenticate to the lab broker with the lab's "portal" client certificate, the only identity
the broker's ACL lets read and write every device's topics.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from energyhub_lab import internet, netns
from energyhub_lab.netns import LabError

RECORDER = "portal-recorder"
LOCAL_ONLY_KEYS = ("platform", "state_dir", "control", "portal")


def topic(device_id: str, leaf: str) -> str:
    return f"energyhub/{device_id}/{leaf}"


def recorder_command(internet_dir: Path, device_id: str) -> list[str]:
    """``mosquitto_sub`` printing ``<topic> <payload>`` per message (payloads are one line)."""
    return [
        "mosquitto_sub", *internet.portal_client_args(internet_dir), "-v",
        "-t", topic(device_id, "#"), "-i", "lab-portal-recorder",
    ]  # fmt: skip


def read_messages(log: Path, leaf: str | None = None) -> list[tuple[str, Any]]:
    """Recorded messages in order: (topic leaf, parsed JSON or raw text)."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return []
    found: list[tuple[str, Any]] = []
    for line in lines:
        name, _, payload = line.partition(" ")
        parts = name.split("/", 2)
        if len(parts) != 3 or parts[0] != "energyhub":
            continue
        if leaf is not None and parts[2] != leaf:
            continue
        try:
            value: Any = json.loads(payload)
        except ValueError:
            value = payload
        found.append((parts[2], value))
    return found


def desired_document(config: dict[str, Any], version: int, **changes: Any) -> dict[str, Any]:
    """What the portal would push: the site document without the device-local keys."""
    doc = {k: v for k, v in config.items() if k not in LOCAL_ONLY_KEYS}
    doc.update(changes)
    doc["version"] = version
    return doc


def push(
    inet_ns: str, internet_dir: Path, device_id: str, document: dict[str, Any] | bytes | None
) -> None:
    """Set the device's desired state as the portal does: store it where the stand-in answers
    ``config/get`` from, then publish it live (retained, as the optional cache). ``None``
    clears it: the stand-in answers "no desired state" and the retained copy is removed."""
    path = desired_file(internet_dir / "desired", device_id)
    path.parent.mkdir(exist_ok=True)
    if document is None:
        path.unlink(missing_ok=True)
    else:
        raw = document if isinstance(document, bytes) else json.dumps(document).encode()
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(raw)
        tmp.replace(path)
    publish(inet_ns, internet_dir, topic(device_id, "config/desired"), document, retain=True)


def publish(
    inet_ns: str,
    internet_dir: Path,
    name: str,
    document: dict[str, Any] | bytes | None,
    retain: bool = False,
) -> None:
    """One QoS 1 message as the portal; ``None`` with ``retain`` clears a retained topic."""
    cmd = ["mosquitto_pub", *internet.portal_client_args(internet_dir), "-q", "1"]
    cmd += ["-r"] if retain else []
    cmd += ["-t", name, "-i", "lab-portal-pub"]
    payload = b""
    if document is None:
        cmd.append("-n")
    else:
        payload = document if isinstance(document, bytes) else json.dumps(document).encode()
        cmd.append("-s")  # the message is stdin: no size limit of a command line
    proc = subprocess.run(netns.ns_cmd(inet_ns, cmd), input=payload, capture_output=True)
    if proc.returncode != 0:
        raise LabError(f"mosquitto_pub: {proc.stderr.decode(errors='replace').strip()}")


def wait_for_message(
    log: Path,
    leaf: str,
    predicate: Callable[[Any], bool],
    timeout: float,
    after: int = 0,
) -> Any:
    """The first recorded ``leaf`` message (from index ``after``) matching ``predicate``."""
    deadline = time.monotonic() + timeout
    while True:
        for _leaf, value in read_messages(log, leaf)[after:]:
            if predicate(value):
                return value
        if time.monotonic() > deadline:
            seen = [v for _l, v in read_messages(log, leaf)[after:]][-3:]
            raise LabError(f"no matching {leaf} message within {timeout:.0f} s; last: {seen}")
        time.sleep(0.1)


DesiredLookup = Callable[[str], "bytes | None"]


def device_of(name: str, leaf: str) -> str | None:
    """``energyhub/<id>/<leaf>`` -> ``<id>`` (None for anything else)."""
    parts = name.split("/")
    if len(parts) < 3 or parts[0] != "energyhub" or "/".join(parts[2:]) != leaf:
        return None
    return parts[1]


class PortalStandIn:
    """Answers ``config/get`` for every device from ``desired_for(device_id)``.

    Threading contract: paho's network thread (``loop_start``) runs the callbacks; the only
    state they touch is ``answered`` (a counter, read for statistics) and the lookup, which
    must be thread-safe (a dict read or a file read is).
    """

    def __init__(
        self,
        host: str,
        port: int,
        tls: ssl.SSLContext | None,
        desired_for: DesiredLookup,
        *,
        client_id: str = "portal-standin",
        protocol: str = "5",
        server_name: str | None = None,
    ) -> None:
        self.desired_for = desired_for
        self.answered = 0
        self.requests: list[tuple[str, dict]] = []
        self.protocol = protocol
        # A persistent session: requests that arrive while the stand-in reconnects (a broker
        # restart) are queued by the broker and answered afterwards.
        kwargs: dict[str, Any] = {"client_id": client_id}
        if protocol == "5":
            kwargs["protocol"] = mqtt.MQTTv5
        else:
            kwargs["protocol"] = mqtt.MQTTv311
            kwargs["clean_session"] = False
        api = getattr(mqtt, "CallbackAPIVersion", None)
        if api is not None:
            kwargs["callback_api_version"] = api.VERSION2
        self.client = mqtt.Client(**kwargs)
        if tls is not None:
            self.client.tls_set_context(tls)
        self._ready = threading.Event()
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *_a: self._ready.set()
        self.client.on_message = self._on_message
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self.client.reconnect_delay_set(1, 2)
        if protocol == "5":
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties

            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 3600
            self.client.connect(host, port, 30, clean_start=False, properties=props)
        else:
            self.client.connect(host, port, 30)
        self.client.loop_start()
        if not self._ready.wait(15):
            self.close()
            raise LabError("portal stand-in could not connect and subscribe")

    def _on_connect(self, client: Any, _u: Any, *_a: Any) -> None:
        client.subscribe("energyhub/+/config/get", qos=1)

    def _on_message(self, client: Any, _u: Any, msg: Any) -> None:
        device = device_of(msg.topic, "config/get")
        if device is None:
            return
        try:
            request = json.loads(msg.payload)
        except ValueError:
            request = {}
        self.requests.append((device, request if isinstance(request, dict) else {}))
        own = topic(device, "config/desired")
        props = getattr(msg, "properties", None)
        correlation = getattr(props, "CorrelationData", None) if props is not None else None
        # The answer goes to the device's own desired topic even if the request's Response
        # Topic names another: a device must not make the portal publish elsewhere.
        target = own
        payload = self.desired_for(device) or b""
        if self.protocol == "5" and correlation is not None:
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties

            answer = Properties(PacketTypes.PUBLISH)
            answer.CorrelationData = correlation
            client.publish(target, payload, qos=1, properties=answer)
        else:
            client.publish(target, payload, qos=1)
        self.answered += 1

    def push(self, device_id: str, payload: bytes, retain: bool = True) -> None:
        """Send a changed desired state live (and retained, as an optional cache)."""
        self.client.publish(topic(device_id, "config/desired"), payload, qos=1, retain=retain)

    def close(self) -> None:
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()


def desired_file(directory: Path, device_id: str) -> Path:
    return directory / f"{device_id}.json"


def serve(argv: list[str]) -> int:
    """``python -m energyhub_lab.portal <internet_dir> <desired_dir>``: the lab's stand-in,
    answering from ``<desired_dir>/<device_id>.json`` (absent or empty: no desired state)."""
    internet_dir, desired_dir = Path(argv[0]), Path(argv[1])
    ctx = ssl.create_default_context(cafile=str(internet_dir / "lab-ca.pem"))
    ctx.check_hostname = False  # dialled by address inside the lab; the chain is verified
    ctx.load_cert_chain(
        str(internet_dir / "portal-client.pem"), str(internet_dir / "portal-client.key")
    )

    def lookup(device: str) -> bytes | None:
        try:
            return desired_file(desired_dir, device).read_bytes()
        except OSError:
            return None

    stand_in = PortalStandIn(internet.BROKER_IP, 8883, ctx, lookup, client_id="lab-portal")
    print("portal stand-in ready", flush=True)
    try:
        threading.Event().wait()
    finally:
        stand_in.close()
    return 0


if __name__ == "__main__":
    sys.exit(serve(sys.argv[1:]))
