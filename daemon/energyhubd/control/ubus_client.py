"""``energyhubctl`` over ubus: one ``ubus call energyhub <method>`` through the ubus CLI.

The client deliberately uses the ``ubus`` command rather than python3-ubus: the binding allows
one connection per process and wants its own loop, which a one-shot CLI does not need, and
the command exists on every OpenWrt image. Answers are the same JSON the Unix socket gives,
so ``energyhubctl`` renders both alike.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

from energyhubd.control.client import ControlError

OBJECT = "energyhub"
# ubus CLI exit codes (libubus UBUS_STATUS_*) worth a sentence instead of a number.
STATUS_TEXT = {
    2: "invalid argument",
    3: "method not found",
    4: "object not found: is energyhubd running?",
    6: "permission denied",
    7: "timed out",
}


def call_ubus(method: str, params: dict[str, Any], timeout: float = 35.0) -> dict[str, Any]:
    """Call ``energyhub.<method>``; raise ControlError with a readable reason on failure."""
    cmd = ["ubus", "-t", str(max(1, int(timeout))), "call", OBJECT, method, json.dumps(params)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 5)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ControlError(f"ubus call {OBJECT} {method}: {exc}") from None
    if proc.returncode != 0:
        reason = STATUS_TEXT.get(proc.returncode, proc.stderr.strip() or f"exit {proc.returncode}")
        raise ControlError(f"ubus call {OBJECT} {method}: {reason}")
    try:
        answer = json.loads(proc.stdout or "{}")
    except ValueError:
        raise ControlError(f"ubus call {OBJECT} {method}: answer is not JSON") from None
    if not isinstance(answer, dict):
        raise ControlError(f"ubus call {OBJECT} {method}: answer is not an object")
    if "error" in answer and len(answer) == 1:
        raise ControlError(str(answer["error"]))
    return answer
