"""energyhubctl's ubus client against a stand-in ``ubus`` command (libubus cannot run here).

The stand-in records its arguments and answers like the OpenWrt CLI: JSON on stdout and the
libubus status code as exit status. Everything behind the command is energyhubd's own code.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from energyhubd.control.client import ControlError
from energyhubd.control.ubus_client import call_ubus

FAKE = """#!/bin/sh
printf '%s\\n' "$@" > "{log}"
case "$5" in
  status) echo '{{"policy": {{"state": "applied"}}}}' ;;
  missing) exit 4 ;;
  refused) echo '{{"error": "unknown argument colour"}}' ;;
  garbage) echo 'not json' ;;
esac
"""


@pytest.fixture
def fake_ubus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    log = tmp_path / "args"
    script = tmp_path / "ubus"
    script.write_text(FAKE.format(log=log))
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    return log


def test_call_passes_method_and_json_arguments(fake_ubus: Path) -> None:
    assert call_ubus("status", {"verbose": True}) == {"policy": {"state": "applied"}}
    args = fake_ubus.read_text().splitlines()
    assert args[2:] == ["call", "energyhub", "status", '{"verbose": true}']


def test_missing_object_explained(fake_ubus: Path) -> None:
    with pytest.raises(ControlError, match="object not found: is energyhubd running"):
        call_ubus("missing", {})


def test_refusal_from_the_method_table_is_an_error(fake_ubus: Path) -> None:
    with pytest.raises(ControlError, match="unknown argument colour"):
        call_ubus("refused", {})


def test_non_json_answer_is_an_error(fake_ubus: Path) -> None:
    with pytest.raises(ControlError, match="not JSON"):
        call_ubus("garbage", {})
