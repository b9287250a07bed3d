"""The OpenWrt package definitions: every installed file exists, every shipped file is
installed, and the installed data files are what OpenWrt expects."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "openwrt-package"
MAKEFILES = sorted(PKG.glob("*/Makefile"))
# The Python packages (luci-app-energyhub is LuCI's JavaScript, built by luci.mk).
PYTHON_MAKEFILES = [m for m in MAKEFILES if "luci.mk" not in m.read_text()]
INSTALL_RE = re.compile(r"^\t\$\(INSTALL_(BIN|DATA|CONF)\)\s+(\S+)\s+(\S+)\s*$")


def install_lines(makefile: Path) -> list[tuple[str, Path | None, str]]:
    """(kind, source in the repository or None for build output, destination)."""
    rows: list[tuple[str, Path | None, str]] = []
    for line in makefile.read_text().splitlines():
        match = INSTALL_RE.match(line)
        if not match:
            assert "$(INSTALL_BIN)" not in line and "$(INSTALL_DATA)" not in line, line
            continue
        kind, src, dest = match.groups()
        if src.startswith("$(PKG_INSTALL_DIR)") or src.startswith("$(PKG_BUILD_DIR)"):
            rows.append((kind, None, dest))
            continue
        src = src.replace("$(ENERGYHUBD_SRC)", str(ROOT))
        path = Path(src) if src.startswith("/") else makefile.parent / src
        rows.append((kind, path, dest))
    return rows


def test_the_packages_exist() -> None:
    assert [m.parent.name for m in MAKEFILES] == [
        "energyhubd",
        "luci-app-energyhub",
        "python3-nftables-binding",
        "python3-ubus-energyhub",
    ]


@pytest.mark.parametrize("makefile", MAKEFILES, ids=lambda p: p.parent.name)
def test_every_installed_file_exists(makefile: Path) -> None:
    for _, src, dest in install_lines(makefile):
        if src is not None:
            assert src.is_file(), f"{makefile}: installs missing {src}"
        assert dest.startswith("$(1)/"), dest


def test_every_shipped_file_is_installed() -> None:
    makefile = PKG / "energyhubd" / "Makefile"
    installed = {src.resolve() for _, src, _ in install_lines(makefile) if src is not None}
    shipped = {p.resolve() for p in (PKG / "energyhubd" / "files").iterdir()}
    assert shipped <= installed, shipped - installed
    dests = {dest for _, _, dest in install_lines(makefile)}
    assert {
        "$(1)/usr/bin/energyhubd",
        "$(1)/etc/init.d/energyhubd",
        "$(1)/etc/config/energyhub",
        "$(1)/usr/share/rpcd/acl.d/energyhub.json",
        "$(1)/etc/hotplug.d/dhcp/90-energyhubd",
        "$(1)/etc/capabilities/energyhubd.json",
    } <= dests
    kinds = {dest: kind for kind, _, dest in install_lines(makefile)}
    assert kinds["$(1)/etc/init.d/energyhubd"] == "BIN"
    assert kinds["$(1)/etc/config/energyhub"] == "CONF"


def test_energyhubd_makefile_declares_package_metadata() -> None:
    text = (PKG / "energyhubd" / "Makefile").read_text()
    for needle in (
        "PKG_NAME:=energyhubd",
        "PKG_VERSION:=",
        "PKG_RELEASE:=",
        "PKG_LICENSE_FILES:=LICENSE",
        "python3-package.mk",
        "$(eval $(call Py3Package,energyhubd))",
        "$(eval $(call BuildPackage,energyhubd))",
    ):
        assert needle in text, needle
    depends = re.search(r"^  DEPENDS:=(.*?)\n\s*#", text, re.S | re.M)
    assert depends is not None
    for dep in (
        "+python3-light",
        "+python3-logging",
        "+python3-openssl",
        "+python3-ctypes",
        "+python3-pyroute2",
        "+python3-paho-mqtt",
        "+python3-ubus-energyhub",
        "+nftables-json",
        "+python3-nftables-binding",
        "PACKAGE_dnsmasq",
    ):
        assert dep in depends.group(1), dep
    assert "EXTRA_DEPENDS:=dnsmasq" in text
    conffiles = re.search(r"define Package/energyhubd/conffiles\n(.*?)endef", text, re.S)
    assert conffiles is not None and "/etc/config/energyhub\n" in conffiles.group(1)
    version = re.search(r'^version = "(.*)"', (ROOT / "pyproject.toml").read_text(), re.M)
    assert version is not None and f"PKG_VERSION:={version.group(1)}\n" in text


def test_edits_in_the_repository_rebuild_the_package() -> None:
    text = (PKG / "energyhubd" / "Makefile").read_text()
    block = re.search(r"PKG_FILE_DEPENDS:=(.*?)\n\n", text, re.S)
    assert block is not None
    deps = {d.replace("$(ENERGYHUBD_SRC)/", "") for d in block.group(1).split() if d != "\\"}
    prepare = re.search(r"define Build/Prepare\n(.*?)endef", text, re.S)
    assert prepare is not None
    copied = set(re.findall(r"\$\(ENERGYHUBD_SRC\)/(\S+)", prepare.group(1)))
    installed = {
        str(src.relative_to(ROOT)).split("/")[0]
        for _, src, _ in install_lines(PKG / "energyhubd" / "Makefile")
        if src is not None and not src.is_relative_to(PKG)
    }
    assert copied | installed <= deps, (copied | installed) - deps


@pytest.mark.parametrize("makefile", MAKEFILES, ids=lambda p: p.parent.name)
def test_maintainer_and_spdx_licence(makefile: Path) -> None:
    text = makefile.read_text()
    assert re.search(r"^PKG_MAINTAINER:=[^<\n]+ <[^@\s]+@[^@\s]+>$", text, re.M)
    licence = re.search(r"^PKG_LICENSE:=(\S+)$", text, re.M)
    assert licence is not None
    expected = {
        "energyhubd": "LicenseRef-Proprietary",
        "luci-app-energyhub": "LicenseRef-Proprietary",
        "python3-nftables-binding": "GPL-2.0-only",
        "python3-ubus-energyhub": "LGPL-2.1-or-later",
    }[makefile.parent.name]
    assert licence.group(1) == expected
    assert f"SPDX-License-Identifier: {expected}" in text
    assert (ROOT / "LICENSE").is_file()


@pytest.mark.parametrize("makefile", PYTHON_MAKEFILES, ids=lambda p: p.parent.name)
def test_host_setuptools_dependency_exists_on_every_branch(makefile: Path) -> None:
    """python-setuptools/host exists only from 25.12 on; 23.05/24.10 bring setuptools with
    python3/host (python3-version.mk names PYTHON3_SETUPTOOLS_VERSION there)."""
    text = makefile.read_text()
    assert (
        "PKG_BUILD_DEPENDS:=python3/host $(if $(PYTHON3_SETUPTOOLS_VERSION),,"
        "python-setuptools/host)" in text
    )
    assert "python3-version.mk" in text


def run_postinst(tmp_path: Path, **env: str) -> list[str]:
    """The package's postinst (OpenWrt stores it as postinst-pkg and default_postinst runs
    it) with /etc/init.d pointed at stubs that log their calls."""
    text = (PKG / "energyhubd" / "Makefile").read_text()
    body = re.search(r"define Package/energyhubd/postinst\n(.*?)endef", text, re.S)
    assert body is not None
    script = body.group(1).replace("$$", "$")
    init = tmp_path / "init.d"
    init.mkdir(exist_ok=True)
    log = tmp_path / "calls"
    log.write_text("")
    for name in ("dnsmasq", "energyhubd"):
        stub = init / name
        stub.write_text(f'#!/bin/sh\necho "{name} $*" >> {log}\n')
        stub.chmod(0o755)
    (tmp_path / "postinst").write_text(script.replace("/etc/init.d/", f"{init}/"))
    subprocess.run(
        ["sh", str(tmp_path / "postinst")], env={"PATH": "/usr/bin:/bin", **env}, check=True
    )
    return log.read_text().splitlines()


def test_postinst_restarts_dnsmasq_on_first_install_only(tmp_path: Path) -> None:
    assert run_postinst(tmp_path) == ["dnsmasq restart"]
    assert run_postinst(tmp_path, PKG_UPGRADE="1") == []
    assert run_postinst(tmp_path, IPKG_INSTROOT="/build/root") == []


def test_service_is_left_to_openwrts_defaults() -> None:
    """default_postinst/default_prerm (generated around the package's scripts) enable the
    service on a first install only and start/stop it; the package adds no enable, start,
    restart or disable of its own, so an operator's 'disable' survives an upgrade."""
    text = (PKG / "energyhubd" / "Makefile").read_text()
    body = re.search(r"define Package/energyhubd/postinst\n(.*?)endef", text, re.S)
    assert body is not None
    assert "energyhubd" not in body.group(1)
    assert "default_postinst" not in body.group(1)  # the generated wrapper calls it
    assert "define Package/energyhubd/prerm" not in text  # default_prerm does it all


def test_nftables_binding_builds_the_py_directory() -> None:
    text = (PKG / "python3-nftables-binding" / "Makefile").read_text()
    assert "PYTHON3_PKG_BUILD_PATH:=py" in text
    assert "PYTHON3_PKG_WHEEL_NAME:=nftables" in text
    assert "PYTHON3_PKG_WHEEL_VERSION:=0.1" in text
    assert "PKG_SOURCE:=nftables-$(PKG_VERSION)" in text
    assert "+nftables-json" in text and "+python3-ctypes" in text


def test_rpcd_acl_matches_the_method_table() -> None:
    acl = json.loads((PKG / "energyhubd" / "files" / "energyhub.acl.json").read_text())
    read = acl["energyhub"]["read"]["ubus"]["energyhub"]
    write = acl["energyhub"]["write"]["ubus"]["energyhub"]
    assert read == ["status", "devices", "config", "diagnose"]
    assert write == ["reload", "tunnel"]
    status = pytest.importorskip("energyhubd.control.status")
    table = status.build_method_table(None)  # the daemon is only used inside the handlers
    # LuCI can call exactly the daemon's methods, and a write method needs the write role
    assert set(read) == {name for name, m in table.methods.items() if not m.write}
    assert set(write) == {name for name, m in table.methods.items() if m.write}


def test_capabilities_file_is_procd_format() -> None:
    caps = json.loads((PKG / "energyhubd" / "files" / "energyhubd.capabilities.json").read_text())
    assert set(caps) <= {"bounding", "effective", "permitted", "inheritable", "ambient"}
    assert set(caps["bounding"]) == {"CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_NET_BIND_SERVICE"}
    for values in caps.values():
        assert set(values) <= set(caps["bounding"])
