"""MQTT topic names and payload envelopes of the portal link (documented in docs/mqtt.md).

Every topic lives under ``energyhub/<device_id>/`` so the broker can confine each site to its
own subtree (``pattern readwrite energyhub/%u/#`` with the certificate CN as user name).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

PREFIX = "energyhub"


@dataclass(frozen=True)
class Topics:
    """All topics of one device."""

    device_id: str

    def _t(self, leaf: str) -> str:
        return f"{PREFIX}/{self.device_id}/{leaf}"

    @property
    def status(self) -> str:
        return self._t("status")

    @property
    def health(self) -> str:
        return self._t("health")

    @property
    def events(self) -> str:
        return self._t("events")

    @property
    def desired(self) -> str:
        return self._t("config/desired")

    @property
    def reported(self) -> str:
        return self._t("config/reported")

    @property
    def command(self) -> str:
        return self._t("command")

    @property
    def command_result(self) -> str:
        return self._t("command/result")

    @property
    def ping(self) -> str:
        return self._t("link/ping")


def dumps(obj: object) -> bytes:
    """Compact, key-sorted JSON: small on the wire and byte-stable for identical content."""
    return json.dumps(obj, separators=(",", ":"), sort_keys=True, allow_nan=False).encode()


def status_payload(
    online: bool, software_version: str, applied_version: int | None, ts: float | None = None
) -> bytes:
    """Retained ``status``: the Last Will is the ``online: false`` variant."""
    doc: dict[str, Any] = {"state": "online" if online else "offline"}
    if online:
        doc["software"] = software_version
        doc["config_version"] = applied_version
        doc["ts"] = round(time.time() if ts is None else ts, 3)
    return dumps(doc)


def health_payload(seq: int, data: dict[str, Any], ts: float | None = None) -> bytes:
    """Envelope around the daemon's health dict: ``seq`` lets the portal see gaps."""
    return dumps({"ts": round(time.time() if ts is None else ts, 3), "seq": seq, "health": data})


def event_payload(
    seq: int, kind: str, data: dict[str, Any] | None = None, ts: float | None = None
) -> bytes:
    """One event; ``seq`` is per link instance and strictly increasing."""
    return dumps(
        {
            "ts": round(time.time() if ts is None else ts, 3),
            "seq": seq,
            "type": kind,
            "data": data or {},
        }
    )
