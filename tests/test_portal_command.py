"""Portal commands are checked before anything runs; garbage never raises past CommandError."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from energyhubd.portal.command import CommandError, command_id, parse_command

pytestmark = pytest.mark.feed


def test_tunnel_command_parsed() -> None:
    command = parse_command(b'{"id": "c-1", "method": "tunnel", "args": {"action": "open"}}')
    assert (command.id, command.method, command.args) == ("c-1", "tunnel", {"action": "open"})


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        (b'{"method": "reload"}', "method: 'reload' cannot be called from the portal"),
        (b'{"method": "tunnel", "args": []}', "args: must be an object"),
        (b'{"method": "tunnel", "colour": 1}', "colour: unknown key"),
        (b'{"id": true, "method": "tunnel"}', "id: must be a string or an integer"),
        (b'{"args": {}}', "method: required"),
        (b"[1]", "must be a JSON object"),
        (b"\xff\xfe", "not JSON"),
        (b"x" * 70000, "limit is 65536"),
    ],
)
def test_bad_commands_named(payload: bytes, needle: str) -> None:
    with pytest.raises(CommandError, match=needle.replace("[", r"\[")):
        parse_command(payload)


def test_id_recovered_for_the_answer_of_a_refused_command() -> None:
    assert command_id(b'{"id": 7, "method": "reload"}') == 7
    assert command_id(b"not json") is None


@given(st.binary(max_size=300))
def test_random_bytes_only_ever_raise_command_error(payload: bytes) -> None:
    with contextlib.suppress(CommandError):
        parse_command(payload)
    command_id(payload)
