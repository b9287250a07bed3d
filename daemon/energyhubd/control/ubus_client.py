"""``energyhubctl`` over ubus: one ``ubus call energyhub <method>`` through the ubus CLI.

The client deliberately uses the ``ubus`` command rather than python3-ubus: the binding allows
one connection per process and wants its own loop, which a one-shot CLI does not need, and
the command exists on every OpenWrt image. Answers are the same JSON the Unix socket gives,
so ``energyhubctl`` renders both alike.
"""

from __future__ import annotations

import json
import math
import subprocess
from typing import Any

from energyhubd.control.client import ControlError

OBJECT = "energyhub"
# libubus UBUS_STATUS_* codes worth a sentence instead of a number.
STATUS_TEXT = {
    1: "invalid command",
    2: "invalid argument",
    3: "method not found",
    4: "object not found: is energyhubd running?",
    5: "no data",
    6: "permission denied",
    7: "timed out",
    8: "not supported",
    9: "unknown error",
    10: "connection failed",
    11: "out of memory",
    12: "the arguments are not valid JSON",
    13: "system error",
}
# `ubus` exits with 255 (-1) when it cannot connect to ubusd at all.
NO_UBUSD = 255


def ubus_status(returncode: int) -> int:
    """The UBUS_STATUS_* behind an exit code of the ``ubus`` CLI.

    Since 2022 ``ubus call`` exits with the negated status (254 = invalid argument, 249 =
    timeout, ...) when its stderr is not a terminal, as under ``subprocess``; on a terminal it
    exits with the status itself. Both spellings are accepted.
    """
    return 256 - returncode if returncode > 128 else returncode


def failure_reason(returncode: int) -> str:
    """A short sentence for a failed ``ubus call`` (never ubus's usage text)."""
    if returncode == NO_UBUSD:
        return "cannot connect to ubusd"
    status = ubus_status(returncode)
    return STATUS_TEXT.get(status, f"ubus exit status {returncode}")


def is_refusal(answer: dict[str, Any]) -> bool:
    """The daemon's ubus adapter answers a refused call with ``{"error": ..., "method": ...}``."""
    return "error" in answer and set(answer) <= {"error", "method"}


def call_ubus(method: str, params: dict[str, Any], timeout: float = 35.0) -> dict[str, Any]:
    """Call ``energyhub.<method>``; raise ControlError with a readable reason on failure.

    ``timeout`` is handed to ``ubus -t`` (whole seconds, rounded up), so a long diagnose run
    is not cut off by the CLI's own default.
    """
    seconds = max(1, math.ceil(timeout))
    cmd = ["ubus", "-t", str(seconds), "call", OBJECT, method, json.dumps(params)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 5)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ControlError(f"ubus call {OBJECT} {method}: {exc}") from None
    if proc.returncode != 0:
        raise ControlError(f"ubus call {OBJECT} {method}: {failure_reason(proc.returncode)}")
    try:
        answer = json.loads(proc.stdout or "{}")
    except ValueError:
        raise ControlError(f"ubus call {OBJECT} {method}: answer is not JSON") from None
    if not isinstance(answer, dict):
        raise ControlError(f"ubus call {OBJECT} {method}: answer is not an object")
    if is_refusal(answer):
        raise ControlError(str(answer["error"]))
    return answer
