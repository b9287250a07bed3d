"""Serve the control MethodTable as the ubus object ``energyhub`` (OpenWrt only).

A thin adapter over python3-ubus, shaped by that binding's sharp edges (BRIEF §3):

* one global connection per process, driven by ``ubus.loop(timeout_ms)``, which blocks inside
  uloop: so one dedicated thread owns the connection and loops in short slices, checking a
  stop flag between slices. No other thread may touch the binding while it loops (a
  concurrent ``ubus.call`` deadlocks), so this class offers no call method at all;
* a handler must reply synchronously: every method answers from ``MethodTable.call``, which
  the daemon backs with a published snapshot, so no handler waits for the event loop;
* libubox/uloop installs its own SIGTERM handler only where none exists, so the daemon's
  Python handler must be installed before ``connect()`` (``start`` refuses otherwise);
* the stock binding rejects a call whose arguments differ in any way from the registered
  signature, with a bare "Invalid argument", and rpcd adds ``ubus_rpc_session`` to every LuCI
  call. Our package patches the binding (``LENIENT_SIGNATURE``) to pass unknown and missing
  keys through: the MethodTable then checks arguments exactly as for the Unix socket and says
  what is wrong. With a stock binding each method is registered with an empty signature:
  ``ubus call energyhub status`` works, calls with arguments or through rpcd are refused by
  the binding (see docs/openwrt.md);
* uloop also takes SIGCHLD if nobody holds it and then reaps *every* child with
  ``waitpid(-1)``, which steals the exit status of ``nft``/``uci`` runs made by other
  threads (``subprocess`` then reports success). ``start`` installs a do-nothing Python
  SIGCHLD handler first (not SIG_IGN, which would reap automatically);
* the binding does not notice that ubusd went away, so the thread probes its own object
  every few seconds and reconnects with capped, jittered backoff.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import signal
import threading
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

from energyhubd.backoff import Backoff
from energyhubd.control.methods import TRANSPORT_ARGS, MethodError, MethodTable

log = logging.getLogger("energyhubd.ubus")

OBJECT_NAME = "energyhub"
SLICE_MS = 200
PROBE_INTERVAL = 5.0
BACKOFF_INITIAL = 0.5
BACKOFF_MAX = 30.0


def available() -> bool:
    """True when the python3-ubus binding is installed (without importing it)."""
    try:
        return importlib.util.find_spec("ubus") is not None
    except (ImportError, ValueError):
        return False


def _load_ubus() -> ModuleType:
    return importlib.import_module("ubus")


def _jsonable(result: dict[str, Any]) -> dict[str, Any]:
    """Make a method result safe for the binding's ``json.dumps`` (addresses become text)."""
    value = json.loads(json.dumps(result, default=str))
    if not isinstance(value, dict):
        raise TypeError("a ubus reply must be an object")
    return value


def _sigchld_noop(signum: int, frame: object) -> None:
    """Holds SIGCHLD so that uloop does not install its reaping handler."""


def _keep_sigchld_from_uloop() -> None:
    if signal.getsignal(signal.SIGCHLD) not in (signal.SIG_DFL, None):
        return
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGCHLD, _sigchld_noop)
    else:
        log.warning(
            "ubus: SIGCHLD is default and start() is not on the main thread: uloop "
            "may reap children of other threads"
        )


class UbusTransport:
    """Owns the ubus connection on its own thread; ``start()``/``stop()`` from the daemon."""

    def __init__(
        self,
        table: MethodTable,
        *,
        object_name: str = OBJECT_NAME,
        socket_path: str | None = None,
        slice_ms: int = SLICE_MS,
        probe_interval: float = PROBE_INTERVAL,
        backoff_initial: float = BACKOFF_INITIAL,
        backoff_max: float = BACKOFF_MAX,
        loader: Callable[[], ModuleType] = _load_ubus,
    ) -> None:
        self.table = table
        self.object_name = object_name
        self.socket_path = socket_path
        self.slice_ms = slice_ms
        self.probe_interval = probe_interval
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self._loader = loader
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.connected = threading.Event()
        self.connects = 0
        self.lenient = False
        self.last_error = ""

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start the ubus thread; the daemon's SIGTERM handler must already be installed."""
        handler = signal.getsignal(signal.SIGTERM)
        if handler in (signal.SIG_DFL, None):
            raise RuntimeError(
                "install the daemon's SIGTERM handler before starting the ubus transport: "
                "libubox installs its own at connect() and shutdown would then hang"
            )
        _keep_sigchld_from_uloop()
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="ubus", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> bool:
        """Ask the thread to leave after the current loop slice; True when it has ended."""
        self._stop.set()
        thread = self._thread
        if thread is None:
            return True
        thread.join(timeout if timeout is not None else 5 * self.slice_ms / 1000 + 1)
        return not thread.is_alive()

    # ------------------------------------------------------------------ thread body

    def _run(self) -> None:
        backoff = Backoff(self.backoff_initial, self.backoff_max)
        while not self._stop.is_set():
            ubus: ModuleType | None = None
            delay = 0.0
            try:
                ubus = self._loader()
                self._connect(ubus)
                backoff.reset()
                self._serve(ubus)
            except Exception as exc:  # the binding raises RuntimeError/IOError/TypeError
                self.last_error = f"{type(exc).__name__}: {exc}"
                delay = backoff.next_delay()
                log.warning("ubus: %s; retrying in %.1fs", self.last_error, delay)
            finally:
                self.connected.clear()
                if ubus is not None:
                    self._disconnect(ubus)
            if self._stop.wait(delay or backoff.next_delay()):
                break

    def _connect(self, ubus: ModuleType) -> None:
        if self.socket_path:
            ubus.connect(socket_path=self.socket_path)
        else:
            ubus.connect()
        self.lenient = bool(getattr(ubus, "LENIENT_SIGNATURE", False))
        if not self.lenient and self.connects == 0:
            log.warning(
                "ubus: stock python3-ubus binding: calls with arguments or through rpcd/LuCI "
                "(ubus_rpc_session) are refused by the binding; install the patched package"
            )
        ubus.add(self.object_name, self._methods(ubus))
        self.connects += 1
        self.connected.set()
        log.info("ubus: object %r registered", self.object_name)

    def _serve(self, ubus: ModuleType) -> None:
        next_probe = time.monotonic() + self.probe_interval
        while not self._stop.is_set():
            ubus.loop(self.slice_ms)
            if time.monotonic() >= next_probe:
                next_probe = time.monotonic() + self.probe_interval
                if self.object_name not in ubus.objects(self.object_name):
                    raise ConnectionError("our object vanished from ubusd (ubusd restarted?)")

    @staticmethod
    def _disconnect(ubus: ModuleType) -> None:
        try:
            if ubus.get_connected():
                ubus.disconnect(deregister=False)
        except Exception as exc:  # a dead connection may fail to close; it is gone anyway
            log.debug("ubus: disconnect: %s", exc)

    # ------------------------------------------------------------------ methods

    def _methods(self, ubus: ModuleType) -> dict[str, dict[str, Any]]:
        unspec = getattr(ubus, "BLOBMSG_TYPE_UNSPEC", 0)
        methods: dict[str, dict[str, Any]] = {}
        for name, method in self.table.methods.items():
            signature: dict[str, int] = {}
            if self.lenient:
                # Names only (UNSPEC accepts any type): ``ubus -v list`` shows them, and the
                # MethodTable does the type check with messages a user can act on.
                # ubus_rpc_session (TRANSPORT_ARGS) passes the patched binding unlisted.
                signature = {arg: unspec for arg in method.args if arg not in TRANSPORT_ARGS}
            methods[name] = {"method": self._handler(name), "signature": signature}
        return methods

    def _handler(self, name: str) -> Callable[[Any, Any], None]:
        def handle(handler: Any, data: Any) -> None:
            handler.reply(self.answer(name, data))

        return handle

    def answer(self, name: str, data: Any) -> dict[str, Any]:
        """The reply for one call; refusals become ``{"error": ...}`` rather than a bare code.

        A ubus status code alone ("Invalid argument") would not say which argument was wrong.
        """
        if data is None:
            data = {}
        if not isinstance(data, dict):
            return {"error": f"{name}: arguments must be an object", "method": name}
        try:
            return _jsonable(self.table.call(name, data))
        except MethodError as exc:
            return {"error": str(exc), "method": name}
        except Exception as exc:
            log.exception("ubus: %s failed", name)
            return {"error": f"{name}: internal error ({type(exc).__name__})", "method": name}
