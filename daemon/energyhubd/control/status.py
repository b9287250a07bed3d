"""The daemon's control methods, answered from the published snapshot.

Read methods never wait for the event loop; ``reload`` and ``tunnel`` (write methods) are
handed to the loop and their result returned. ``diagnose`` asks the loop for a run (an
instant call) and then waits for the worker on the calling transport's thread, so the loop
keeps serving meanwhile.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from energyhubd.config.model import Config
from energyhubd.control import transports
from energyhubd.control.methods import Method, MethodError, MethodTable
from energyhubd.portal.runner import PortalRunner, with_live_portal

if TYPE_CHECKING:
    from energyhubd.loop import EventLoop
    from energyhubd.outbound.service import OutboundService


class Controlled(Protocol):
    """What the control methods need of the daemon (``DaemonControl`` below)."""

    @property
    def snapshot(self) -> dict[str, Any]:
        """The last published status (read from any thread)."""

    @property
    def outbound(self) -> OutboundService: ...

    @property
    def portal(self) -> PortalRunner | None:
        """The portal link, if enabled: its queue length is read live for ``status``."""

    def running_config(self) -> dict[str, Any]: ...

    def reload(self, reason: str) -> dict[str, Any]:
        """On the loop: re-read the configuration and reconcile."""

    def call_on_loop(
        self, func: Callable[[], dict[str, Any]], timeout: float = 30.0
    ) -> dict[str, Any]:
        """From another thread: run ``func`` on the loop and wait for its answer."""


class DaemonControl:
    """``Controlled`` for the running daemon, from the few things the methods read.

    ``published``, ``portal`` and ``running`` are called on the transports' threads: each
    reads one reference the loop replaces whole (the status snapshot, the portal runner, the
    running ``Config``). ``reload`` runs only on the loop, handed over by ``call_on_loop``.
    """

    def __init__(
        self,
        loop: EventLoop,
        outbound: OutboundService,
        published: Callable[[], dict[str, Any]],
        portal: Callable[[], PortalRunner | None],
        running: Callable[[], Config | None],
        reload: Callable[[str], dict[str, Any]],
    ) -> None:
        self.loop, self.outbound = loop, outbound
        self._published, self._portal, self._running = published, portal, running
        self._reload = reload

    @property
    def snapshot(self) -> dict[str, Any]:
        return self._published()

    @property
    def portal(self) -> PortalRunner | None:
        return self._portal()

    def running_config(self) -> dict[str, Any]:
        config = self._running()
        if config is None:
            raise MethodError("no configuration is applied yet")
        return render_running_config(config)

    def reload(self, reason: str) -> dict[str, Any]:
        return self._reload(reason)

    def call_on_loop(
        self, func: Callable[[], dict[str, Any]], timeout: float = 30.0
    ) -> dict[str, Any]:
        return transports.call_on_loop(self.loop, func, timeout)


SECRET_WORDS = ("key", "password", "secret", "token", "passphrase")
DIAGNOSE_WAIT = 60
MAX_DIAGNOSE_WAIT = 300
TUNNEL_ACTIONS = ("open", "close")
TUNNEL_HOURS = (0.001, 168.0)  # the range of outbound.tunnel.expiry_hours


def redact(value: Any, key: str = "") -> Any:
    """Hide secrets (by key name) in a configuration document before it leaves the daemon.

    File paths to keys are not secrets; inline key material and passwords are.
    """
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, key) for v in value]
    lowered = key.lower()
    is_path = lowered.endswith(("_file", "_path"))
    if not is_path and any(word in lowered for word in SECRET_WORDS) and value not in (None, ""):
        return "***"
    return value


def render_running_config(config: Config) -> dict[str, Any]:
    document = json.loads(json.dumps(config.document))
    return {"version": config.version, "platform": config.platform, "document": redact(document)}


def tunnel_request(args: dict[str, Any]) -> tuple[str, float | None]:
    """Check the ``tunnel`` arguments (already type-checked) before the loop is bothered.

    Every refusal names the argument, so a portal operator or a LuCI page can show it as is.
    """
    action = args.get("action")
    if action is None:
        raise MethodError("tunnel: argument 'action' is required (open or close)")
    if action not in TUNNEL_ACTIONS:
        raise MethodError(f"tunnel: argument 'action' must be open or close, not {action!r}")
    hours = args.get("hours")
    if hours is None:
        return action, None
    if action != "open":
        raise MethodError("tunnel: argument 'hours' is only accepted with action 'open'")
    low, high = TUNNEL_HOURS
    if not low <= hours <= high:
        raise MethodError(f"tunnel: argument 'hours' must be {low:g}-{high:g}, not {hours}")
    return action, float(hours)


def run_tunnel_request(service: OutboundService, args: dict[str, Any]) -> dict[str, Any]:
    """Open or close the support tunnel, on the event loop (the supervisor is the loop's).

    Shared by the ``tunnel`` method and the portal's ``tunnel`` command, so both check and
    refuse alike.
    """
    action, hours = tunnel_request(args)
    try:
        state = service.tunnel_open(hours) if action == "open" else service.tunnel_close()
    except (RuntimeError, ValueError) as exc:
        raise MethodError(f"tunnel: {exc}") from None
    return {"action": action, "tunnel": state}


def portal_command(
    outbound: OutboundService, methods: MethodTable, method: str, args: dict[str, Any]
) -> dict[str, Any]:
    """A portal command, on the loop: the same argument checks as the local API."""
    if method == "ip_ranges":
        unknown = sorted(set(args) - {"document"})
        if unknown:
            raise MethodError(f"ip_ranges: unknown argument {unknown[0]!r} (accepted: document)")
        try:
            return outbound.replace_ip_ranges(args.get("document"))
        except ValueError as exc:
            raise MethodError(f"ip_ranges: {exc}") from None
    clean = methods.check_args(methods.methods[method], args)
    if method == "diagnose":
        return {"run": outbound.request("portal")}  # the result goes out in health
    return run_tunnel_request(outbound, clean)


def build_method_table(daemon: Controlled) -> MethodTable:
    def status(_args: dict[str, Any]) -> dict[str, Any]:
        return with_live_portal(daemon.snapshot, daemon.portal)

    def devices(_args: dict[str, Any]) -> dict[str, Any]:
        return {
            "devices": daemon.snapshot.get("devices", []),
            "summary": daemon.snapshot.get("inventory", {}),
        }

    def config(_args: dict[str, Any]) -> dict[str, Any]:
        return daemon.running_config()

    def reload(_args: dict[str, Any]) -> dict[str, Any]:
        return daemon.call_on_loop(lambda: daemon.reload("control reload"))

    def diagnose(args: dict[str, Any]) -> dict[str, Any]:
        """Ask the loop for a run (instant), then wait on this thread, never on the loop."""
        wait = args.get("wait", True)
        timeout = args.get("timeout", DIAGNOSE_WAIT)
        if not 1 <= timeout <= MAX_DIAGNOSE_WAIT:
            raise MethodError(
                f"diagnose: argument 'timeout' must be 1-{MAX_DIAGNOSE_WAIT} seconds, not {timeout}"
            )
        service = daemon.outbound
        number = daemon.call_on_loop(lambda: {"run": service.request("on demand")})["run"]
        if not wait:
            status = daemon.call_on_loop(service.diagnostics_status)
            return {"run": number, **status}
        try:
            result = service.wait_for(number, timeout)
        except RuntimeError as exc:
            raise MethodError(f"diagnose: {exc}") from None
        if result is None:
            raise MethodError(
                f"diagnose: run {number} did not finish within {timeout} s; "
                "its result will be in status (outbound.diagnostics)"
            )
        return result.as_dict()

    def tunnel(args: dict[str, Any]) -> dict[str, Any]:
        return daemon.call_on_loop(lambda: run_tunnel_request(daemon.outbound, args))

    return MethodTable(
        [
            Method("status", status, doc="health of the daemon, policy, WAN, LAN and forwards"),
            Method("devices", devices, doc="devices on the internal network"),
            Method("config", config, doc="the running configuration, secrets redacted"),
            Method("reload", reload, write=True, doc="re-read the configuration and apply it"),
            Method(
                "diagnose",
                diagnose,
                args={"wait": bool, "timeout": int},
                doc="check every required outbound flow; wait (default true) up to timeout s",
            ),
            Method(
                "tunnel",
                tunnel,
                args={"action": str, "hours": float},
                write=True,
                doc="open (for hours, default outbound.tunnel.expiry_hours) or close the "
                "support tunnel",
            ),
        ]
    )
