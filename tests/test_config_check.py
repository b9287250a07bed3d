"""The one checker: the same words for the same problem in every section, every error kept,
defaults applied by the option table, typed sections, the platform passed in."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pytest

from energyhubd.config import check as ck
from energyhubd.config.check import Checker, Option
from energyhubd.config.errors import ConfigError
from energyhubd.config.load import parse_document
from energyhubd.config.model import Config
from energyhubd.config.sections.inventory import InventorySettings
from energyhubd.config.sections.outbound import OutboundSettings, TunnelSettings
from energyhubd.config.sections.portal import PortalSettings

SPEC: dict[str, Option] = {
    "count": Option(ck.integer(1, 10), 3),
    "ratio": Option(ck.number(0.5, 2), 1.0),
    "on": Option(ck.boolean(), False),
    "name": Option(ck.string(re.compile(r"^[a-z]+$"), "name"), "x", required=True),
    "mode": Option(ck.choice("a", "b"), "a"),
    "file": Option(ck.abspath(), None, nullable=True),
    "host": Option(ck.host(), "example.net"),
    "wait": Option(ck.seconds(10, 3600), 60.0),
    "ports": Option(ck.unique(ck.integer(1, 65535), 1, 3), (1,)),
}


def read(value: Any) -> tuple[dict[str, Any], dict[str, str]]:
    c = Checker()
    out = c.options(value, "s", SPEC)
    return out, {e.path: e.reason for e in c.errors}


def test_absent_and_null_take_the_table_default_nullable_keeps_null() -> None:
    out, errors = read({"name": "abc", "count": None, "file": None})
    assert errors == {}
    assert out == {
        "count": 3,
        "ratio": 1.0,
        "on": False,
        "name": "abc",
        "mode": "a",
        "file": None,
        "host": "example.net",
        "wait": 60.0,
        "ports": (1,),
    }


def test_every_problem_is_reported_in_one_pass_with_one_vocabulary() -> None:
    _, errors = read(
        {
            "count": 11,
            "ratio": "1",
            "on": 1,
            "mode": "c",
            "file": "rel/x",
            "host": "no host",
            "wait": "5s",
            "ports": [80, 80, 0],
            "colour\n": 1,
        }
    )
    assert errors == {
        "s.colour\\x0a": "unknown key",
        "s.count": "11 is out of range 1..10",
        "s.ratio": "must be a number, not a string",
        "s.on": "must be true or false, not an integer",
        "s.name": "required",
        "s.mode": "'c' is not one of a, b",
        "s.file": "'rel/x' must be an absolute path",
        "s.host": "'no host' is not a host name or an IPv4 address",
        "s.wait": "5 s is shorter than the minimum 10 s",
        "s.ports[1]": "duplicate of s.ports[0] (80)",
        "s.ports[2]": "0 is out of range 1..65535",
    }


def test_bad_value_keeps_the_default_and_structure_errors_name_the_kind() -> None:
    out, errors = read({"name": "abc", "count": True})
    assert out["count"] == 3 and errors == {"s.count": "must be an integer, not a boolean"}
    assert read([1])[1] == {"s": "must be an object, not a list"}
    assert read({"name": "a", "ports": []})[1] == {"s.ports": "0 entries; at least 1"}
    assert read({"name": "a", "ports": [1, 2, 3, 4]})[1] == {"s.ports": "4 entries; at most 3"}


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({"version": "1"}, "version: must be an integer, not a string"),
        ({"portal": {"keepalive": "1"}}, "portal.keepalive: must be an integer, not a string"),
        (
            {"inventory": {"expected_units": "1"}},
            "inventory.expected_units: must be an integer, not a string",
        ),
        (
            {"outbound": {"gateway_port": "1"}},
            "outbound.gateway_port: must be an integer, not a string",
        ),
        ({"forwards": [{"port": 0}]}, "forwards[0].port: 0 is out of range 1..65535"),
        ({"portal": {"port": 0}}, "portal.port: 0 is out of range 1..65535"),
        ({"outbound": {"gateway_port": 0}}, "outbound.gateway_port: 0 is out of range 1..65535"),
        ({"wan": 1}, "wan: must be an object, not an integer"),
        ({"portal": 1}, "portal: must be an object, not an integer"),
        ({"outbound": 1}, "outbound: must be an object, not an integer"),
        ({"inventory": 1}, "inventory: must be an object, not an integer"),
        ({"control": {"socket": "x"}}, "control.socket: 'x' must be an absolute path"),
        ({"portal": {"ca_file": "x"}}, "portal.ca_file: 'x' must be an absolute path"),
        ({"inventory": {"lease_file": "x"}}, "inventory.lease_file: 'x' must be an absolute path"),
        ({"lan": {"x": 1}}, "lan.x: unknown key"),
        ({"outbound": {"tunnel": {"x": 1}}}, "outbound.tunnel.x: unknown key"),
    ],
)
def test_same_problem_same_words_in_every_section(document: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_document(document)
    assert expected in [str(e) for e in caught.value.errors]


def test_errors_of_all_sections_come_together() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_document(
            {
                "lan": {"admin_access": 1},
                "portal": {"port": 0},
                "outbound": {"timeout": 0},
                "inventory": {"pool_warning_percent": 0},
            }
        )
    assert [e.path for e in caught.value.errors] == [
        "lan.admin_access",
        "inventory.pool_warning_percent",
        "portal.port",
        "outbound.timeout",
    ]


def test_every_section_is_typed_and_complete() -> None:
    config = parse_document({})
    assert config.portal == PortalSettings()
    assert config.outbound == OutboundSettings() and config.outbound.tunnel == TunnelSettings()
    lease_file = "/var/lib/energyhubd/dnsmasq/dhcp.leases"  # linux: energyhubd's own dnsmasq
    assert config.inventory == InventorySettings(lease_file=lease_file)
    hints = {f.name: f.type for f in dataclasses.fields(Config)}
    assert hints["portal"] == "PortalSettings"
    assert hints["outbound"] == "OutboundSettings"
    assert hints["inventory"] == "InventorySettings"
    assert "Any" not in {hints[k] for k in ("portal", "outbound", "inventory")}


def test_platform_auto_is_what_the_caller_says() -> None:
    assert parse_document({}).platform == "linux"
    openwrt = parse_document({}, host_platform="openwrt")
    assert (openwrt.platform, openwrt.state_dir) == ("openwrt", "/etc/energyhubd")
    linux = parse_document({"platform": "linux"}, host_platform="openwrt")
    assert (linux.platform, linux.state_dir) == ("linux", "/var/lib/energyhubd")


@pytest.mark.parametrize("huge", [10**400, -(10**400), 1e308 * 10, 2**53 + 1])
def test_huge_numbers_are_range_errors_not_crashes(huge: float) -> None:
    document = {
        "version": huge,
        "lan": {"dhcp": {"lease_time": huge}},
        "portal": {"health_interval": huge, "keepalive": huge},
        "outbound": {"timeout": huge},
        "inventory": {"expected_units": huge},
    }
    with pytest.raises(ConfigError) as caught:
        parse_document(document)
    paths = [e.path for e in caught.value.errors]
    assert "lan.dhcp.lease_time" in paths and "outbound.timeout" in paths
    assert all(len(str(e)) < 200 for e in caught.value.errors)
