"""Configurations shared by the policy tests."""

from __future__ import annotations

from typing import Any

FORWARDS_DOC: dict[str, Any] = {
    "lan": {
        "dhcp": {
            "reservations": [
                {"name": "display", "mac": "02:eb:00:00:00:01", "ip": "192.168.254.200"},
                {"name": "unit1", "mac": "02:eb:00:00:01:01", "ip": "192.168.254.201"},
            ]
        }
    },
    "forwards": [
        {
            "name": "modbus",
            "port": 502,
            "target": "unit1",
            "allow_from": ["198.51.100.20", "198.51.100.64/26"],
        },
        {
            "name": "extapi",
            "port": 8080,
            "target": "192.168.254.210",
            "target_port": 80,
            "allow_any_source": True,
        },
        {
            "name": "telemetry",
            "proto": "udp",
            "port": 5000,
            "target": "02:eb:00:00:01:01",
            "allow_from": ["198.51.100.20"],
        },
        {
            "name": "stranger",
            "port": 9000,
            "target": "02:eb:00:00:09:09",
            "allow_from": ["198.51.100.20"],
        },
    ],
}

SAMPLES: dict[str, dict[str, Any]] = {
    "default": {},
    "forwards": FORWARDS_DOC,
    "no-admin": {"lan": {"admin_access": False}},
}
