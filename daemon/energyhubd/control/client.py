"""Client side of the local control socket (used by energyhubctl, the lab and tests)."""

from __future__ import annotations

import json
import socket
from typing import Any


class ControlError(Exception):
    pass


def call(
    path: str, method: str, args: dict[str, Any] | None = None, timeout: float = 35.0
) -> dict[str, Any]:
    """Call one method; raise ControlError with the daemon's message when refused."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(path)
            sock.sendall(json.dumps({"method": method, "args": args or {}}).encode() + b"\n")
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                buf += chunk
    except FileNotFoundError:
        raise ControlError(f"no daemon is listening on {path} (is energyhubd running?)") from None
    except ConnectionRefusedError:
        raise ControlError(f"{path}: connection refused (is energyhubd running?)") from None
    except OSError as exc:
        raise ControlError(f"{path}: {exc.strerror or exc}") from None
    try:
        reply = json.loads(buf)
    except ValueError:
        raise ControlError(f"{path}: the daemon sent an unreadable answer") from None
    if not reply.get("ok"):
        raise ControlError(str(reply.get("error", "refused")))
    result: dict[str, Any] = reply.get("result", {})
    return result
