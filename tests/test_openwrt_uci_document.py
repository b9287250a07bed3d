"""UCI form <-> JSON document: the mapping of docs/config.md's "UCI form" section."""

from __future__ import annotations

import copy
import importlib
import os
from pathlib import Path
from typing import Any

import pytest

from energyhubd import configfile
from energyhubd.config import load as config_load
from energyhubd.config.errors import ConfigError
from energyhubd.openwrt.uci import UciError, parse
from energyhubd.openwrt.uci_document import (
    SECTIONS,
    document_to_package,
    document_to_uci,
    uci_to_document,
    write_back,
)

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_UCI = ROOT / "openwrt-package" / "energyhubd" / "files" / "energyhub.config"

# The defaults of docs/config.md, spelled out (state_dir is platform-dependent: left out).
DEFAULTS = {
    "schema": 1,
    "version": 0,
    "device_id": "energyhub",
    "platform": "auto",
    "wan": {"device": "wan", "proto": "dhcp"},
    "lan": {
        "device": "br-lan",
        "address": "192.168.254.1/24",
        "admin_access": True,
        "dhcp": {
            "start": "192.168.254.200",
            "end": "192.168.254.244",
            "lease_time": "24h",
            "reservations": [{"name": "display", "ip": "192.168.254.200"}],
        },
    },
    "egress": {"mode": "open"},
    "dns": {"fallback": ["8.8.8.8"]},
    "control": {"socket": "/var/run/energyhubd.sock"},
    "outbound": {
        "broker_host": "data2.ferroamp.se",
        "mqtt_ports": [8883, 1883],
        "gateway_address": "52.29.33.74",
        "gateway_port": 2443,
        "ntp_servers": ["0.openwrt.pool.ntp.org", "1.openwrt.pool.ntp.org"],
        "update_host": "s3.eu-central-1.amazonaws.com",
        "diagnose_interval": "6h",
        "timeout": 5,
        "ip_ranges_file": "/etc/energyhubd/ip-ranges.json",
        "tunnel": {
            "mode": "disabled",
            "user": "energyhub",
            "key_file": "/etc/energyhubd/tunnel/id_ed25519",
            "expiry_hours": 4,
        },
    },
}

SITE = """\
# a site with a static WAN, two units and a locked Modbus forward
config energyhub 'main'
	option version '12'   # set by the portal
	option device_id 'eh-000123'

config wan 'wan'
	option proto 'static'
	option address '198.51.100.10/24'
	option gateway '198.51.100.1'
	list dns '198.51.100.1'
	list dns '198.51.100.2'

config lan 'lan'
	option admin_access 'off'
	option lease_time '7200'

config reservation 'display'
	option mac '02:00:5E:10:00:01'
	option ip '192.168.254.200'

config reservation
	option name 'unit-1'
	option mac "02:00:5e:10:00:11"
	option ip 192.168.254.201

config forward 'modbus'
	option port '502'
	option target 'unit-1'
	option target_port '1502'
	list allow_from '198.51.100.20'
	list allow_from '198.51.100.32/28'

config forward 'extapi'
	option proto 'tcp'
	option port '8080'
	option target '192.168.254.201'
	option allow_any_source 'yes'

config dns 'dns'
	option fallback '9.9.9.9 1.1.1.1'

config portal 'portal'
	option host 'broker.example'
	option port '8883'
	option health_interval '60.5'

config inventory 'inventory'
	option expected_units '2'
	list unit_mac_prefixes '02:00:5e'
	option unit_hostname_pattern ''
"""

SITE_DOC = {
    "version": 12,
    "device_id": "eh-000123",
    "wan": {
        "proto": "static",
        "address": "198.51.100.10/24",
        "gateway": "198.51.100.1",
        "dns": ["198.51.100.1", "198.51.100.2"],
    },
    "lan": {
        "admin_access": False,
        "dhcp": {
            "lease_time": 7200,
            "reservations": [
                {"name": "display", "mac": "02:00:5E:10:00:01", "ip": "192.168.254.200"},
                {"name": "unit-1", "mac": "02:00:5e:10:00:11", "ip": "192.168.254.201"},
            ],
        },
    },
    "forwards": [
        {
            "name": "modbus",
            "port": 502,
            "target": "unit-1",
            "target_port": 1502,
            "allow_from": ["198.51.100.20", "198.51.100.32/28"],
        },
        {
            "name": "extapi",
            "proto": "tcp",
            "port": 8080,
            "target": "192.168.254.201",
            "allow_any_source": True,
        },
    ],
    "dns": {"fallback": ["9.9.9.9", "1.1.1.1"]},
    "portal": {"host": "broker.example", "port": 8883, "health_interval": 60.5},
    "inventory": {
        "expected_units": 2,
        "unit_mac_prefixes": ["02:00:5e"],
        "unit_hostname_pattern": None,
    },
}


def to_doc(text: str, source: str = "/etc/config/energyhub") -> dict[str, Any]:
    return uci_to_document(parse(text, source), source)


def loader() -> Any:
    return config_load


def test_default_uci_file_is_the_default_policy() -> None:
    doc = to_doc(DEFAULT_UCI.read_text())
    assert doc == DEFAULTS


def test_default_uci_file_validates_like_an_empty_document() -> None:
    load = loader()
    if load is None or not hasattr(load, "parse_document"):
        pytest.skip("config loader not available yet")
    assert load.parse_document(to_doc(DEFAULT_UCI.read_text())) == load.parse_document({})


def test_site_file_maps_to_the_document() -> None:
    assert to_doc(SITE) == SITE_DOC


def test_file_document_uci_document_round_trip() -> None:
    doc = to_doc(SITE)
    text = document_to_uci(doc)
    assert to_doc(text) == doc
    # and the rendered text is a fixed point
    assert document_to_uci(to_doc(text)) == text
    # a reservation name that is not a UCI section name stays in 'option name'
    assert "config reservation\n\toption name 'unit-1'" in text
    assert "config reservation 'display'\n\toption name 'display'" in text


def test_docs_example_round_trips() -> None:
    example = {
        "schema": 1,
        "version": 7,
        "device_id": "eh-000123",
        "lan": {
            "dhcp": {
                "reservations": [
                    {"name": "display", "mac": "02:00:5e:10:00:01", "ip": "192.168.254.200"},
                    {"name": "unit1", "mac": "02:00:5e:10:00:11", "ip": "192.168.254.201"},
                ]
            }
        },
        "forwards": [
            {
                "name": "modbus",
                "proto": "tcp",
                "port": 502,
                "target": "unit1",
                "allow_from": ["198.51.100.20"],
            }
        ],
    }
    original = copy.deepcopy(example)
    assert to_doc(document_to_uci(example)) == example
    assert example == original  # not modified in place


def test_empty_lists_are_kept_apart_from_defaults() -> None:
    """No display and no DNS fallback is not the same as "use the defaults"."""
    doc = {"lan": {"dhcp": {"reservations": []}}, "dns": {"fallback": []}, "wan": {"dns": []}}
    text = document_to_uci(doc)
    assert "option dhcp_reservations 'none'" in text
    assert to_doc(text) == doc
    assert "reservations" not in to_doc("config lan 'lan'\n").get("lan", {}).get("dhcp", {})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "config forward\n\toption port 'abc'\n",
            "/etc/config/energyhub:2: option 'port': 'abc' is not an integer (forwards[0].port)",
        ),
        (
            "config forward 'a'\nconfig forward 'b'\n\toption allow_any_source 'maybe'\n",
            "/etc/config/energyhub:3: option 'allow_any_source': 'maybe' is not a boolean "
            "(use 1/0, true/false, yes/no or on/off) (forwards[1].allow_any_source)",
        ),
        (
            "config lan\n\tlist address '192.168.254.1/24'\n",
            "/etc/config/energyhub:2: option 'address': must be a single 'option', not a 'list' "
            "(lan.address)",
        ),
        (
            "config lan\n\toption colour 'red'\n",
            "/etc/config/energyhub:2: option 'colour': unknown option in config lan (known: "
            "device, address, admin_access, dhcp_start, dhcp_end, lease_time)",
        ),
        (
            "config wifi 'radio0'\n",
            "/etc/config/energyhub:1: config wifi 'radio0': unknown section type 'wifi' (known: "
            "energyhub, wan, lan, reservation, forward, egress, dns, control, portal, inventory, "
            "outbound, tunnel)",
        ),
        (
            "config wan 'a'\nconfig wan 'b'\n",
            "/etc/config/energyhub:2: config wan 'b': only one 'wan' section is allowed (the "
            "first is on line 1)",
        ),
        (
            "config lan\n\toption dhcp_reservations 'no'\n",
            "/etc/config/energyhub:2: option 'dhcp_reservations': only 'none' is accepted here "
            "(it empties the list of 'reservation' sections)",
        ),
        (
            "config lan\n\toption dhcp_reservations 'none'\nconfig reservation 'display'\n",
            "/etc/config/energyhub:2: option 'dhcp_reservations': says there are no "
            "'reservation' sections, but one is on line 3",
        ),
        (
            "config portal\n\toption health_interval 'soon'\n",
            "/etc/config/energyhub:2: option 'health_interval': 'soon' is not a number "
            "(portal.health_interval)",
        ),
    ],
)
def test_conversion_errors_name_file_line_and_option(text: str, expected: str) -> None:
    with pytest.raises(UciError) as info:
        to_doc(text)
    assert str(info.value) == expected


def test_values_are_converted_from_uci_words() -> None:
    doc = to_doc(
        "config lan\n\toption admin_access 'No'\n\toption lease_time '90m'\n"
        "config forward\n\toption allow_any_source 'TRUE'\n\toption port '0502'\n"
    )
    assert doc["lan"] == {"admin_access": False, "dhcp": {"lease_time": "90m"}}
    assert doc["forwards"] == [{"allow_any_source": True, "port": 502}]


def test_semantic_errors_are_left_to_the_loader() -> None:
    """The mapper converts types only; the one validator reports the meaning."""
    doc = to_doc("config forward 'modbus'\n\toption port '70000'\n\toption target 'unit1'\n")
    assert doc == {"forwards": [{"name": "modbus", "port": 70000, "target": "unit1"}]}
    load = loader()
    if load is None or not hasattr(load, "parse_document"):
        return
    with pytest.raises(load.ConfigError) as info:
        load.parse_document(doc)
    assert "forwards[0].port" in str(info.value)


def test_document_to_uci_refuses_unknown_keys_and_bad_types() -> None:
    with pytest.raises(UciError) as info:
        document_to_package(
            {"wan": {"colour": "red"}, "forwards": [{"port": "502", "x": 1}], "bogus": 1}
        )
    assert [str(e) for e in info.value.errors] == [
        "forwards[0].port: must be an integer",
        "forwards[0].x: unknown key",
        "wan.colour: unknown key",
        "bogus: unknown key",
    ]


def test_every_table_row_is_reachable_from_uci() -> None:
    """Each option of the table converts in both directions (catches a typo in a row)."""
    samples = {
        "str": "x",
        "int": "3",
        "num": "2.5",
        "bool": "1",
        "list": ["a", "b"],
        "duration": "24h",
        "optional str": "p",
        "int list": ["8883", "1883"],
        "seconds": "0.5",
    }
    for spec in SECTIONS:
        lines = [f"config {spec.type} 'item'"]
        for opt in spec.options:
            value = samples[opt.kind]
            if isinstance(value, list):
                lines += [f"\tlist {opt.uci} '{v}'" for v in value]
            else:
                lines.append(f"\toption {opt.uci} '{value}'")
        doc = to_doc("\n".join(lines) + "\n")
        assert to_doc(document_to_uci(doc)) == doc, spec.type


def test_write_back_is_atomic_and_skips_equal_content(tmp_path: Path) -> None:
    target = tmp_path / "energyhub"
    assert write_back(str(target), SITE_DOC) is True
    assert to_doc(target.read_text()) == SITE_DOC
    inode = os.stat(target).st_ino
    assert write_back(str(target), copy.deepcopy(SITE_DOC)) is False
    assert os.stat(target).st_ino == inode  # untouched: no config change, no flash write
    assert write_back(str(target), {**SITE_DOC, "version": 13}) is True
    assert os.stat(target).st_ino != inode  # replaced by rename, never rewritten in place
    assert to_doc(target.read_text())["version"] == 13
    assert sorted(p.name for p in tmp_path.iterdir()) == ["energyhub"]  # no temp left over
    assert oct(os.stat(target).st_mode & 0o777) == "0o644"


def test_loader_reads_uci_files(tmp_path: Path) -> None:
    path = tmp_path / "energyhub"
    path.write_text(SITE)
    config = configfile.load_file(path)
    assert config.device_id == "eh-000123"
    assert [f.name for f in config.forwards] == ["modbus", "extapi"]
    path.write_text("config forward\n\toption port 'abc'\n")
    with pytest.raises(ConfigError) as info:
        configfile.load_file(path)
    assert f"{path}:2: option 'port'" in str(info.value)


@pytest.mark.parametrize(
    ("section", "module", "cls"),
    [
        ("portal", "energyhubd.config.sections.portal", "PortalSettings"),
        ("inventory", "energyhubd.config.sections.inventory", "InventorySettings"),
    ],
)
def test_sections_owned_by_others_list_all_their_keys(section: str, module: str, cls: str) -> None:
    """A key added to the portal/inventory settings must get its UCI row too."""
    settings = importlib.import_module(module)
    keys = set(getattr(settings, cls).__dataclass_fields__)
    spec = next(s for s in SECTIONS if s.type == section)
    assert {opt.key for opt in spec.options} == keys


def test_validation_errors_point_at_uci_lines() -> None:
    from energyhubd.config.errors import ConfigError, FieldError
    from energyhubd.openwrt.uci_document import annotate, locate

    pkg = parse(SITE, "/etc/config/energyhub")
    assert locate(pkg, "forwards[1].port") == (35, "option 'port'")
    assert locate(pkg, "forwards[0].allow_from[1]") == (30, "option 'allow_from'")
    assert locate(pkg, "lan.dhcp.reservations[1].ip") == (24, "option 'ip'")
    assert locate(pkg, "lan.dhcp.lease_time") == (15, "option 'lease_time'")
    assert locate(pkg, "version") == (3, "option 'version'")
    assert locate(pkg, "wan.device") == (6, "config wan")  # option absent: its section
    assert locate(pkg, "egress.mode") is None  # no such section in the file
    assert locate(pkg, "forwards[5].port") is None
    error = ConfigError(
        [FieldError("forwards[1].port", "must be 1-65535"), FieldError("egress.mode", "bad")],
        "/etc/config/energyhub",
    )
    assert str(annotate(error, pkg)) == (
        "/etc/config/energyhub:35: option 'port': must be 1-65535 (forwards[1].port)\n"
        "/etc/config/energyhub: egress.mode: bad"
    )


OUTBOUND_SITE = """\
config outbound 'outbound'
	option broker_host 'broker.example.net'
	list mqtt_ports '8883'
	option gateway_address '192.0.2.20'
	option gateway_port '2443'
	list ntp_servers 'ntp.customer.example'
	list ntp_servers '192.0.2.123'
	option ca_file ''
	option diagnose_interval '90m'
	option timeout '2.5'

config tunnel 'tunnel'
	option mode 'on_demand'
	option user 'support'
	option remote_port '20031'
	option host_key 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGatewayKeyForTheTestOnly0123456789'
	option expiry_hours '0.5'
"""

OUTBOUND_DOC = {
    "outbound": {
        "broker_host": "broker.example.net",
        "mqtt_ports": [8883],
        "gateway_address": "192.0.2.20",
        "gateway_port": 2443,
        "ntp_servers": ["ntp.customer.example", "192.0.2.123"],
        "ca_file": None,
        "diagnose_interval": "90m",
        "timeout": 2.5,
        "tunnel": {
            "mode": "on_demand",
            "user": "support",
            "remote_port": 20031,
            "host_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGatewayKeyForTheTestOnly0123456789",
            "expiry_hours": 0.5,
        },
    }
}


def test_outbound_and_tunnel_sections_map_to_the_outbound_object() -> None:
    doc = to_doc(OUTBOUND_SITE)
    assert doc == OUTBOUND_DOC
    text = document_to_uci(doc)
    assert to_doc(text) == doc
    assert document_to_uci(to_doc(text)) == text  # a fixed point
    assert "config tunnel 'tunnel'\n\toption mode 'on_demand'" in text
    load = loader()
    if load is None or not hasattr(load, "parse_document"):
        return
    settings = load.parse_document(doc).outbound
    assert settings.mqtt_ports == (8883,)
    assert settings.diagnose_interval == 5400.0 and settings.timeout == 2.5
    assert settings.tunnel.mode == "on_demand" and settings.tunnel.remote_port == 20031


def test_outbound_numbers_round_trip_exactly() -> None:
    """Seconds may be integers, floats or duration strings; each comes back as it went."""
    for value in (3600, 0.5, "6h", 21600.0):
        doc = {"outbound": {"diagnose_interval": value, "timeout": value}}
        assert to_doc(document_to_uci(doc)) == doc, value
    doc = {"outbound": {"mqtt_ports": [8883, 1883], "tunnel": {"expiry_hours": 4}}}
    assert to_doc(document_to_uci(doc)) == doc
    # 'option' with space-separated ports, as the shell helpers write lists
    assert to_doc("config outbound\n\toption mqtt_ports '8883 1883'\n") == {
        "outbound": {"mqtt_ports": [8883, 1883]}
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "config outbound 'outbound'\n\tlist mqtt_ports '8883'\n\tlist mqtt_ports 'tls'\n",
            "/etc/config/energyhub:2: option 'mqtt_ports': 'tls' is not an integer "
            "(outbound.mqtt_ports)",
        ),
        (
            "config tunnel 'tunnel'\n\toption remote_port 'high'\n",
            "/etc/config/energyhub:2: option 'remote_port': 'high' is not an integer "
            "(outbound.tunnel.remote_port)",
        ),
        (
            "config tunnel 'tunnel'\n\toption mode 'on_demand'\n\toption hours '2'\n",
            "/etc/config/energyhub:3: option 'hours': unknown option in config tunnel 'tunnel' "
            "(known: mode, user, key_file, remote_port, host_key, expiry_hours)",
        ),
        (
            "config outbound\n\tlist gateway_port '2443'\n",
            "/etc/config/energyhub:2: option 'gateway_port': must be a single 'option', not a "
            "'list' (outbound.gateway_port)",
        ),
    ],
)
def test_outbound_conversion_errors_name_file_line_and_option(text: str, expected: str) -> None:
    with pytest.raises(UciError) as info:
        to_doc(text)
    assert str(info.value) == expected


def test_outbound_validation_errors_point_at_uci_lines() -> None:
    load = loader()
    if load is None or not hasattr(load, "parse_document"):
        pytest.skip("config loader not available yet")
    from energyhubd.openwrt.uci_document import annotate

    text = (
        "config outbound 'outbound'\n"
        "\toption timeout '90'\n"
        "\n"
        "config tunnel 'tunnel'\n"
        "\toption mode 'always'\n"
        "\toption remote_port '20031'\n"
    )
    pkg = parse(text, "/etc/config/energyhub")
    with pytest.raises(load.ConfigError) as info:
        load.parse_document(uci_to_document(pkg))
    lines = str(annotate(info.value, pkg)).splitlines()
    assert lines == [
        "/etc/config/energyhub:2: option 'timeout': 90 s is longer than the maximum 60 s "
        "(outbound.timeout)",
        "/etc/config/energyhub:4: config tunnel: required when the tunnel is enabled (the "
        "gateway's key is pinned, never trusted on first use) (outbound.tunnel.host_key)",
    ]


def test_outbound_sections_list_every_settings_key() -> None:
    """A key added to OutboundSettings/TunnelSettings must get its UCI row too."""
    from energyhubd.config.sections.outbound import OutboundSettings, TunnelSettings

    by_type = {s.type: s for s in SECTIONS}
    outbound_keys = set(OutboundSettings.__dataclass_fields__) - {"tunnel"}
    assert {opt.key for opt in by_type["outbound"].options} == outbound_keys
    assert {opt.key for opt in by_type["tunnel"].options} == set(
        TunnelSettings.__dataclass_fields__
    )


def test_allow_from_bound_points_at_the_uci_line(tmp_path: Path) -> None:
    """The size bound is reported like any other error: reason, field path, file line."""
    lines = ["config forward 'modbus'", "\toption port '502'", "\toption target 'display'"]
    lines += [f"\tlist allow_from '198.18.{k // 256}.{k % 256}'" for k in range(257)]
    path = tmp_path / "energyhub"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError) as info:
        configfile.load_file(path)
    assert str(info.value).splitlines() == [
        f"{path}:4: option 'allow_from': 257 entries; at most 256 per forward "
        "(forwards[0].allow_from)"
    ]
