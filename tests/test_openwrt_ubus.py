"""The ubus adapter where the real binding cannot show it, through a fake python3-ubus.

Calls from the ubus CLI and through rpcd/uhttpd, argument errors and the reconnect after a
ubusd restart run against the real binding and ubusd in tests/test_openwrt_userland.py. What
stays here needs a binding we do not build (the stock, unpatched one), a missing binding, or
a look inside the loop (slices). The fake keeps the binding's documented behaviour: one global
connection, ``add`` checking
the methods dict, ``loop(timeout_ms)`` dispatching calls only on the looping thread, the
strict signature check of the stock binding (every key present, no extra key -> "Invalid
argument") or the patched one (``LENIENT_SIGNATURE``: only types checked), ``handler.reply``
serialising with ``json.dumps``, and a ubusd restart that silently kills the connection.
"""

from __future__ import annotations

import json
import queue
import signal
import threading
import time
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from energyhubd.control import ubus_transport
from energyhubd.control.methods import Method, MethodError, MethodTable
from energyhubd.control.ubus_transport import UbusTransport

STATUS_OK, STATUS_INVALID_ARGUMENT, STATUS_NOT_FOUND, STATUS_UNKNOWN_ERROR = 0, 2, 4, 9
BLOBMSG_TYPES = {
    "BLOBMSG_TYPE_UNSPEC": 0,
    "BLOBMSG_TYPE_ARRAY": 1,
    "BLOBMSG_TYPE_TABLE": 2,
    "BLOBMSG_TYPE_STRING": 3,
    "BLOBMSG_TYPE_INT64": 4,
    "BLOBMSG_TYPE_INT32": 5,
    "BLOBMSG_TYPE_INT16": 6,
    "BLOBMSG_TYPE_INT8": 7,
    "BLOBMSG_TYPE_DOUBLE": 8,
    "BLOBMSG_TYPE_BOOL": 7,
}


def _blob_type(value: Any) -> int:
    if isinstance(value, bool):
        return 7
    if isinstance(value, int):
        return 5
    if isinstance(value, float):
        return 8
    if isinstance(value, str):
        return 3
    return 1 if isinstance(value, list) else 2


@dataclass
class Request:
    obj: str
    method: str
    args: dict[str, Any]
    done: threading.Event = field(default_factory=threading.Event)
    status: int = STATUS_OK
    replies: list[Any] = field(default_factory=list)


class FakeBus:
    """ubusd plus the binding's module state, as one object that builds a module."""

    def __init__(self, lenient: bool) -> None:
        self.lenient = lenient
        self.up = True
        self.generation = 0  # bumped by restart(); a connection from an older one is dead
        self.conn_generation: int | None = None
        self.objects: dict[str, dict[str, Any]] = {}
        self.requests: queue.Queue[Request] = queue.Queue()
        self.threads: set[str] = set()
        self.connect_count = 0
        self.in_loop = threading.Event()
        self.loop_entries = 0
        self.uloop_took_sigchld = False

    # -- the module the adapter imports -------------------------------------------------

    def module(self) -> types.ModuleType:
        mod = types.ModuleType("ubus")
        for name, value in BLOBMSG_TYPES.items():
            setattr(mod, name, value)
        if self.lenient:
            mod.LENIENT_SIGNATURE = 1  # type: ignore[attr-defined]
        mod.connect = self.connect  # type: ignore[attr-defined]
        mod.disconnect = self.disconnect  # type: ignore[attr-defined]
        mod.get_connected = self.get_connected  # type: ignore[attr-defined]
        mod.add = self.add  # type: ignore[attr-defined]
        mod.loop = self.loop  # type: ignore[attr-defined]
        mod.objects = self.objects_call  # type: ignore[attr-defined]
        mod.call = self.call  # type: ignore[attr-defined]
        return mod

    def _touch(self) -> None:
        self.threads.add(threading.current_thread().name)

    def connect(self, socket_path: str = "/var/run/ubus/ubus.sock") -> bool:
        self._touch()
        if self.conn_generation is not None:
            raise RuntimeError("You are already connected to ubus.")
        if not self.up:
            raise OSError(f"Failed to connect to the ubus socket '{socket_path}'\n")
        self.conn_generation = self.generation
        self.connect_count += 1
        # like uloop: signal handlers are taken only where the default disposition is set
        self.uloop_took_sigchld |= signal.getsignal(signal.SIGCHLD) == signal.SIG_DFL
        return True

    def _alive(self) -> bool:
        return self.conn_generation == self.generation and self.up

    def get_connected(self) -> bool:
        return self.conn_generation is not None

    def disconnect(self, deregister: bool = True) -> None:
        self._touch()
        if self.conn_generation is None:
            raise RuntimeError("You are not connected to ubus.")
        if deregister and self._alive():
            self.objects.clear()
        self.conn_generation = None

    def add(self, object_name: Any, methods: Any) -> None:
        self._touch()
        if self.conn_generation is None:
            raise RuntimeError("You are not connected to ubus.")
        if not isinstance(object_name, str) or not isinstance(methods, dict):
            raise TypeError("Incorrect method arguments!")
        for name, value in methods.items():
            if not isinstance(name, str) or not isinstance(value, dict) or len(value) != 2:
                raise TypeError("Incorrect method arguments!")
            signature = value.get("signature")
            if not isinstance(signature, dict) or not callable(value.get("method")):
                raise TypeError("Incorrect method arguments!")
            for key, kind in signature.items():
                if not isinstance(key, str) or not isinstance(kind, int) or not 0 <= kind <= 8:
                    raise TypeError("Incorrect method arguments!")
        if not self._alive() or object_name in self.objects:
            raise RuntimeError("ubus error occured: Invalid argument")
        self.objects[object_name] = methods

    def objects_call(self, path: str = "*") -> dict[str, Any]:
        self._touch()
        if self.conn_generation is None:
            raise RuntimeError("You are not connected to ubus.")
        if not self._alive():
            raise RuntimeError("ubus error occured: Connection failed")
        return {
            name: {m: v["signature"] for m, v in methods.items()}
            for name, methods in self.objects.items()
            if path in ("*", name)
        }

    def call(self, *args: Any, **kwargs: Any) -> Any:
        if self.in_loop.is_set():
            raise AssertionError("ubus.call while another thread loops: this deadlocks")
        raise NotImplementedError

    def _policies_ok(self, signature: dict[str, int], args: dict[str, Any]) -> bool:
        passed = 0
        for key, value in args.items():
            if key not in signature:
                if self.lenient:
                    continue
                return False
            passed += 1
            if signature[key] != 0 and signature[key] != _blob_type(value):
                return False
        return self.lenient or passed == len(signature)

    def loop(self, timeout: int = -1) -> None:
        self._touch()
        if self.conn_generation is None:
            raise RuntimeError("You are not connected to ubus.")
        self.in_loop.set()
        self.loop_entries += 1
        try:
            deadline = time.monotonic() + timeout / 1000
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                try:
                    request = self.requests.get(timeout=remaining)
                except queue.Empty:
                    return
                if not self._alive():
                    self.requests.put(request)  # ubusd lost it; a dead link never delivers
                    time.sleep(remaining)
                    return
                self._dispatch(request)
        finally:
            self.in_loop.clear()

    def _dispatch(self, request: Request) -> None:
        methods = self.objects.get(request.obj)
        entry = None if methods is None else methods.get(request.method)
        if entry is None:
            request.status = STATUS_NOT_FOUND
        elif not self._policies_ok(entry["signature"], request.args):
            request.status = STATUS_INVALID_ARGUMENT
        else:
            replies = request.replies

            class Handler:
                def reply(self, data: Any) -> bool:
                    replies.append(json.loads(json.dumps(data)))
                    return True

            try:
                entry["method"](Handler(), json.loads(json.dumps(request.args)))
            except Exception:
                request.status = STATUS_UNKNOWN_ERROR
        request.done.set()

    # -- the other side: a client such as the ubus CLI or rpcd --------------------------

    def invoke(
        self, obj: str, method: str, args: dict[str, Any] | None = None, timeout: float = 5.0
    ) -> tuple[int, list[Any]]:
        if obj not in self.objects:
            return STATUS_NOT_FOUND, []
        request = Request(obj, method, dict(args or {}))
        self.requests.put(request)
        if not request.done.wait(timeout):
            raise TimeoutError(f"no answer to {obj}.{method}")
        return request.status, request.replies

    def restart(self) -> None:
        """ubusd restarts: registrations are gone and the old connection is dead."""
        self.generation += 1
        self.objects.clear()


# ---------------------------------------------------------------------------- fixtures


def make_table() -> tuple[MethodTable, list[dict[str, Any]]]:
    reloads: list[dict[str, Any]] = []

    def status(args: dict[str, Any]) -> dict[str, Any]:
        return {"state": "running", "version": 7}

    def devices(args: dict[str, Any]) -> dict[str, Any]:
        rows = [
            {"name": "display", "ip": "192.168.254.200", "kind": "display"},
            {"name": "unit1", "ip": "192.168.254.201", "kind": "unit"},
        ]
        if "kind" in args:
            rows = [r for r in rows if r["kind"] == args["kind"]]
        return {"devices": rows}

    def config(args: dict[str, Any]) -> dict[str, Any]:
        import ipaddress

        # a non-JSON value as a careless handler might return: must still reach the caller
        return {"lan": {"address": ipaddress.IPv4Interface("192.168.254.1/24")}}

    def reload(args: dict[str, Any]) -> dict[str, Any]:
        if args.get("fail"):
            raise MethodError("reload: configuration has 2 errors")
        reloads.append(args)
        return {"reloaded": True}

    def crash(args: dict[str, Any]) -> dict[str, Any]:
        raise ZeroDivisionError

    table = MethodTable(
        [
            Method("status", status),
            Method("devices", devices, args={"kind": str}),
            Method("config", config),
            Method("reload", reload, args={"fail": bool}, write=True),
            Method("crash", crash),
        ]
    )
    return table, reloads


@pytest.fixture
def sigterm_handler() -> Iterator[None]:
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    previous_chld = signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGCHLD, previous_chld)


def start(bus: FakeBus, table: MethodTable, **kwargs: Any) -> UbusTransport:
    transport = UbusTransport(table, loader=bus.module, slice_ms=50, **kwargs)
    transport.start()
    assert transport.connected.wait(5), transport.last_error
    return transport


# ---------------------------------------------------------------------------- tests


def test_stock_binding_refuses_rpcd_calls_as_documented(sigterm_handler: None) -> None:
    """Without the patch LuCI calls fail in the binding: the reason the package patches it."""
    bus = FakeBus(lenient=False)
    table, _ = make_table()
    transport = start(bus, table)
    try:
        status, replies = bus.invoke("energyhub", "status", {"ubus_rpc_session": "x" * 32})
        assert (status, replies) == (STATUS_INVALID_ARGUMENT, [])
        assert bus.invoke("energyhub", "status")[0] == STATUS_OK
    finally:
        assert transport.stop()


def test_stop_ends_the_thread_within_one_loop_slice(sigterm_handler: None) -> None:
    bus = FakeBus(lenient=True)
    table, _ = make_table()
    transport = UbusTransport(table, loader=bus.module, slice_ms=200)
    transport.start()
    assert transport.connected.wait(5)
    assert bus.in_loop.wait(5)
    entries = bus.loop_entries
    assert transport.stop(timeout=5)
    # the thread left after the slice it was in: no further loop() call was started
    assert bus.loop_entries <= entries + 1
    assert not bus.get_connected()


def test_start_refuses_without_a_sigterm_handler() -> None:
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        bus = FakeBus(lenient=True)
        table, _ = make_table()
        with pytest.raises(RuntimeError, match="SIGTERM handler"):
            UbusTransport(table, loader=bus.module).start()
        assert bus.connect_count == 0
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_missing_binding_is_reported_not_fatal(sigterm_handler: None) -> None:
    def loader() -> types.ModuleType:
        raise ModuleNotFoundError("No module named 'ubus'")

    table, _ = make_table()
    transport = UbusTransport(table, loader=loader, backoff_initial=0.05)
    transport.start()
    deadline = time.monotonic() + 5
    while not transport.last_error and time.monotonic() < deadline:
        time.sleep(0.01)
    assert "No module named 'ubus'" in transport.last_error
    assert transport.stop()
    assert ubus_transport.available() is False  # not installable here
