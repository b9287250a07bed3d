"""Where a pushed configuration meets the device's own configuration file.

The portal owns the site policy; the device owns how it reaches the portal and where it keeps
its state. A push therefore may not set the device-local keys (a bad ``portal`` section in a
push could cut the very link that has to confirm it, and the portal cannot know this router's
paths); they are taken from the local file. A confirmed push is written back to that file so
that ``uci show energyhub`` (or the JSON file) shows what runs and a restart starts from it.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from energyhubd.config.atomic import write_if_changed
from energyhubd.config.errors import ConfigError, FieldError
from energyhubd.config.model import Config
from energyhubd.configfile import parse_document

DEVICE_LOCAL_KEYS = ("platform", "state_dir", "control", "portal")


def merge_local(pushed: dict[str, Any], local_document: dict[str, Any]) -> dict[str, Any]:
    """The document that runs: the push, plus the device-local keys of the local file."""
    merged = {k: copy.deepcopy(v) for k, v in pushed.items() if k not in DEVICE_LOCAL_KEYS}
    for key in DEVICE_LOCAL_KEYS:
        if key in local_document:
            merged[key] = copy.deepcopy(local_document[key])
    if "device_id" not in merged and "device_id" in local_document:
        merged["device_id"] = local_document["device_id"]
    return merged


def validate_push(pushed: dict[str, Any], local_document: dict[str, Any]) -> Config:
    """Full validation of a push as it would run here; raises ConfigError naming the fields."""
    errors = [
        FieldError(key, "set on the device only; a push cannot change it")
        for key in DEVICE_LOCAL_KEYS
        if key in pushed
    ]
    if errors:
        raise ConfigError(errors, "push")
    return parse_document(merge_local(pushed, local_document), "push")


def is_json_file(path: str) -> bool:
    """The local file's form: JSON (``.json`` or starts with ``{``) or UCI."""
    if path.endswith(".json"):
        return True
    try:
        return Path(path).read_bytes().lstrip().startswith(b"{")
    except OSError:
        return False


def write_back(path: str, document: dict[str, Any]) -> bool:
    """Write the running document to the local file in its own form; True if written."""
    if is_json_file(path):
        text = json.dumps(document, indent=2, sort_keys=True) + "\n"
        return write_if_changed(path, text)
    from energyhubd.openwrt import uci_document  # the UCI form, only on routers that use it

    return uci_document.write_back(path, document)
