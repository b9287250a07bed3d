"""The daemon's control methods, answered from the published snapshot.

Read methods never wait for the event loop; ``reload`` (a write method) is handed to the loop
and its result returned.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from energyhubd.config.model import Config
from energyhubd.control.methods import Method, MethodTable

if TYPE_CHECKING:
    from energyhubd.service import Daemon

SECRET_WORDS = ("key", "password", "secret", "token", "passphrase")


def redact(value: Any, key: str = "") -> Any:
    """Hide secrets (by key name) in a configuration document before it leaves the daemon.

    File paths to keys are not secrets; inline key material and passwords are.
    """
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, key) for v in value]
    lowered = key.lower()
    is_path = lowered.endswith(("_file", "_path"))
    if not is_path and any(word in lowered for word in SECRET_WORDS) and value not in (None, ""):
        return "***"
    return value


def render_running_config(config: Config) -> dict[str, Any]:
    document = json.loads(json.dumps(config.document))
    return {"version": config.version, "platform": config.platform, "document": redact(document)}


def build_method_table(daemon: Daemon) -> MethodTable:
    def status(_args: dict[str, Any]) -> dict[str, Any]:
        return daemon.snapshot

    def devices(_args: dict[str, Any]) -> dict[str, Any]:
        return {
            "devices": daemon.snapshot.get("devices", []),
            "summary": daemon.snapshot.get("inventory", {}),
        }

    def config(_args: dict[str, Any]) -> dict[str, Any]:
        return daemon.running_config()

    def reload(_args: dict[str, Any]) -> dict[str, Any]:
        return daemon.call_on_loop(lambda: daemon.reload("control reload"))

    return MethodTable(
        [
            Method("status", status, doc="health of the daemon, policy, WAN, LAN and forwards"),
            Method("devices", devices, doc="devices on the internal network"),
            Method("config", config, doc="the running configuration, secrets redacted"),
            Method("reload", reload, write=True, doc="re-read the configuration and apply it"),
        ]
    )
