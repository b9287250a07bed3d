"""What a wheel of the daemon contains: every sub-package under ``daemon/`` (OpenWrt builds a
real wheel, not an editable install) and nothing of the lab, the benchmarks or the tests."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def test_console_scripts_point_at_real_functions() -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    import importlib

    for target in scripts.values():
        module, _, func = target.partition(":")
        assert callable(getattr(importlib.import_module(module), func))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(REPO),
        ],
        check=True,
    )
    (built,) = out.glob("energyhubd-*.whl")
    return zipfile.ZipFile(built)


def test_wheel_holds_every_subpackage_and_no_lab(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    present = {
        str(p.relative_to(REPO / "daemon"))
        for p in (REPO / "daemon").rglob("*.py")
        if "__pycache__" not in p.parts
    }
    assert present <= names
    assert not [n for n in names if "lab" in n.split("/")[0] or n.startswith(("tests", "bench"))]
    assert not [n for n in names if "energyhub_lab" in n]


def test_daemon_start_does_not_import_the_lab() -> None:
    code = (
        "import sys; from energyhubd import cli; cli.build_parser();"
        "assert not [m for m in sys.modules if m.startswith('energyhub_lab')]"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
