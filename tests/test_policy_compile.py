"""Pure compilation: model -> nftables JSON, checked against reviewed golden files.

Regenerate a golden file deliberately with ``EH_UPDATE_GOLDEN=1`` and review the diff.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from energyhubd.config.load import parse_document
from energyhubd.policy import nft
from tests.policy_samples import SAMPLES

GOLDEN = Path(__file__).parent / "golden"


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_ruleset_matches_golden(name: str) -> None:
    ruleset = nft.compile_ruleset(parse_document(SAMPLES[name]))
    path = GOLDEN / f"{name}.nft.json"
    if os.environ.get("EH_UPDATE_GOLDEN"):
        path.write_text(json.dumps(ruleset, indent=1) + "\n")
    assert ruleset == json.loads(path.read_text())


def _rules(ruleset: dict, chain: str) -> list[dict]:
    return [o["rule"] for o in ruleset["nftables"] if "rule" in o and o["rule"]["chain"] == chain]


def test_default_policy_opens_no_inbound_port() -> None:
    ruleset = nft.compile_ruleset(parse_document({}))
    assert _rules(ruleset, "dstnat") == []
    wan_accepts = [
        r
        for r in _rules(ruleset, "input")
        if {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "wan"}}
        in r["expr"]
    ]
    assert [r["comment"] for r in wan_accepts] == ["wan dhcp replies"]
    chains = {o["chain"]["name"]: o["chain"] for o in ruleset["nftables"] if "chain" in o}
    assert chains["input"]["policy"] == "drop" and chains["forward"]["policy"] == "drop"


def test_forward_targets_follow_reservations_and_unknown_macs_stay_closed() -> None:
    config = parse_document(SAMPLES["forwards"])
    targets = nft.resolve_targets(config)
    assert {k: str(v) if v else None for k, v in targets.items()} == {
        "modbus": "192.168.254.201",
        "extapi": "192.168.254.210",
        "telemetry": "192.168.254.201",
        "stranger": None,
    }
    comments = [r.get("comment") for r in _rules(nft.compile_ruleset(config), "dstnat")]
    assert comments == ["forward modbus", "forward extapi", "forward telemetry"]


def test_live_address_moves_a_mac_target() -> None:
    config = parse_document(SAMPLES["forwards"])
    targets = nft.resolve_targets(config, {"02:eb:00:00:09:09": "192.168.254.230"})
    assert str(targets["stranger"]) == "192.168.254.230"


def test_digest_ignores_counters_but_not_rules() -> None:
    a = nft.compile_ruleset(parse_document({}))
    b = json.loads(json.dumps(a))
    for obj in b["nftables"]:
        for expr in obj.get("rule", {}).get("expr", []):
            if "counter" in expr:
                expr["counter"]["packets"] = 99
    assert nft.digest(a) == nft.digest(b)
    assert nft.digest(a) != nft.digest(nft.compile_ruleset(parse_document(SAMPLES["no-admin"])))
