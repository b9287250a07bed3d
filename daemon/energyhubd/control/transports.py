"""Start the control transports that serve one method table: the local socket always, and
on OpenWrt (or with ``control.ubus_socket``) the ubus object ``energyhub`` too. Each runs on
its own thread (see their modules) and only reads the published snapshot or hands work to the
loop (``call_on_loop``)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from energyhubd.config.model import Config
from energyhubd.control.methods import MethodError, MethodTable
from energyhubd.loop import EventLoop

log = logging.getLogger("energyhubd")


def start_transports(config: Config, methods: MethodTable) -> list[Callable[[], object]]:
    """Start them; returns their stop functions, last started first. Call this only after
    the daemon's SIGTERM handler is installed: libubox must not take the handler."""
    from energyhubd.control import ubus_transport
    from energyhubd.control.socket_server import ControlServer

    servers: list[Any] = [ControlServer(config.control_socket, methods)]
    # ``control.ubus_socket`` serves ubus on another platform too (the lab's LuCI test runs a
    # real ubusd beside a Linux-platform daemon).
    wanted = config.platform == "openwrt" or config.ubus_socket is not None
    if wanted and ubus_transport.available():
        servers.append(ubus_transport.UbusTransport(methods, socket_path=config.ubus_socket))
    elif wanted:
        log.warning("python3-ubus is not installed: no ubus object, socket only")
    for server in servers:
        server.start()
    return [server.stop for server in reversed(servers)]


def call_on_loop(
    loop: EventLoop, func: Callable[[], dict[str, Any]], timeout: float = 30.0
) -> dict[str, Any]:
    """From a transport's thread: run ``func`` on the loop and wait for its answer."""
    done, box = threading.Event(), dict[str, Any]()

    def run() -> None:
        try:
            box["result"] = func()
        except Exception as exc:  # handed back to the caller's thread
            box["error"] = exc
        finally:
            done.set()

    loop.post(run)
    if not done.wait(timeout):
        raise MethodError("the daemon is busy; try again")
    if "error" in box:
        raise MethodError(str(box["error"]))
    result: dict[str, Any] = box["result"]
    return result
