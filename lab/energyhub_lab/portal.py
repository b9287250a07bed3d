"""The portal's side of the lab: what the Ferroamp portal would see and send.

A recorder (``mosquitto_sub`` in the lab's internet namespace) writes every message the
router publishes under ``energyhub/<device_id>/`` to ``portal-recorder.log``; ``push`` puts a
desired configuration on the retained ``config/desired`` topic the way the portal does. Both
authenticate to the lab broker with the lab's "portal" client certificate, the only identity
the broker's ACL lets read and write every device's topics.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
    """Publish (retained) to ``config/desired``; ``None`` clears the retained document."""
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
