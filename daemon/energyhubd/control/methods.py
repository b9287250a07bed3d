"""The one method table behind every control transport.

`status`, `devices`, `config`, `reload`, `diagnose`, `tunnel` are plain functions registered
here. The Unix-socket server and the ubus adapter both dispatch through ``MethodTable.call`` so
that the two transports can never disagree about arguments or answers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


class MethodError(Exception):
    """A call was refused: unknown method, bad argument, or the daemon could not do it."""


ArgSpec = Mapping[str, type]
Handler = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class Method:
    """A callable control method.

    ``args`` maps each accepted argument to its Python type; every argument is optional and
    unknown ones are refused by name. ``write`` marks methods that change the daemon's state
    (protected by the rpcd ACL on OpenWrt).
    """

    name: str
    handler: Handler
    args: ArgSpec = field(default_factory=dict)
    write: bool = False
    doc: str = ""


# Added by rpcd/uhttpd to every call that comes through LuCI; never an error.
TRANSPORT_ARGS = frozenset({"ubus_rpc_session"})


class MethodTable:
    """Name -> Method, with argument checking done by our code (not by the transport)."""

    def __init__(self, methods: list[Method]) -> None:
        self.methods: dict[str, Method] = {m.name: m for m in methods}

    def call(self, name: str, args: Mapping[str, Any] | None = None) -> dict[str, Any]:
        method = self.methods.get(name)
        if method is None:
            known = ", ".join(sorted(self.methods))
            raise MethodError(f"unknown method {name!r} (known: {known})")
        clean = self.check_args(method, dict(args or {}))
        return method.handler(clean)

    @staticmethod
    def check_args(method: Method, args: dict[str, Any]) -> dict[str, Any]:
        clean: dict[str, Any] = {}
        for key, value in args.items():
            if key in TRANSPORT_ARGS:
                continue
            expected = method.args.get(key)
            if expected is None:
                allowed = ", ".join(sorted(method.args)) or "none"
                raise MethodError(f"{method.name}: unknown argument {key!r} (accepted: {allowed})")
            if expected is bool and not isinstance(value, bool):
                raise MethodError(f"{method.name}: argument {key!r} must be true or false")
            if expected is int and (isinstance(value, bool) or not isinstance(value, int)):
                raise MethodError(f"{method.name}: argument {key!r} must be an integer")
            if expected is float and (
                isinstance(value, bool) or not isinstance(value, (int, float))
            ):
                raise MethodError(f"{method.name}: argument {key!r} must be a number")
            if expected is str and not isinstance(value, str):
                raise MethodError(f"{method.name}: argument {key!r} must be a string")
            clean[key] = value
        return clean
