"""energyhubctl's reading of ``ubus`` exit codes and answers (pure functions).

The calls themselves run against the real ``ubus`` CLI and daemon in
tests/test_openwrt_userland.py.
"""

from __future__ import annotations

import pytest

from energyhubd.control.ubus_client import failure_reason, is_refusal, ubus_status


@pytest.mark.parametrize(
    ("code", "status"),
    [(254, 2), (253, 3), (252, 4), (250, 6), (249, 7), (244, 12), (2, 2), (7, 7), (4, 4)],
)
def test_both_spellings_of_the_status_are_read(code: int, status: int) -> None:
    assert ubus_status(code) == status


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (254, "invalid argument"),
        (253, "method not found"),
        (252, "object not found: is energyhubd running?"),
        (250, "permission denied"),
        (249, "timed out"),
        (255, "cannot connect to ubusd"),
        (200, "ubus exit status 200"),
    ],
)
def test_failures_are_one_short_sentence(code: int, text: str) -> None:
    assert failure_reason(code) == text


def test_refusal_is_the_adapters_error_shape_only() -> None:
    assert is_refusal({"error": "tunnel: disabled", "method": "tunnel"})
    assert is_refusal({"error": "refused"})
    # an answer that merely has an "error" field (a tunnel's last error, say) is an answer
    assert not is_refusal({"error": "connect timeout", "state": "down", "mode": "always"})
    assert not is_refusal({})
