"""The egress allowlist: pure JSON shape, then a real kernel with real traffic.

The netns tests compile the real table (``policy.nft.compile_ruleset``) with the allowlist
built in, from a plan pointing at the test's namespaces. Traffic goes only to hosts inside the
test's namespaces.
"""

from __future__ import annotations

import ipaddress
import json
import time
from typing import Any

import pytest

from energyhub_lab import internet
from energyhub_lab.internet import MiniLab, connect_in, diagnose_in, nft_in, tcp_connect_in
from energyhubd.config.load import parse_document
from energyhubd.outbound.diagnose import FLOWS
from energyhubd.outbound.ipranges import load_ip_ranges
from energyhubd.policy import egress, nft

DNS = [internet.CUSTOMER_RESOLVER]
FALLBACK = [internet.DNS_IP]


def plan(**overrides: Any) -> egress.EgressPlan:
    values: dict[str, Any] = {
        "wan": "wan",
        "lan": "lan",
        "gateway_address": internet.GATEWAY_IP,
        "dns_servers": (internet.CUSTOMER_RESOLVER, internet.DNS_IP),
        "broker_addresses": (internet.BROKER_IP,),
        "s3_prefixes": (ipaddress.IPv4Network(f"{internet.S3_IP}/32"),),
    }
    values.update(overrides)
    return egress.EgressPlan(**values)


def ruleset(p: egress.EgressPlan) -> dict[str, Any]:
    """The daemon's compiled table in allowlist mode, for the plan's targets and inputs."""
    config = parse_document(
        {
            "wan": {"device": p.wan},
            "lan": {"device": p.lan},
            "egress": {"mode": "allowlist"},
            "dns": {"fallback": []},
            "outbound": {
                "gateway_address": p.gateway_address,
                "gateway_port": p.gateway_port,
                "mqtt_ports": list(p.mqtt_ports),
            },
        }
    )
    inputs = egress.EgressInputs(p.dns_servers, p.broker_addresses, p.s3_prefixes)
    compiled = nft.compile_ruleset(config, None, inputs)
    assert egress.plan_for(config, inputs) == p  # the compiled table is exactly this plan's
    return compiled


def test_the_allowlist_is_built_into_the_table_in_place() -> None:
    """Sets and output chain follow the table object; LAN flows stand where open mode has
    its "lan to wan" accept, before the forwards and the final drop."""
    objects = ruleset(plan())["nftables"]
    expected = egress.build_egress(plan())
    assert objects[1 : 1 + len(expected)] == expected
    forward = [
        o["rule"].get("comment") for o in objects if o.get("rule", {}).get("chain") == "forward"
    ]
    lan = [r["rule"]["comment"] for r in egress.forward_rules(plan())]
    assert forward[2 : 2 + len(lan)] == lan
    assert forward[-1] == "forward dropped" and "lan to wan" not in forward


# -- pure --------------------------------------------------------------------------------


def test_every_drop_rule_is_counted_and_named_by_flow() -> None:
    objects = egress.build_egress(plan()) + egress.forward_rules(plan())
    drops = [o["rule"] for o in objects if "rule" in o and {"drop": None} in o["rule"]["expr"]]
    comments = {r["comment"] for r in drops}
    assert comments == {f"egress drop {f}" for f in egress.FLOWS} | {
        f"lan egress drop {f}" for f in egress.FLOWS
    }
    assert all(any("counter" in e for e in r["expr"]) for r in drops)


def test_output_chain_lets_non_wan_traffic_pass_first() -> None:
    chain = egress.output_chain(plan())
    assert chain[0]["chain"]["hook"] == "output"
    first_rules = [o["rule"]["expr"] for o in chain[1:3]]
    assert {"match": {"op": "!=", "left": {"meta": {"key": "oifname"}}, "right": "wan"}} in (
        first_rules[1]
    )


def test_sets_have_the_right_flags() -> None:
    sets = {o["set"]["name"]: o["set"] for o in egress.egress_sets(plan())}
    assert sets["broker_v4"]["flags"] == ["timeout"]
    assert sets["s3_v4"]["flags"] == ["interval"]
    assert sets["broker_v4"]["elem"] == [{"elem": {"val": internet.BROKER_IP, "timeout": 3600}}]


def test_broker_refresh_is_add_delete_add() -> None:
    doc = egress.broker_refresh_transaction(["203.0.113.11", "203.0.113.10"], ttl=60)
    verbs = [next(iter(c)) for c in doc["nftables"]]
    assert verbs == ["add", "delete", "add"]
    assert egress.broker_refresh_transaction([]) == {"nftables": []}
    with pytest.raises(ValueError):
        egress.broker_refresh_transaction(["not-an-address"])


# -- real kernel -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lab(minilab: MiniLab) -> MiniLab:
    return minilab


def apply(lab: MiniLab, p: egress.EgressPlan) -> None:
    nft_in(lab.router, nft.replace_transaction(ruleset(p)))


def counters(lab: MiniLab) -> dict[str, dict[str, int]]:
    listing = json.loads(nft_in(lab.router, "list table inet energyhub"))
    return egress.drop_counters(nft.rule_counters(listing))


def wait_for(predicate: Any, timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    pytest.fail(message)


@pytest.mark.netns
def test_allowlist_passes_every_required_flow_and_blocks_the_rest(lab: MiniLab) -> None:
    s3 = load_ip_ranges(str(lab.services.ip_ranges_file))
    apply(lab, plan(s3_prefixes=tuple(s3)))
    rows = diagnose_in(lab.router, lab.services.outbound_config(), DNS, FALLBACK)
    failed = [r for r in rows if not r["passed"]]
    assert failed == [], failed
    assert {r["flow"] for r in rows} == FLOWS
    # An arbitrary internet host: blocked on any port, and counted under the right flow.
    ok, why = connect_in(lab.router, internet.OTHER_IP, 5555)
    assert not ok and "no answer" in why
    before = counters(lab)["router"]
    ok, _ = connect_in(lab.router, internet.OTHER_IP, 8883)
    assert not ok
    ok, _ = connect_in(lab.router, internet.OTHER_IP, 443)
    assert not ok
    after = counters(lab)["router"]
    assert after["mqtt"] > before["mqtt"]
    assert after["updates"] > before["updates"]
    # Without the allowlist the other host is reachable: the block was ours.
    nft_in(lab.router, nft.delete_transaction())
    assert connect_in(lab.router, internet.OTHER_IP, 5555)[0]


@pytest.mark.netns
def test_lan_devices_get_the_same_flows_only(lab: MiniLab) -> None:
    apply(lab, plan())
    rows = diagnose_in(lab.lanhost, lab.services.outbound_config(), DNS, FALLBACK)
    assert [r for r in rows if not r["passed"]] == []
    before = counters(lab)["lan"]
    ok, why = connect_in(lab.lanhost, internet.OTHER_IP, 5555)
    assert not ok and "no answer" in why
    assert not connect_in(lab.lanhost, internet.OTHER_IP, 2443)[0]
    after = counters(lab)["lan"]
    assert after["other"] > before["other"]
    assert after["gateway"] > before["gateway"]


@pytest.mark.netns
def test_broker_set_is_refreshed_by_resolution_and_expires(lab: MiniLab) -> None:
    apply(lab, plan(broker_addresses=()))
    assert not tcp_connect_in(lab.router, internet.BROKER_IP, 8883)[0]
    nft_in(lab.router, egress.broker_refresh_transaction([internet.BROKER_IP], ttl=3))
    assert tcp_connect_in(lab.router, internet.BROKER_IP, 8883)[0]
    # Refreshing an existing element restarts its timeout (add-delete-add is accepted).
    nft_in(lab.router, egress.broker_refresh_transaction([internet.BROKER_IP], ttl=3))
    wait_for(
        lambda: not tcp_connect_in(lab.router, internet.BROKER_IP, 8883, timeout=0.5)[0],
        15,
        "the broker address never expired from broker_v4",
    )


@pytest.mark.netns
def test_overlapping_s3_prefixes_load_into_the_interval_set(lab: MiniLab) -> None:
    apply(lab, plan(s3_prefixes=()))
    assert not tcp_connect_in(lab.router, internet.S3_IP, 443)[0]
    overlapping = [
        ipaddress.IPv4Network("203.0.113.0/25"),
        ipaddress.IPv4Network("203.0.113.0/27"),
        ipaddress.IPv4Network("203.0.113.30/32"),
    ]
    nft_in(lab.router, egress.s3_transaction(overlapping))
    assert tcp_connect_in(lab.router, internet.S3_IP, 443)[0]
    listing = json.loads(nft_in(lab.router, "list set inet energyhub s3_v4"))
    elems = [o["set"].get("elem") for o in listing["nftables"] if "set" in o]
    assert elems == [[{"prefix": {"addr": "203.0.113.0", "len": 25}}]]
