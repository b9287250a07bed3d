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
import logging
from pathlib import Path
from typing import Any

from energyhubd.config.atomic import write_if_changed
from energyhubd.config.errors import ConfigError, FieldError
from energyhubd.config.model import Config
from energyhubd.configfile import load_file, parse_document

log = logging.getLogger("energyhubd")

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


class LocalConfig:
    """The device's configuration file and its last valid content, owned by the event loop.

    ``config`` is what a push is merged with and what a rollback without a confirmed push
    returns to; it changes on a successful reload and when a push is confirmed. ``rejected``:
    the errors of the last reload that refused the file (status shows them until one succeeds).
    """

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.config: Config | None = None
        self.rejected: list[dict[str, str]] | None = None

    @property
    def document(self) -> dict[str, Any]:
        return self.config.document if self.config is not None else {}

    def load(self) -> Config:
        """Read and check the file (built-in defaults without one); raises ConfigError."""
        if self.path is None:
            return parse_document({}, "built-in defaults")
        return load_file(self.path)

    def validate(self, document: dict[str, Any]) -> Config:
        return validate_push(document, self.document)

    def startup(self, local: Config, last_good: dict[str, Any] | None) -> Config:
        """A confirmed push newer than the local file (write-back failed) wins at start."""
        if last_good is None or not isinstance(last_good.get("version"), int):
            return local
        if last_good["version"] <= local.version:
            return local
        try:
            return self.validate(last_good)
        except ConfigError as exc:
            log.error("confirmed push %s no longer valid here: %s", last_good["version"], exc)
            return local

    def restore(self, last_good: dict[str, Any] | None) -> Config:
        """What a rollback returns to: the last confirmed push, or the local file."""
        config = self.config
        if last_good is not None:
            try:
                config = self.validate(last_good)
            except ConfigError as exc:
                log.error("last good push is not valid here, using the local file: %s", exc)
        return config if config is not None else self.load()

    def confirmed(self, document: dict[str, Any]) -> None:
        """A push stood its confirm window: the local file now says what runs."""
        merged = merge_local(document, self.document)
        try:
            self.config = parse_document(merged, "confirmed push")
        except ConfigError as exc:
            log.error("confirmed push not kept as local configuration: %s", exc)
            return
        if self.path is None:
            return
        try:
            if write_back(self.path, merged):
                log.info("configuration version %s written to %s", merged.get("version"), self.path)
        except OSError as exc:
            log.error("could not write the confirmed push to %s: %s", self.path, exc)
