"""The local control socket: one JSON request per line, one JSON answer per line.

Served on its own thread so a query never waits for the event loop. Each connection is
answered on a short-lived thread (at most ``MAX_CLIENTS`` at once): ``diagnose`` may wait many
seconds for its worker, and ``status`` must still answer meanwhile. The socket is created
mode 0600: only root (the administrator) may talk to the daemon.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
from pathlib import Path
from typing import Any

from energyhubd.control.methods import MethodError, MethodTable

log = logging.getLogger("energyhubd.control")

MAX_REQUEST = 64 * 1024
CLIENT_TIMEOUT = 5.0
MAX_CLIENTS = 8


def handle_request(table: MethodTable, raw: bytes) -> dict[str, Any]:
    """Decode, dispatch and wrap one request; every failure becomes ``{"ok": false}``."""
    try:
        request = json.loads(raw)
    except ValueError as exc:
        return {"ok": False, "error": f"request is not JSON: {exc}"}
    if not isinstance(request, dict):
        return {"ok": False, "error": "request must be a JSON object"}
    method = request.get("method")
    args = request.get("args", {})
    if not isinstance(method, str):
        return {"ok": False, "error": "request.method must be a string"}
    if not isinstance(args, dict):
        return {"ok": False, "error": "request.args must be an object"}
    try:
        return {"ok": True, "result": table.call(method, args)}
    except MethodError as exc:
        return {"ok": False, "error": str(exc)}
    except Exception:
        log.exception("control method %s failed", method)
        return {"ok": False, "error": f"{method}: internal error (see the daemon log)"}


class ControlServer:
    def __init__(self, path: str, table: MethodTable) -> None:
        self.path = path
        self.table = table
        self._stop = threading.Event()
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            self._sock.bind(path)
        finally:
            os.umask(old)
        self._sock.listen(8)
        self._thread = threading.Thread(target=self._serve, name="control", daemon=True)
        self._slots = threading.BoundedSemaphore(MAX_CLIENTS)

    def start(self) -> None:
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()  # blocks; stop() shuts the socket down
            except OSError:
                if self._stop.is_set():
                    return
                continue
            if not self._slots.acquire(blocking=False):
                # Every slot busy: say so instead of queueing behind slow calls.
                with conn, contextlib.suppress(OSError):
                    conn.sendall(b'{"ok": false, "error": "the daemon is busy; try again"}\n')
                continue
            threading.Thread(
                target=self._answer_and_close, args=(conn,), name="control-client", daemon=True
            ).start()

    def _answer_and_close(self, conn: socket.socket) -> None:
        try:
            with conn:
                self._answer(conn)
        finally:
            self._slots.release()

    def _answer(self, conn: socket.socket) -> None:
        conn.settimeout(CLIENT_TIMEOUT)
        buf = b""
        try:
            while b"\n" not in buf and len(buf) <= MAX_REQUEST:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                buf += chunk
            if len(buf) > MAX_REQUEST:
                reply = {"ok": False, "error": f"request larger than {MAX_REQUEST} bytes"}
            else:
                reply = handle_request(self.table, buf.split(b"\n", 1)[0])
            conn.sendall(json.dumps(reply).encode() + b"\n")
        except OSError as exc:
            log.debug("control client went away: %s", exc)

    def stop(self) -> None:
        self._stop.set()
        # shutdown() wakes the thread blocked in accept() (Linux), without a polling timeout.
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._thread.join(timeout=2)
        with contextlib.suppress(OSError):
            os.unlink(self.path)
