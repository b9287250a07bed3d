"""The package Makefiles evaluated by GNU make, with a minimal stand-in for the OpenWrt tree
(rules.mk, package.mk, the python .mk files: just the variables these Makefiles read and the
macros they call), once per release branch: what make computes, not what a regex reads."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests import openwrt_sdk as sdk

# The values each branch's python3-version.mk gives (25.12 has no bundled setuptools).
PYTHON3_VERSION_MK = {
    "23.05": "PYTHON3_VERSION:=3.11\nPYTHON3_SETUPTOOLS_VERSION:=65.5.0\n",
    "24.10": "PYTHON3_VERSION:=3.11\nPYTHON3_SETUPTOOLS_VERSION:=79.0.1\n",
    "25.12": "PYTHON3_VERSION:=3.13\n",
}

RULES_MK = """\
INCLUDE_DIR:=$(TOPDIR)/include
BUILD_DIR:=$(TOPDIR)/build_dir
DL_DIR:=$(TOPDIR)/dl
HOST_TAR:=tar
"""

# What include/package.mk and unpack.mk define that the Makefiles use or override.
PACKAGE_MK = """\
TAR_OPTIONS:=-xf -
TAR_CMD=$(HOST_TAR) -C $(1)/.. $(TAR_OPTIONS)
BuildPackage=$(eval PACKAGES+=$(1))
"""

PYTHON3_PACKAGE_MK = """\
PYTHON3_PKG_BUILD_PATH?=
PYTHON3_PKG_WHEEL_NAME?=$(subst -,_,$(if $(PYPI_SOURCE_NAME),$(PYPI_SOURCE_NAME),$(PKG_NAME)))
PYTHON3_PKG_WHEEL_VERSION?=$(PKG_VERSION)
Py3Package=
"""

PYPI_MK = """\
PYPI_SOURCE_NAME?=$(PYPI_NAME)
PKG_SOURCE?=$(PYPI_SOURCE_NAME)-$(PKG_VERSION).tar.gz
PKG_BUILD_DIR:=$(BUILD_DIR)/pypi/$(PYPI_SOURCE_NAME)-$(PKG_VERSION)
"""

DUMP_MK = """\
include $(PACKAGE_MAKEFILE)
$(info PKG_VERSION=$(PKG_VERSION))
$(info PKG_HASH=$(PKG_HASH))
$(info PKG_BUILD_DEPENDS=$(strip $(PKG_BUILD_DEPENDS)))
$(info PKG_BUILD_DIR=$(PKG_BUILD_DIR))
$(info PKG_SOURCE=$(PKG_SOURCE))
$(info WHEEL=$(PYTHON3_PKG_WHEEL_NAME)-$(PYTHON3_PKG_WHEEL_VERSION)-*.whl)
$(info UNPACK_INTO=$(call TAR_CMD,$(PKG_BUILD_DIR)))
$(info PACKAGES=$(strip $(PACKAGES)))
dump: ;
"""


def tree(tmp_path: Path, branch: str, nftables: str | None = None) -> Path:
    top = tmp_path / branch
    python = top / "feeds/packages/lang/python"
    python.mkdir(parents=True)
    (top / "include").mkdir()
    (top / "rules.mk").write_text(RULES_MK)
    (top / "include/package.mk").write_text(PACKAGE_MK)
    (python / "python3-version.mk").write_text(PYTHON3_VERSION_MK[branch])
    (python / "python3-package.mk").write_text(PYTHON3_PACKAGE_MK)
    (python / "pypi.mk").write_text(PYPI_MK)
    (top / "dump.mk").write_text(DUMP_MK)
    if nftables is not None:
        mk = top / "feeds/base/package/network/utils/nftables/Makefile"
        mk.parent.mkdir(parents=True)
        mk.write_text(nftables)
    return top


def evaluate(top: Path, package: str) -> dict[str, str]:
    makefile_dir = sdk.PKG / package
    result = subprocess.run(
        [
            *("make", "--no-print-directory", "-f", str(top / "dump.mk"), "dump"),
            *(f"TOPDIR={top}", f"PACKAGE_MAKEFILE={makefile_dir / 'Makefile'}"),
        ],
        cwd=makefile_dir,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr.lower(), result.stderr
    values = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    return values


@pytest.mark.parametrize("branch", sorted(PYTHON3_VERSION_MK))
@pytest.mark.parametrize(
    "package", ["energyhubd", "python3-nftables-binding", "python3-ubus-energyhub"]
)
def test_host_setuptools_comes_from_a_package_the_branch_has(
    tmp_path: Path, branch: str, package: str
) -> None:
    values = evaluate(tree(tmp_path, branch), package)
    expected = "python3/host" + (" python-setuptools/host" if branch == "25.12" else "")
    assert values["PKG_BUILD_DEPENDS"] == expected


def test_energyhubd_evaluates(tmp_path: Path) -> None:
    values = evaluate(tree(tmp_path, "24.10"), "energyhubd")
    assert values["WHEEL"] == "energyhubd-0.1.0-*.whl"
    assert values["PACKAGES"] == "energyhubd"


def test_binding_follows_the_nftables_of_the_tree(tmp_path: Path) -> None:
    stub = "PKG_NAME:=nftables\nPKG_VERSION:=1.0.8\nPKG_HASH:=" + "ab" * 32 + "\n"
    values = evaluate(tree(tmp_path, "23.05", nftables=stub), "python3-nftables-binding")
    assert values["PKG_VERSION"] == "1.0.8"
    assert values["PKG_HASH"] == "ab" * 32
    assert values["PKG_SOURCE"] == "nftables-1.0.8.tar.xz"
    build_dir = f"{tmp_path}/23.05/build_dir/nftables-py-1.0.8"
    assert values["PKG_BUILD_DIR"] == build_dir
    # extracted into the build directory itself, the tarball's top directory stripped
    assert values["UNPACK_INTO"] == f"tar -C {build_dir} -xf - --strip-components 1"
    assert values["WHEEL"] == "nftables-0.1-*.whl"


def test_binding_outside_a_tree_uses_the_pinned_release(tmp_path: Path) -> None:
    values = evaluate(tree(tmp_path, "24.10"), "python3-nftables-binding")
    assert values["PKG_VERSION"] == "1.1.1"
    assert len(values["PKG_HASH"]) == 64 and values["PKG_HASH"] != "skip"


def test_ubus_package_builds_apart_from_the_stock_one(tmp_path: Path) -> None:
    values = evaluate(tree(tmp_path, "25.12"), "python3-ubus-energyhub")
    build_dir = f"{tmp_path}/25.12/build_dir/pypi/python-ubus-energyhub/ubus-0.1.3"
    assert values["PKG_BUILD_DIR"] == build_dir
    assert values["PKG_SOURCE"] == "ubus-0.1.3.tar.gz"
    # the sdist's top directory ubus-0.1.3/ lands in the parent: exactly the build directory
    assert values["UNPACK_INTO"] == f"tar -C {build_dir}/.. -xf -"
    assert values["WHEEL"] == "ubus-0.1.3-*.whl"
    assert values["PACKAGES"] == "python3-ubus-energyhub"
