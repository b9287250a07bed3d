"""Compile the validated model into the nftables JSON for our own table ``inet energyhub``.

Pure: no kernel, no I/O. The output is written in the same canonical form that libnftables
prints when it lists the table, so "is the kernel already holding exactly this?" can be
answered by comparing data (see ``normalise``), and a no-op apply writes nothing.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from collections.abc import Mapping

from energyhubd.config.model import Config, Forward
from energyhubd.policy import egress
from energyhubd.policy.nftexpr import (
    ACCEPT,
    COUNTER,
    DROP,
    FAMILY,
    PRIO_DSTNAT,
    PRIO_FILTER,
    PRIO_SRCNAT,
    TABLE,
    Json,
    ct_state,
    one_or_set,
    prefix,
)
from energyhubd.policy.nftexpr import chain as _chain
from energyhubd.policy.nftexpr import match as _match
from energyhubd.policy.nftexpr import meta as _meta
from energyhubd.policy.nftexpr import payload as _payload
from energyhubd.policy.nftexpr import rule as _rule

Targets = Mapping[str, ipaddress.IPv4Address | None]


def resolve_targets(
    config: Config, live_address: Mapping[str, str] | None = None
) -> dict[str, ipaddress.IPv4Address | None]:
    """Where each forward points now; None keeps the forward closed.

    A reservation name or a MAC follows the device (``live_address``: MAC -> current IP, from
    the inventory). A reserved device without a live observation gets its reserved address,
    because dnsmasq hands it nothing else. A bare MAC with no live address stays closed: the
    address it last had may now belong to a stranger.
    """
    live = live_address or {}
    result: dict[str, ipaddress.IPv4Address | None] = {}
    by_name = {r.name: r for r in config.lan.dhcp.reservations}
    by_mac = {r.mac: r for r in config.lan.dhcp.reservations if r.mac}
    for fwd in config.forwards:
        target = fwd.target
        reservation = by_name.get(target) or by_mac.get(target)
        mac = reservation.mac if reservation else (target if ":" in target else None)
        if mac and mac in live:
            result[fwd.name] = ipaddress.IPv4Address(live[mac])
        elif reservation is not None:
            result[fwd.name] = reservation.ip
        elif mac:
            result[fwd.name] = None
        else:
            result[fwd.name] = ipaddress.IPv4Address(target)
    return result


def compile_ruleset(
    config: Config,
    targets: Targets | None = None,
    egress_inputs: egress.EgressInputs | None = None,
) -> Json:
    """The whole table as one libnftables JSON document (without the replace wrapper).

    ``egress.mode: allowlist`` builds the allowlist of ``policy.egress`` into the table: its
    sets and output chain right after the table object, its LAN flows where open mode has the
    "lan to wan" accept. What it learned by I/O (DNS servers, broker addresses, S3 prefixes)
    comes in as ``egress_inputs`` data. Set contents are not part of ``normalise``: the rules
    depend on the configuration only.
    """
    if targets is None:
        targets = resolve_targets(config)
    lan, wan = config.lan.device, config.wan.device
    allowlist = (
        egress.plan_for(config, egress_inputs) if config.egress_mode == "allowlist" else None
    )
    objects: list[Json] = [{"table": {"family": FAMILY, "name": TABLE}}]
    if allowlist is not None:
        objects += egress.build_egress(allowlist)

    def chain(name: str, kind: str, hook: str, prio: int, policy: str) -> None:
        objects.append(_chain(name, kind, hook, prio, policy))

    def rule(chain_name: str, expr: list[Json], comment: str | None = None) -> None:
        objects.append(_rule(chain_name, expr, comment))

    iif_lan = _match(_meta("iifname"), lan)
    iif_wan = _match(_meta("iifname"), wan)
    oif_lan = _match(_meta("oifname"), lan)
    oif_wan = _match(_meta("oifname"), wan)

    chain("input", "filter", "input", PRIO_FILTER, "drop")
    chain("forward", "filter", "forward", PRIO_FILTER, "drop")
    chain("dstnat", "nat", "prerouting", PRIO_DSTNAT, "accept")
    chain("srcnat", "nat", "postrouting", PRIO_SRCNAT, "accept")

    # input: only what the router itself needs.
    rule("input", [ct_state(["established", "related"]), ACCEPT])
    rule("input", [ct_state(["invalid"]), DROP])
    rule("input", [_match(_meta("iifname"), "lo"), ACCEPT])
    rule(
        "input",
        [iif_lan, _match(_payload("udp", "dport"), {"set": [53, 67]}), ACCEPT],
        "lan dns and dhcp",
    )
    rule("input", [iif_lan, _match(_payload("tcp", "dport"), 53), ACCEPT], "lan dns over tcp")
    rule("input", [iif_lan, _match(_meta("l4proto"), "icmp"), ACCEPT], "lan ping")
    if config.lan.admin_access:
        rule(
            "input",
            [iif_lan, _match(_payload("tcp", "dport"), {"set": [22, 80, 443]}), ACCEPT],
            "lan admin access",
        )
    rule(
        "input",
        [
            iif_wan,
            _match(_payload("udp", "sport"), 67),
            _match(_payload("udp", "dport"), 68),
            ACCEPT,
        ],
        "wan dhcp replies",
    )
    rule(
        "input",
        [
            _match(
                _payload("icmpv6", "type"),
                {"set": ["nd-router-advert", "nd-neighbor-solicit", "nd-neighbor-advert"]},
            ),
            ACCEPT,
        ],
        "ipv6 neighbour discovery",
    )
    rule("input", [COUNTER, DROP], "input dropped")

    # forward: LAN out; WAN in only through a DNAT'ed forward from an allowed source.
    rule("forward", [ct_state(["established", "related"]), ACCEPT])
    rule("forward", [ct_state(["invalid"]), DROP])
    if allowlist is None:
        rule("forward", [iif_lan, oif_wan, ACCEPT], "lan to wan")
    else:
        objects += egress.forward_rules(allowlist)
    for fwd in config.forwards:
        addr = targets.get(fwd.name)
        if addr is None:
            continue
        expr = [iif_wan, oif_lan, _match({"ct": {"key": "status"}}, "dnat", "in")]
        expr += _source_lock(fwd, family_implied=True)
        expr += [
            _match(_payload("ip", "daddr"), str(addr)),
            _match(_payload(fwd.proto, "dport"), fwd.target_port),
            COUNTER,
            ACCEPT,
        ]
        rule("forward", expr, f"forward {fwd.name}")
    rule("forward", [COUNTER, DROP], "forward dropped")

    # NAT.
    for fwd in config.forwards:
        addr = targets.get(fwd.name)
        if addr is None:
            continue
        expr = [
            iif_wan,
            *_source_lock(fwd, family_implied=False),
            _match(_payload(fwd.proto, "dport"), fwd.port),
            {"dnat": {"family": "ip", "addr": str(addr), "port": fwd.target_port}},
        ]
        rule("dstnat", expr, f"forward {fwd.name}")
    rule(
        "srcnat",
        [
            oif_wan,
            _match(_payload("ip", "saddr"), prefix(config.lan.address.network)),
            {"masquerade": None},
        ],
        "lan masquerade",
    )
    return {"nftables": objects}


def _source_lock(fwd: Forward, family_implied: bool) -> list[Json]:
    """Match the allowed sources; an open forward still needs "IPv4 only" for its DNAT."""
    if fwd.allow_any_source:
        return [] if family_implied else [_match(_meta("nfproto"), "ipv4")]
    return [_match(_payload("ip", "saddr"), one_or_set([prefix(n) for n in fwd.allow_from]))]


def replace_transaction(ruleset: Json) -> Json:
    """Wrap a compiled table so one transaction replaces it atomically.

    ``add table`` first makes ``delete table`` valid when the table is missing; the kernel
    commits the batch as a whole, so there is never a moment without our table.
    """
    table = {"family": FAMILY, "name": TABLE}
    commands: list[Json] = [{"add": {"table": dict(table)}}, {"delete": {"table": dict(table)}}]
    commands += [{"add": obj} for obj in ruleset["nftables"]]
    return {"nftables": commands}


def delete_transaction() -> Json:
    table = {"family": FAMILY, "name": TABLE}
    return {"nftables": [{"add": {"table": dict(table)}}, {"delete": {"table": dict(table)}}]}


def normalise(listing: Json) -> Json:
    """Reduce a listing (or a compiled ruleset) to what defines behaviour.

    Handles, metainfo and counter values are dropped; rules are grouped per chain in order.
    Two rulesets with equal normal forms behave identically.
    """
    chains: dict[str, Json] = {}
    rules: dict[str, list[Json]] = {}
    tables = 0
    for obj in listing.get("nftables", []):
        if "table" in obj:
            tables += 1
        elif "chain" in obj:
            c = {k: v for k, v in obj["chain"].items() if k not in ("handle", "family", "table")}
            chains[c["name"]] = c
        elif "rule" in obj:
            r = obj["rule"]
            expr = [_zero_counter(e) for e in r.get("expr", [])]
            rules.setdefault(r["chain"], []).append({"comment": r.get("comment"), "expr": expr})
    return {"tables": tables, "chains": chains, "rules": rules}


def _zero_counter(expr: Json) -> Json:
    if "counter" in expr:
        return {"counter": {"packets": 0, "bytes": 0}}
    return expr


def rule_counters(listing: Json) -> dict[str, int]:
    """Packet counts of a listing's commented counter rules (e.g. ``input dropped``)."""
    result: dict[str, int] = {}
    for obj in listing.get("nftables", []):
        rule = obj.get("rule") if isinstance(obj, dict) else None
        if not rule or not rule.get("comment"):
            continue
        for expr in rule.get("expr", []):
            if "counter" in expr:
                packets = int(expr["counter"].get("packets", 0))
                result[rule["comment"]] = result.get(rule["comment"], 0) + packets
    return result


def digest(ruleset: Json) -> str:
    """Short stable fingerprint of a ruleset's behaviour, for status and health."""
    return normal_digest(normalise(ruleset))


def normal_digest(normal: Json) -> str:
    """``digest`` of a ruleset already in normal form."""
    text = json.dumps(normal, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
