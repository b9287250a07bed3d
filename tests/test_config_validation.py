"""The configuration contract: defaults from the network document, and errors that name the
field and the reason."""

from __future__ import annotations

import ipaddress
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from energyhubd.config.errors import ConfigError
from energyhubd.config.load import parse_document, parse_text


def errors_of(document: Any) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_document(document)
    return [str(e) for e in caught.value.errors]


def test_empty_document_is_the_network_document_policy() -> None:
    config = parse_document({})
    assert config.lan.device == "br-lan"
    assert config.lan.address == ipaddress.IPv4Interface("192.168.254.1/24")
    assert str(config.lan.dhcp.start) == "192.168.254.200"
    assert str(config.lan.dhcp.end) == "192.168.254.244"
    assert config.lan.dhcp.lease_seconds == 24 * 3600
    display = config.lan.dhcp.reservation("display")
    assert display is not None and str(display.ip) == "192.168.254.200"
    assert (config.wan.device, config.wan.proto) == ("wan", "dhcp")
    assert config.forwards == ()
    assert config.egress_mode == "open"
    assert [str(a) for a in config.dns_fallback] == ["8.8.8.8"]


def test_forward_without_source_lock_is_refused() -> None:
    doc = {"forwards": [{"name": "modbus", "port": 502, "target": "display"}]}
    assert errors_of(doc) == ["forwards[0].allow_from: required unless allow_any_source is true"]


def test_forward_open_to_all_needs_explicit_consent_and_no_list() -> None:
    ok = parse_document(
        {
            "forwards": [
                {"name": "extapi", "port": 8080, "target": "display", "allow_any_source": True}
            ]
        }
    )
    assert ok.forwards[0].allow_any_source
    doc = {
        "forwards": [
            {
                "name": "m",
                "port": 502,
                "target": "display",
                "allow_any_source": True,
                "allow_from": ["198.51.100.20"],
            }
        ]
    }
    assert errors_of(doc) == ["forwards[0].allow_from: must be empty when allow_any_source is true"]


def test_reservation_outside_pool_names_the_field() -> None:
    doc = {"lan": {"dhcp": {"reservations": [{"name": "display", "ip": "192.168.254.7"}]}}}
    assert errors_of(doc) == [
        "lan.dhcp.reservations[0].ip: 192.168.254.7 is outside the LAN pool "
        "192.168.254.200-192.168.254.244"
    ]


def test_all_errors_are_reported_at_once() -> None:
    doc = {
        "wan": {"colour": "blue", "proto": "static"},
        "lan": {
            "dhcp": {
                "lease_time": "5s",
                "reservations": [
                    {"name": "a", "mac": "02:00:00:00:00:01", "ip": "192.168.254.210"},
                    {"name": "a", "mac": "02-00-00-00-00-01", "ip": "192.168.254.210"},
                ],
            }
        },
        "forwards": [
            {
                "name": "m",
                "proto": "sctp",
                "port": 70000,
                "target": "10.0.0.1",
                "allow_from": ["198.51.100.0/24", "198.51.100.7", "nonsense"],
            },
        ],
    }
    assert errors_of(doc) == [
        "wan.colour: unknown key",
        "wan.address: required when proto is static",
        "wan.gateway: required when proto is static",
        "lan.dhcp.lease_time: 5 s is shorter than the minimum 120 s",
        "lan.dhcp.reservations[1].name: 'a' is already used by reservations[0]",
        "lan.dhcp.reservations[1].mac: 02:00:00:00:00:01 is already used by reservations[0]",
        "lan.dhcp.reservations[1].ip: 192.168.254.210 is already reserved by reservations[0]",
        "forwards[0].proto: 'sctp' is not one of tcp, udp",
        "forwards[0].port: 70000 is out of range 1..65535",
        "forwards[0].target: 10.0.0.1 is outside the LAN network 192.168.254.0/24",
        "forwards[0].allow_from[1]: 198.51.100.7 overlaps forwards[0].allow_from[0] "
        "(198.51.100.0/24)",
        "forwards[0].allow_from[2]: 'nonsense' is not an IPv4 address or prefix",
    ]


def test_prefix_with_host_bits_suggests_the_network() -> None:
    doc = {
        "forwards": [
            {"name": "m", "port": 502, "target": "display", "allow_from": ["198.51.100.5/24"]}
        ]
    }
    assert errors_of(doc) == [
        "forwards[0].allow_from[0]: '198.51.100.5/24' has host bits set "
        "(did you mean 198.51.100.0/24?)"
    ]


def test_duplicate_forward_ports_and_names() -> None:
    fwd = {"name": "m", "port": 502, "target": "display", "allow_from": ["198.51.100.20"]}
    assert errors_of({"forwards": [fwd, dict(fwd)]}) == [
        "forwards[1].name: 'm' is already used by forwards[0]",
        "forwards[1].port: tcp/502 is already forwarded by forwards[0]",
    ]


def test_static_wan_checks_gateway_inside_network() -> None:
    doc = {"wan": {"proto": "static", "address": "198.51.100.10/24", "gateway": "203.0.113.1"}}
    assert errors_of(doc) == ["wan.gateway: 203.0.113.1 is not inside 198.51.100.0/24"]
    ok = parse_document(
        {
            "wan": {
                "proto": "static",
                "address": "198.51.100.10/24",
                "gateway": "198.51.100.1",
                "dns": ["198.51.100.1"],
            }
        }
    )
    assert str(ok.wan.gateway) == "198.51.100.1"


def test_pool_must_not_contain_router_and_must_be_ordered() -> None:
    assert errors_of({"lan": {"dhcp": {"start": "192.168.254.240", "end": "192.168.254.210"}}}) == [
        "lan.dhcp.end: 192.168.254.210 is below the pool start 192.168.254.240"
    ]
    assert errors_of({"lan": {"address": "192.168.254.220/24"}}) == [
        "lan.dhcp.start: the pool 192.168.254.200-192.168.254.244 contains the router address "
        "192.168.254.220"
    ]


def test_mac_and_lease_time_forms() -> None:
    config = parse_document(
        {
            "lan": {
                "dhcp": {
                    "lease_time": "90m",
                    "reservations": [
                        {"name": "display", "mac": "02-AB-CD-00-00-01", "ip": "192.168.254.200"}
                    ],
                }
            }
        }
    )
    assert config.lan.dhcp.lease_seconds == 5400
    assert config.lan.dhcp.reservations[0].mac == "02:ab:cd:00:00:01"
    assert errors_of(
        {
            "lan": {
                "dhcp": {
                    "reservations": [
                        {"name": "display", "mac": "01:00:5e:00:00:01", "ip": "192.168.254.200"}
                    ]
                }
            }
        }
    ) == ["lan.dhcp.reservations[0].mac: 01:00:5e:00:00:01 is a multicast address"]


def test_wrong_types_are_named() -> None:
    assert errors_of({"version": "7", "lan": [], "forwards": {}}) == [
        "version: must be an integer, not a string",
        "lan: must be an object, not a list",
        "forwards: must be a list, not an object",
    ]
    assert errors_of([]) == ["the document must be a JSON object, not a list"]


def test_not_json_is_a_clear_error() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_text(b"{not json", "push")
    assert str(caught.value).startswith("push: not valid JSON")


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 70000)
    | st.text(max_size=20)
    | st.sampled_from(
        [
            "192.168.254.210",
            "198.51.100.0/24",
            "02:00:00:00:00:01",
            "display",
            "tcp",
            "static",
            "24h",
        ]
    ),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "name",
                    "port",
                    "target",
                    "allow_from",
                    "ip",
                    "mac",
                    "proto",
                    "address",
                    "dhcp",
                    "reservations",
                    "lan",
                    "wan",
                    "forwards",
                    "x",
                ]
            ),
            children,
            max_size=5,
        )
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            ["lan", "wan", "forwards", "version", "egress", "dns", "control", "device_id", "junk"]
        ),
        json_values,
        max_size=6,
    )
)
def test_random_documents_never_crash(document: dict[str, Any]) -> None:
    """Whatever arrives, the answer is a model or field-named errors, never an exception."""
    try:
        config = parse_document(document)
    except ConfigError as exc:
        assert exc.errors
        for error in exc.errors:
            assert error.reason
        return
    assert json.loads(json.dumps(config.document)) == document


def test_ubus_socket_is_optional_and_must_be_absolute() -> None:
    assert parse_document({}).ubus_socket is None
    given_path = parse_document({"control": {"ubus_socket": "/run/lab/ubus.sock"}})
    assert given_path.ubus_socket == "/run/lab/ubus.sock"
    assert errors_of({"control": {"ubus_socket": "ubus.sock"}}) == [
        "control.ubus_socket: 'ubus.sock' must be an absolute path"
    ]
