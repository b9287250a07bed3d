"""Build the nftables JSON for ``egress.mode: allowlist``: exactly the documented flows out.

Pure: data in, libnftables JSON objects out, in the canonical form libnftables lists (see
``policy/nft.py``). The table compiler places ``build_egress(plan)`` (sets and the output
chain) after the table object and ``forward_rules(plan)`` where open mode has its "lan to
wan" accept; it builds the table that way, nothing is spliced afterwards. What the allowlist
learns by I/O (DNS servers, broker addresses, S3 prefixes) comes in as ``EgressInputs``.

Why the output chain has policy *accept* with an explicit, counted final drop scoped by the
first rules: everything the router sends to its LAN (DHCP and DNS answers, the technician's
ssh session) must never hit the allowlist, and an allowlist mistake must not lock the
technician out on site. The chain therefore accepts non-WAN traffic first, then the documented
flows, then drops the rest with one counted rule per flow so status can show "what was
blocked" per flow (a stale broker set shows up as drops under ``mqtt``).

Addresses that come from DNS (the broker, optionally NTP servers) live in sets with per-element
timeouts: ``broker_refresh_transaction`` re-adds them after each resolution, and addresses the
name no longer returns expire by themselves. Set contents are dynamic and are deliberately not
part of ``policy.nft.normalise`` (which compares tables, chains and rules only).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from energyhubd.config.model import Config
from energyhubd.policy.nftexpr import (
    ACCEPT,
    COUNTER,
    DROP,
    FAMILY,
    PRIO_FILTER,
    TABLE,
    Json,
    ct_state,
    one_or_set,
    rule,
)
from energyhubd.policy.nftexpr import chain as _chain
from energyhubd.policy.nftexpr import match as _match
from energyhubd.policy.nftexpr import meta as _meta
from energyhubd.policy.nftexpr import payload as _payload
from energyhubd.policy.nftexpr import prefix as _prefix_elem

SET_BROKER = "broker_v4"
SET_S3 = "s3_v4"
SET_DNS = "dns_v4"
SET_NTP = "ntp_v4"
UPDATE_PORTS = (80, 443)
DEFAULT_BROKER_TTL = 3600

# Comment prefixes of the counted drop rules; ``drop_counters`` reads them back.
OUT_DROP = "egress drop "
FWD_DROP = "lan egress drop "
FLOWS = ("dns", "ntp", "mqtt", "gateway", "updates", "other")


@dataclass(frozen=True)
class EgressPlan:
    """What the allowlist admits; every address comes from configuration or resolution."""

    wan: str
    lan: str
    gateway_address: str
    gateway_port: int = 2443
    mqtt_ports: tuple[int, ...] = (8883, 1883)
    dns_servers: tuple[str, ...] = ()
    broker_addresses: tuple[str, ...] = ()
    s3_prefixes: tuple[ipaddress.IPv4Network, ...] = ()
    # None: NTP (UDP 123) to any server. Pool names rotate through many addresses that the
    # NTP client resolves itself; pinning them to our own resolution would break time sync.
    ntp_addresses: tuple[str, ...] | None = None
    broker_ttl: int = DEFAULT_BROKER_TTL


def _one_or_set(values: Sequence[Any]) -> Any:
    return one_or_set(sorted(values))


def _timed_elem(address: str, ttl: int) -> Json:
    return {"elem": {"val": str(ipaddress.IPv4Address(address)), "timeout": int(ttl)}}


def _set(name: str, flags: list[str] | None, elems: list[Any]) -> Json:
    body: Json = {"family": FAMILY, "name": name, "table": TABLE, "type": "ipv4_addr"}
    if flags:
        body["flags"] = flags
    if elems:
        body["elem"] = elems
    return {"set": body}


def egress_sets(plan: EgressPlan) -> list[Json]:
    """The four named sets with their initial elements."""
    dns = sorted({str(ipaddress.IPv4Address(a)) for a in plan.dns_servers})
    s3 = [_prefix_elem(n) for n in ipaddress.collapse_addresses(plan.s3_prefixes)]
    broker = [_timed_elem(a, plan.broker_ttl) for a in sorted(set(plan.broker_addresses))]
    ntp = [_timed_elem(a, plan.broker_ttl) for a in sorted(set(plan.ntp_addresses or ()))]
    return [
        _set(SET_BROKER, ["timeout"], broker),
        _set(SET_S3, ["interval"], s3),
        _set(SET_DNS, None, dns),
        _set(SET_NTP, ["timeout"], ntp),
    ]


def _flow_accepts(plan: EgressPlan, scope: list[Json]) -> list[tuple[list[Json], str]]:
    """(expr, comment) pairs admitting the documented flows, each prefixed by ``scope``."""
    daddr = _payload("ip", "daddr")
    rules: list[tuple[list[Json], str]] = []
    for proto in ("udp", "tcp"):
        rules.append(
            (
                [
                    *scope,
                    _match(daddr, f"@{SET_DNS}"),
                    _match(_payload(proto, "dport"), 53),
                    ACCEPT,
                ],
                f"egress dns {proto}",
            )
        )
    ntp: list[Json] = [*scope]
    if plan.ntp_addresses is not None:
        ntp.append(_match(daddr, f"@{SET_NTP}"))
    rules.append(([*ntp, _match(_payload("udp", "dport"), 123), ACCEPT], "egress ntp"))
    rules.append(
        (
            [
                *scope,
                _match(daddr, f"@{SET_BROKER}"),
                _match(_payload("tcp", "dport"), _one_or_set(plan.mqtt_ports)),
                ACCEPT,
            ],
            "egress mqtt",
        )
    )
    rules.append(
        (
            [
                *scope,
                _match(daddr, str(ipaddress.IPv4Address(plan.gateway_address))),
                _match(_payload("tcp", "dport"), plan.gateway_port),
                ACCEPT,
            ],
            "egress gateway",
        )
    )
    rules.append(
        (
            [
                *scope,
                _match(daddr, f"@{SET_S3}"),
                _match(_payload("tcp", "dport"), _one_or_set(UPDATE_PORTS)),
                ACCEPT,
            ],
            "egress updates",
        )
    )
    rules.append(
        (
            [*scope, _match(_meta("l4proto"), {"set": ["icmp", "ipv6-icmp"]}), ACCEPT],
            "egress icmp",
        )
    )
    return rules


def _flow_drops(plan: EgressPlan, scope: list[Json], prefix: str) -> list[tuple[list[Json], str]]:
    """Counted drops, one per flow, so blocked attempts are visible per flow."""
    tcp_udp = _match(_meta("l4proto"), {"set": ["tcp", "udp"]})
    return [
        ([*scope, tcp_udp, _match(_payload("th", "dport"), 53), COUNTER, DROP], prefix + "dns"),
        ([*scope, _match(_payload("udp", "dport"), 123), COUNTER, DROP], prefix + "ntp"),
        (
            [
                *scope,
                _match(_payload("tcp", "dport"), _one_or_set(plan.mqtt_ports)),
                COUNTER,
                DROP,
            ],
            prefix + "mqtt",
        ),
        (
            [*scope, _match(_payload("tcp", "dport"), plan.gateway_port), COUNTER, DROP],
            prefix + "gateway",
        ),
        (
            [*scope, _match(_payload("tcp", "dport"), _one_or_set(UPDATE_PORTS)), COUNTER, DROP],
            prefix + "updates",
        ),
        ([*scope, COUNTER, DROP], prefix + "other"),
    ]


_rule = rule


def output_chain(plan: EgressPlan, chain: str = "output") -> list[Json]:
    """The router's own egress: the chain object followed by its rules."""
    objects: list[Json] = [_chain(chain, "filter", "output", PRIO_FILTER, "accept")]
    objects.append(_rule(chain, [ct_state(["established", "related"]), ACCEPT]))
    objects.append(
        _rule(chain, [_match(_meta("oifname"), plan.wan, "!="), ACCEPT], "egress not wan")
    )
    objects.append(
        _rule(
            chain,
            [
                _match(_payload("udp", "sport"), 68),
                _match(_payload("udp", "dport"), 67),
                ACCEPT,
            ],
            "egress dhcp client",
        )
    )
    for expr, comment in _flow_accepts(plan, []):
        objects.append(_rule(chain, expr, comment))
    for expr, comment in _flow_drops(plan, [], OUT_DROP):
        objects.append(_rule(chain, expr, comment))
    return objects


def forward_rules(plan: EgressPlan, chain: str = "forward") -> list[Json]:
    """LAN -> WAN limited to the same flows; replaces the open "lan to wan" accept."""
    scope = [_match(_meta("iifname"), plan.lan), _match(_meta("oifname"), plan.wan)]
    rules = [_rule(chain, expr, "lan " + comment) for expr, comment in _flow_accepts(plan, scope)]
    rules += [_rule(chain, expr, comment) for expr, comment in _flow_drops(plan, scope, FWD_DROP)]
    return rules


def build_egress(plan: EgressPlan) -> list[Json]:
    """Sets plus the output chain and its rules, to add to the ``inet energyhub`` table."""
    return [*egress_sets(plan), *output_chain(plan)]


def _elem_ref(name: str, elems: list[Any]) -> Json:
    return {"element": {"family": FAMILY, "table": TABLE, "name": name, "elem": elems}}


def broker_refresh_transaction(
    addresses: Iterable[str], ttl: int = DEFAULT_BROKER_TTL, set_name: str = SET_BROKER
) -> Json:
    """Restart each resolved address's timeout in one atomic transaction.

    ``add`` alone does not restart the timeout of an element that already exists, and
    ``delete`` of a missing element fails the whole batch; add-delete-add always works and
    the address is never absent between two kernel states (the batch commits as one).
    Addresses not in ``addresses`` keep their old timeout and expire on their own.
    """
    addrs = sorted({str(ipaddress.IPv4Address(a)) for a in addresses})
    if not addrs:
        return {"nftables": []}
    timed = [_timed_elem(a, ttl) for a in addrs]
    return {
        "nftables": [
            {"add": _elem_ref(set_name, timed)},
            {"delete": _elem_ref(set_name, list(addrs))},
            {"add": _elem_ref(set_name, timed)},
        ]
    }


def replace_set_transaction(set_name: str, elements: Sequence[Any]) -> Json:
    """Replace a set's whole content atomically (DNS servers after a new lease, S3 prefixes).

    ``elements`` are addresses (str) or ``IPv4Network`` prefixes.
    """
    elems: list[Any] = []
    for item in elements:
        if isinstance(item, ipaddress.IPv4Network):
            elems.append(_prefix_elem(item))
        else:
            elems.append(str(ipaddress.IPv4Address(item)))
    ref = {"set": {"family": FAMILY, "table": TABLE, "name": set_name}}
    commands: list[Json] = [{"flush": ref}]
    if elems:
        commands.append({"add": _elem_ref(set_name, elems)})
    return {"nftables": commands}


def s3_transaction(prefixes: Sequence[ipaddress.IPv4Network]) -> Json:
    """New S3 prefixes (already collapsed by ``ipranges``) for the interval set."""
    return replace_set_transaction(SET_S3, list(ipaddress.collapse_addresses(prefixes)))


def drop_counters(counters: Mapping[str, int]) -> dict[str, dict[str, int]]:
    """Per-flow drop counters from the table's rule counters (comment -> packets, as
    ``policy.nft.rule_counters`` reads them): {"router": {...}, "lan": {...}}."""
    out: dict[str, dict[str, int]] = {"router": {}, "lan": {}}
    for comment, packets in counters.items():
        if comment.startswith(FWD_DROP):
            side, flow = "lan", comment[len(FWD_DROP) :]
        elif comment.startswith(OUT_DROP):
            side, flow = "router", comment[len(OUT_DROP) :]
        else:
            continue
        out[side][flow] = out[side].get(flow, 0) + packets
    return out


# -- integration with the compiled table -----------------------------------------------------


@dataclass(frozen=True)
class EgressInputs:
    """What the allowlist needs that takes I/O to learn, handed to the pure compiler as data.

    The daemon side (``outbound.service``) reads the WAN's DNS servers, resolves the broker
    name and parses ``ip-ranges.json``; the compiler only copies these into set elements.
    Set contents are not part of ``policy.nft.normalise``: new inputs never replace the table.
    """

    dns_servers: tuple[str, ...] = ()
    broker_addresses: tuple[str, ...] = ()
    s3_prefixes: tuple[ipaddress.IPv4Network, ...] = ()


def _is_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def plan_for(config: Config, inputs: EgressInputs | None) -> EgressPlan:
    """The plan for a validated ``Config``: configuration facts plus the learned inputs.

    Static WAN DNS servers and ``dns.fallback`` come from the configuration, so they are in
    ``dns_v4`` even before anything was read; a broker given as an address needs no lookup.
    """
    inputs = inputs or EgressInputs()
    settings = config.outbound
    dns: list[str] = []
    for server in (*inputs.dns_servers, *config.wan.dns, *config.dns_fallback):
        text = str(server)
        if _is_ipv4(text) and text not in dns:
            dns.append(text)
    broker = list(inputs.broker_addresses)
    if _is_ipv4(settings.broker_host) and settings.broker_host not in broker:
        broker.append(settings.broker_host)
    return EgressPlan(
        wan=config.wan.device,
        lan=config.lan.device,
        gateway_address=settings.gateway_address,
        gateway_port=settings.gateway_port,
        mqtt_ports=settings.mqtt_ports,
        dns_servers=tuple(dns),
        broker_addresses=tuple(broker),
        s3_prefixes=tuple(inputs.s3_prefixes),
    )


def sets_transaction(plan: EgressPlan) -> Json:
    """One atomic batch that brings every set's content up to ``plan``.

    Used when only learned inputs changed (the rules did not, so the table is not replaced)
    and after the table was restored from an older compilation. The broker elements get a
    fresh timeout; DNS and S3 sets are replaced whole (flush and add commit together).
    """
    commands: list[Json] = []
    commands += replace_set_transaction(SET_DNS, list(plan.dns_servers))["nftables"]
    commands += s3_transaction(list(plan.s3_prefixes))["nftables"]
    if plan.broker_addresses:
        commands += broker_refresh_transaction(plan.broker_addresses, plan.broker_ttl)["nftables"]
    return {"nftables": commands}
