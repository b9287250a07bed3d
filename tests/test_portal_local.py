"""Where a push meets the local file: device-local keys stay local, write-back keeps the form."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from energyhubd.config.errors import ConfigError
from energyhubd.configfile import load_file
from energyhubd.openwrt.uci_document import document_to_uci
from energyhubd.portal.local import merge_local, validate_push, write_back

pytestmark = pytest.mark.feed

LOCAL = {
    "version": 3,
    "device_id": "eh-000123",
    "platform": "linux",
    "state_dir": "/var/lib/energyhubd",
    "control": {"socket": "/run/energyhubd.sock"},
    "portal": {"host": "data2.ferroamp.se", "health_interval": 120},
}
PUSH = {
    "version": 4,
    "lan": {"dhcp": {"lease_time": "12h"}},
    "forwards": [
        {"name": "modbus", "proto": "tcp", "port": 502, "target": "192.168.254.201",
         "allow_from": ["198.51.100.20"]},
    ],
}  # fmt: skip


def test_push_runs_with_the_devices_own_keys() -> None:
    merged = merge_local(PUSH, LOCAL)
    assert merged["portal"] == LOCAL["portal"] and merged["state_dir"] == LOCAL["state_dir"]
    assert merged["device_id"] == "eh-000123" and merged["version"] == 4
    config = validate_push(PUSH, LOCAL)
    assert config.version == 4 and config.portal.health_interval == 120


def test_push_that_sets_a_device_local_key_is_refused_by_name() -> None:
    with pytest.raises(ConfigError) as caught:
        validate_push({**PUSH, "portal": {"host": "evil.example"}, "state_dir": "/tmp"}, LOCAL)
    fields = sorted(e.path for e in caught.value.errors)
    assert fields == ["portal", "state_dir"]


def test_write_back_keeps_a_json_file_json(tmp_path: Path) -> None:
    path = tmp_path / "energyhub.json"
    path.write_text(json.dumps(LOCAL))
    merged = merge_local(PUSH, LOCAL)
    assert write_back(str(path), merged) is True
    assert load_file(path) == validate_push(PUSH, LOCAL)
    assert write_back(str(path), merged) is False  # unchanged: flash is not written again


def test_write_back_keeps_a_uci_file_uci(tmp_path: Path) -> None:
    path = tmp_path / "energyhub"
    path.write_text(document_to_uci(LOCAL))
    merged = merge_local(PUSH, LOCAL)
    assert write_back(str(path), merged) is True
    text = path.read_text()
    assert text.lstrip().startswith(("config", "#")) and "12h" in text
    assert load_file(path) == validate_push(PUSH, LOCAL)
