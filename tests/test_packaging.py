"""The installable package must contain every sub-package (OpenWrt builds a real wheel, not an
editable install, so a sub-package missing from pyproject would be missing on the router)."""

from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_every_subpackage_is_listed_in_pyproject() -> None:
    listed = set(
        tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    present = {"energyhubd"} | {
        "energyhubd." + str(p.parent.relative_to(REPO / "daemon")).replace("/", ".")
        for p in (REPO / "daemon").rglob("__init__.py")
        if p.parent != REPO / "daemon"
    }
    assert present == listed


def test_console_scripts_point_at_real_functions() -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    import importlib

    for target in scripts.values():
        module, _, func = target.partition(":")
        assert callable(getattr(importlib.import_module(module), func))
