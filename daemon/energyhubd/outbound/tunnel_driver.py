"""The support tunnel inside the daemon: a ``TunnelSupervisor`` (``outbound.tunnel``) created
from the configuration and driven by a ``LoopWatch``: its pidfd as a reader, its expiry and
restart deadline as a timer; no polling and no thread.

Threading contract: loop only. The supervisor is the loop's, so control threads reach
``open``/``close`` through ``call_on_loop``.

The supervisor is recreated only when the tunnel's settings, the gateway or the state
directory change: a reload with other changes must not cut an open support session.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from energyhubd.config.model import Config
from energyhubd.loop import EventLoop
from energyhubd.outbound.tunnel import TunnelSupervisor, TunnelTarget
from energyhubd.supervisor import LoopWatch

log = logging.getLogger("energyhubd.outbound")


class TunnelDriver:
    def __init__(self, loop: EventLoop, publish: Callable[[], None]) -> None:
        self.loop = loop
        self._publish = publish
        self.tunnel: TunnelSupervisor | None = None
        self._key: tuple[Any, ...] | None = None
        self._watch: LoopWatch | None = None

    def configure(self, config: Config) -> None:
        s = config.outbound
        key = (s.tunnel, s.gateway_address, s.gateway_port, config.state_dir)
        if key == self._key:
            return
        self.stop()
        self._key = key
        if s.tunnel.mode == "disabled":
            return
        try:
            self.tunnel = TunnelSupervisor(
                s.tunnel,
                TunnelTarget(s.gateway_address, s.gateway_port),
                os.path.join(config.state_dir, "tunnel"),
                log=log.info,
            )
        except ValueError as exc:
            log.error("support tunnel not started: %s", exc)
            return
        self._watch = LoopWatch(self.loop, self.tunnel, self._publish)
        self._watch.run(self.tunnel.start)

    def stop(self) -> None:
        """Tunnel down (reconfiguration, daemon shutdown)."""
        tunnel, watch = self.tunnel, self._watch
        if tunnel is not None and watch is not None:
            watch.run(tunnel.stop, notify=False)  # no child and no deadline after stop
            watch.close()
        self.tunnel = self._watch = None

    def _enabled(self) -> tuple[TunnelSupervisor, LoopWatch]:
        if self.tunnel is None or self._watch is None:
            raise RuntimeError("the support tunnel is disabled in the configuration")
        return self.tunnel, self._watch

    def open(self, hours: float | None = None) -> dict[str, Any]:
        """Open the tunnel (on demand: until ``hours``, default ``expiry_hours``, from now)."""
        tunnel, watch = self._enabled()
        if hours is not None and tunnel.settings.mode != "on_demand":
            # An always-on tunnel has no expiry; accepting hours would promise one.
            raise RuntimeError(
                f"hours applies only to an on_demand tunnel (mode is {tunnel.settings.mode})"
            )
        watch.run(lambda: tunnel.open(hours))
        return tunnel.status()

    def close(self) -> dict[str, Any]:
        tunnel, watch = self._enabled()
        watch.run(lambda: tunnel.close("closed on request"))
        return tunnel.status()

    def status(self) -> dict[str, Any]:
        if self.tunnel is None:
            return {"mode": "disabled", "state": "disabled"}
        return self.tunnel.status()
