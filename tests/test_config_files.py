"""Configuration files: JSON and UCI load into the same model; errors point at the line."""

from __future__ import annotations

from pathlib import Path

import pytest

from energyhubd.config.errors import ConfigError
from energyhubd.configfile import load_file, parse_document

DEFAULT_UCI = (
    Path(__file__).resolve().parent.parent / "openwrt-package/energyhubd/files/energyhub.config"
)


def test_default_uci_file_is_the_empty_document(tmp_path: Path) -> None:
    assert load_file(DEFAULT_UCI) == parse_document({})


def test_uci_errors_name_file_line_and_option(tmp_path: Path) -> None:
    path = tmp_path / "energyhub"
    path.write_text(
        DEFAULT_UCI.read_text() + "\nconfig forward\n\toption name 'modbus'\n"
        "\toption port '70000'\n\toption target 'display'\n"
    )
    lines = path.read_text().splitlines()
    port_line = lines.index("\toption port '70000'") + 1
    with pytest.raises(ConfigError) as caught:
        load_file(path)
    assert f"{path}:{port_line}: option 'port': 70000 is out of range 1..65535" in str(caught.value)


def test_json_file_and_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text('{"version": 4}')
    assert load_file(path).version == 4
    empty = tmp_path / "empty.json"
    empty.write_text("")
    assert load_file(empty) == parse_document({})


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read: No such file or directory"):
        load_file(tmp_path / "nope.json")
