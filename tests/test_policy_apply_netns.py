"""Applying the policy to a real kernel inside a throwaway network namespace."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from energyhub_lab import netns
from tests.conftest import run_in
from tests.policy_samples import SAMPLES

pytestmark = [pytest.mark.netns, pytest.mark.feed]


def nft_json(ns: str) -> dict:
    return json.loads(netns.ns_run(ns, ["nft", "-j", "-a", "list", "ruleset"]))


def handles(ns: str) -> list[tuple[str, int]]:
    result = []
    for obj in nft_json(ns)["nftables"]:
        for kind in ("table", "chain", "rule"):
            if kind in obj:
                result.append((kind, obj[kind]["handle"]))
    return result


def lan_bridge(ns: str) -> None:
    netns.ip(ns, "link", "add", "br-lan", "type", "bridge")


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_kernel_holds_exactly_the_compiled_table(ns: str, tmp_path: Path, name: str) -> None:
    """The compiler writes libnftables' canonical form, so a listing compares equal."""
    lan_bridge(ns)
    config = tmp_path / "c.json"
    config.write_text(json.dumps(SAMPLES[name]))
    first = run_in(ns, "apply", "--config", str(config))
    assert first.returncode == 0, first.stderr
    assert "policy applied" in first.stdout
    second = run_in(ns, "apply", "--config", str(config))
    assert "unchanged" in second.stdout, second.stdout


def test_second_apply_writes_nothing(ns: str, tmp_path: Path) -> None:
    lan_bridge(ns)
    config = tmp_path / "c.json"
    config.write_text(json.dumps(SAMPLES["forwards"]))
    run_in(ns, "apply", "--config", str(config))
    before = handles(ns)
    result = run_in(ns, "apply", "--config", str(config))
    assert result.returncode == 0
    assert handles(ns) == before


def test_apply_sets_lan_address_and_forwarding(ns: str) -> None:
    lan_bridge(ns)
    netns.ip(ns, "addr", "add", "10.9.9.1/24", "dev", "br-lan")  # a stale address we own
    result = run_in(ns, "apply")
    assert result.returncode == 0, result.stderr
    addrs = netns.ip(ns, "-4", "-o", "addr", "show", "dev", "br-lan")
    assert "192.168.254.1/24" in addrs and "10.9.9.1" not in addrs
    assert netns.ns_run(ns, ["sysctl", "-n", "net.ipv4.ip_forward"]).strip() == "1"


def test_bad_config_exits_2_and_leaves_ruleset_untouched(ns: str, tmp_path: Path) -> None:
    lan_bridge(ns)
    good = tmp_path / "good.json"
    good.write_text(json.dumps(SAMPLES["forwards"]))
    run_in(ns, "apply", "--config", str(good))
    before = netns.ns_run(ns, ["nft", "list", "ruleset"])
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            {
                "forwards": [{"name": "m", "port": 502, "target": "display"}],
                "lan": {"dhcp": {"lease_time": "1s"}},
            }
        )
    )
    result = run_in(ns, "apply", "--config", str(bad))
    assert result.returncode == 2
    assert "forwards[0].allow_from: required unless allow_any_source is true" in result.stderr
    assert "lan.dhcp.lease_time: 1 s is shorter than the minimum 120 s" in result.stderr
    assert netns.ns_run(ns, ["nft", "list", "ruleset"]) == before


def test_other_tables_are_left_alone(ns: str) -> None:
    """fw4 owns ``inet fw4``; replacing our table must never touch it."""
    lan_bridge(ns)
    netns.ns_run(
        ns,
        [
            "nft",
            "add table inet fw4; add chain inet fw4 input { type filter "
            "hook input priority filter; policy accept; }",
        ],
    )
    run_in(ns, "apply")
    run_in(ns, "apply", "--config", "/dev/null")
    tables = netns.ns_run(ns, ["nft", "list", "tables"])
    assert "table inet fw4" in tables and "table inet energyhub" in tables


def test_plan_needs_no_kernel(tmp_path: Path) -> None:
    config = tmp_path / "c.json"
    config.write_text(json.dumps(SAMPLES["forwards"]))
    proc = subprocess.run(
        ["energyhubd", "plan", "--config", str(config)],
        capture_output=True,
        text=True,
        env={"PATH": str(Path(__import__("sys").executable).parent)},
    )
    assert proc.returncode == 0
    assert json.loads(proc.stdout)["nftables"][0] == {
        "table": {"family": "inet", "name": "energyhub"}
    }
