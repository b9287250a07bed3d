"""The ``outbound`` section: defaults, every key validated, errors named by field."""

from __future__ import annotations

from energyhubd.config.sections.outbound import OutboundSettings, parse_outbound_section

HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHh0aGlzaXNhbGFiaG9zdGtleWZvcnRlc3Rz"


def reasons(obj: object) -> dict[str, str]:
    _settings, errors = parse_outbound_section(obj)
    return {e.path: e.reason for e in errors}


def test_none_and_empty_mean_the_documented_defaults() -> None:
    empty: list[object] = [None, {}]
    for obj in empty:
        settings, errors = parse_outbound_section(obj)
        assert errors == []
        assert settings == OutboundSettings()
    s = OutboundSettings()
    assert s.broker_host == "data2.ferroamp.se"
    assert s.mqtt_ports == (8883, 1883)
    assert s.gateway_address == "52.29.33.74" and s.gateway_port == 2443
    assert s.update_host == "s3.eu-central-1.amazonaws.com"
    assert s.tunnel.mode == "disabled"


def test_lab_overrides_are_taken() -> None:
    settings, errors = parse_outbound_section(
        {
            "broker_host": "broker.lab",
            "mqtt_ports": [8883],
            "gateway_address": "203.0.113.20",
            "ntp_servers": ["203.0.113.40"],
            "ca_file": "/tmp/ca.pem",
            "diagnose_interval": "1h",
            "timeout": 2,
            "tunnel": {
                "mode": "on_demand",
                "remote_port": 20022,
                "host_key": HOST_KEY + " gateway@lab",
                "expiry_hours": 0.5,
            },
        }
    )
    assert errors == []
    assert settings.broker_host == "broker.lab"
    assert settings.diagnose_interval == 3600
    assert settings.tunnel.host_key == HOST_KEY  # comment dropped
    assert settings.as_dict()["tunnel"]["remote_port"] == 20022


def test_unknown_keys_are_refused_by_name() -> None:
    got = reasons({"colour": 1, "tunnel": {"mode": "disabled", "shape": "x"}})
    assert got == {"outbound.colour": "unknown key", "outbound.tunnel.shape": "unknown key"}


def test_bad_values_name_the_field() -> None:
    got = reasons(
        {
            "broker_host": "not a host",
            "mqtt_ports": [8883, 8883],
            "gateway_address": "gateway.example",
            "gateway_port": 0,
            "ntp_servers": [],
            "ca_file": "relative.pem",
            "diagnose_interval": "1s",
            "timeout": "soon",
        }
    )
    assert set(got) == {
        "outbound.broker_host",
        "outbound.mqtt_ports[1]",
        "outbound.gateway_address",
        "outbound.gateway_port",
        "outbound.ntp_servers",
        "outbound.ca_file",
        "outbound.diagnose_interval",
        "outbound.timeout",
    }
    assert "duplicate" in got["outbound.mqtt_ports[1]"]
    assert got["outbound.diagnose_interval"] == "1 s is shorter than the minimum 300 s"


def test_enabled_tunnel_requires_a_pinned_host_key_and_a_port() -> None:
    got = reasons({"tunnel": {"mode": "always"}})
    assert "never trusted on first use" in got["outbound.tunnel.host_key"]
    assert "required" in got["outbound.tunnel.remote_port"]
    got = reasons({"tunnel": {"mode": "always", "remote_port": 2022, "host_key": "yes please"}})
    assert "public host key" in got["outbound.tunnel.host_key"]
    got = reasons({"tunnel": {"mode": "sometimes"}})
    assert "disabled, on_demand, always" in got["outbound.tunnel.mode"]


def test_not_an_object() -> None:
    assert reasons([]) == {"outbound": "must be an object, not a list"}
    assert reasons({"tunnel": 3}) == {"outbound.tunnel": "must be an object, not an integer"}
