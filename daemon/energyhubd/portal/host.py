"""``runner.PortalHost`` for the running daemon: the steps of a push (validate, apply,
restore, confirmed) over the local configuration file and the daemon's one reconcile.

Threading contract: every method runs on the event loop, except ``status``, which the MQTT
thread may call too (it only reads the last published snapshot, replaced whole).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from energyhubd.config.model import Config
from energyhubd.portal.local import LocalConfig


class DaemonHost:
    """``reconcile`` makes every part but the portal follow a configuration (the portal is
    the one pushing it); ``command`` runs a portal command; ``status`` returns the published
    snapshot and ``changed`` publishes a new one."""

    def __init__(
        self,
        local: LocalConfig,
        reconcile: Callable[[Config, str], None],
        command: Callable[[str, dict[str, Any]], dict[str, Any]],
        status: Callable[[], dict[str, Any]],
        changed: Callable[[], None],
    ) -> None:
        self.local = local
        self._reconcile, self._command = reconcile, command
        self._status, self._changed = status, changed

    def validate(self, document: dict[str, Any]) -> Config:
        return self.local.validate(document)

    def apply(self, document: dict[str, Any], config: object) -> None:
        assert isinstance(config, Config)
        self._reconcile(config, f"portal push version {config.version}")

    def restore(self, last_good: dict[str, Any] | None) -> None:
        self._reconcile(self.local.restore(last_good), "rollback")

    def confirmed(self, document: dict[str, Any]) -> None:
        self.local.confirmed(document)

    def command(self, method: str, args: dict[str, Any]) -> dict[str, Any]:
        return self._command(method, args)

    def status(self) -> dict[str, Any]:
        return self._status()

    def changed(self) -> None:
        self._changed()
