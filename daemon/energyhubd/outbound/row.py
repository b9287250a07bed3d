"""One diagnostics row: a flow, where it was checked, and its ``reasons.Reason``.

``passed`` is the reason's code being ``ok``, so a row cannot pass with a failure's words or
fail with none; ``as_dict`` is the shape ``status`` and ``diagnose`` answer (docs/api.md).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from .reasons import Reason


@dataclass(frozen=True)
class Row:
    """One flow's verdict."""

    flow: str
    target: str
    latency_ms: float | None
    why: Reason
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.why.passed

    @property
    def reason(self) -> str:
        return self.why.text

    @property
    def code(self) -> str:
        return self.why.code

    @property
    def params(self) -> dict[str, str]:
        return dict(self.why.params)

    def as_dict(self) -> dict[str, Any]:
        return {
            "flow": self.flow,
            "target": self.target,
            "passed": self.passed,
            "latency_ms": None if self.latency_ms is None else round(self.latency_ms, 1),
            "reason": self.reason,
            "code": self.code,  # "code" and "params": for clients in other languages
            "params": self.params,
            "detail": dict(self.detail),
        }


def ms(start: float) -> float:
    """Milliseconds since ``start`` (a ``time.monotonic()`` reading)."""
    return (time.monotonic() - start) * 1000.0


def label(host: str, address: str, port: int) -> str:
    """A row's target: the address, and the name it was resolved from when there is one."""
    return f"{address}:{port}" if host == address else f"{host} ({address}):{port}"
