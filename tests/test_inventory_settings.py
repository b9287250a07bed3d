"""The ``inventory`` config section: defaults, normalisation, and errors naming the field."""

from __future__ import annotations

from energyhubd.config.errors import FieldError
from energyhubd.config.sections.inventory import InventorySettings, parse_inventory_section


def test_none_and_empty_give_defaults() -> None:
    objs: tuple[object, ...] = (None, {})
    for obj in objs:
        settings, errors = parse_inventory_section(obj)
        assert errors == [] and settings == InventorySettings()
    assert InventorySettings().expected_units == 3
    assert InventorySettings().unit_hostname_pattern == "energyhub*"
    assert InventorySettings().pool_warning_percent == 80


def test_full_section_is_normalised() -> None:
    settings, errors = parse_inventory_section(
        {
            "expected_units": 5,
            "unit_mac_prefixes": ["02-00-5E-10", "aa"],
            "unit_hostname_pattern": "EH-[0-9]*",
            "unit_vendor_classes": ["ferroamp-eh"],
            "pool_warning_percent": 90,
            "lease_file": "/tmp/dhcp.leases",
        }
    )
    assert errors == []
    assert settings.unit_mac_prefixes == ("02:00:5e:10", "aa")
    assert settings.unit_hostname_pattern == "eh-[0-9]*"
    assert settings.as_dict()["lease_file"] == "/tmp/dhcp.leases"


def test_every_error_names_its_path() -> None:
    _, errors = parse_inventory_section(
        {
            "expected_units": True,
            "unit_mac_prefixes": ["02:00:5e:10", "02:00:5e:10:00:01", 7, "02:00:5e:10"],
            "unit_hostname_pattern": "energy hub;rm",
            "unit_vendor_classes": ["ok", "bad\n"],
            "pool_warning_percent": 0,
            "lease_file": "relative/path",
            "colour": "red",
        }
    )
    paths = {e.path: e.reason for e in errors}
    assert set(paths) == {
        "inventory.expected_units",
        "inventory.unit_mac_prefixes[1]",
        "inventory.unit_mac_prefixes[2]",
        "inventory.unit_mac_prefixes[3]",
        "inventory.unit_hostname_pattern",
        "inventory.unit_vendor_classes[1]",
        "inventory.pool_warning_percent",
        "inventory.lease_file",
        "inventory.colour",
    }
    assert paths["inventory.colour"] == "unknown key"
    assert "duplicate" in paths["inventory.unit_mac_prefixes[3]"]
    assert all(isinstance(e, FieldError) for e in errors)


def test_glob_brackets_and_nulls() -> None:
    for bad in ("energyhub[", "a]b", "x[]", "[[a]]", ""):
        _, errors = parse_inventory_section({"unit_hostname_pattern": bad}, "cfg.inv")
        assert [e.path for e in errors] == ["cfg.inv.unit_hostname_pattern"], bad
    settings, errors = parse_inventory_section(
        {"unit_hostname_pattern": None, "lease_file": None}, default_lease_file="/run/x.leases"
    )
    assert errors == [] and settings.unit_hostname_pattern is None
    assert settings.lease_file == "/run/x.leases"  # null: the platform's file, set at parse time


def test_lease_file_default_is_the_platforms_and_agrees_with_the_dnsmasq_adapter() -> None:
    from energyhubd.config.load import parse_document
    from energyhubd.kernel.dnsmasq import own_lease_file

    linux = parse_document({"state_dir": "/srv/eh"}, host_platform="linux")
    assert linux.inventory.lease_file == own_lease_file("/srv/eh")
    openwrt = parse_document({"inventory": {"lease_file": None}}, host_platform="openwrt")
    assert openwrt.inventory.lease_file == "/tmp/dhcp.leases"
    given = parse_document({"inventory": {"lease_file": "/tmp/l"}}, host_platform="linux")
    assert given.inventory.lease_file == "/tmp/l"


def test_wrong_types() -> None:
    _, errors = parse_inventory_section([1, 2])
    assert [str(e) for e in errors] == ["inventory: must be an object, not a list"]
    _, errors = parse_inventory_section({"unit_mac_prefixes": "02:00", "lease_file": "/a/../b"})
    assert {e.path for e in errors} == {"inventory.unit_mac_prefixes", "inventory.lease_file"}


def test_hostile_unknown_key_is_escaped_in_the_error() -> None:
    _, errors = parse_inventory_section({"x\ny": 1})
    assert [e.path for e in errors] == ["inventory.x\\x0ay"]
