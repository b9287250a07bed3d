"""The few libnftables JSON expression shapes every rule builder needs.

Kept in one place so the policy compiler and the egress allowlist build byte-identical
expressions: the daemon compares its compiled ruleset with what the kernel lists, and two
spellings of the same match would look like drift.
"""

from __future__ import annotations

from typing import Any

Json = dict[str, Any]


def meta(key: str) -> Json:
    return {"meta": {"key": key}}


def payload(protocol: str, field: str) -> Json:
    return {"payload": {"protocol": protocol, "field": field}}


def match(left: Json, right: Any, op: str = "==") -> Json:
    return {"match": {"op": op, "left": left, "right": right}}
