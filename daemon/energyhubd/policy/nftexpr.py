"""The leaf every rule builder shares: our table's name, chain priorities and the few
libnftables JSON shapes the compilers emit.

Kept in one place so the table compiler (``policy.nft``) and the allowlist compiler
(``policy.egress``) build byte-identical expressions: the daemon compares its compiled ruleset
with what the kernel lists, and two spellings of the same match would look like drift.
Imports nothing from the package.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any

Json = dict[str, Any]

FAMILY = "inet"
TABLE = "energyhub"

# Chain priorities relative to fw4 (which uses filter=0, dstnat=-100, srcnat=100): ours run
# just before fw4's so our NAT decision is taken first and our drops are counted first. An
# accept here never overrides a drop in fw4's table; both tables must agree to let a packet by.
PRIO_FILTER = -10
PRIO_DSTNAT = -110
PRIO_SRCNAT = 90

ACCEPT: Json = {"accept": None}
DROP: Json = {"drop": None}
COUNTER: Json = {"counter": {"packets": 0, "bytes": 0}}


def meta(key: str) -> Json:
    return {"meta": {"key": key}}


def payload(protocol: str, field: str) -> Json:
    return {"payload": {"protocol": protocol, "field": field}}


def match(left: Json, right: Any, op: str = "==") -> Json:
    return {"match": {"op": op, "left": left, "right": right}}


def ct_state(states: list[str]) -> Json:
    """libnftables lists one state as a plain value and several as a list."""
    return match({"ct": {"key": "state"}}, states[0] if len(states) == 1 else states, "in")


def one_or_set(values: Sequence[Any]) -> Any:
    """A single value stays a value: libnftables lists a one-element set that way."""
    return values[0] if len(values) == 1 else {"set": list(values)}


def prefix(net: ipaddress.IPv4Network) -> Any:
    """A network as libnftables lists it: a /32 is a bare address."""
    if net.prefixlen == 32:
        return str(net.network_address)
    return {"prefix": {"addr": str(net.network_address), "len": net.prefixlen}}


def chain(name: str, kind: str, hook: str, prio: int, policy: str) -> Json:
    return {
        "chain": {
            "family": FAMILY,
            "table": TABLE,
            "name": name,
            "type": kind,
            "hook": hook,
            "prio": prio,
            "policy": policy,
        }
    }


def rule(chain_name: str, expr: list[Json], comment: str | None = None) -> Json:
    body: Json = {"family": FAMILY, "table": TABLE, "chain": chain_name}
    if comment:
        body["comment"] = comment
    body["expr"] = expr
    return {"rule": body}
