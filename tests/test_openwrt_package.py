"""The OpenWrt package definitions: every installed file exists, every shipped file is
installed, and the installed data files are what OpenWrt expects."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "openwrt-package"
MAKEFILES = sorted(PKG.glob("*/Makefile"))
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
        "PKG_LICENSE:=",
        "python3-package.mk",
        "$(eval $(call Py3Package,energyhubd))",
        "$(eval $(call BuildPackage,energyhubd))",
    ):
        assert needle in text, needle
    depends = re.search(r"DEPENDS:=(.*?)\n\s*PKGARCH", text, re.S)
    assert depends is not None
    for dep in (
        "+python3-light",
        "+python3-pyroute2",
        "+python3-paho-mqtt",
        "+python3-ubus",
        "+nftables-json",
        "+python3-nftables-binding",
    ):
        assert dep in depends.group(1), dep
    conffiles = re.search(r"define Package/energyhubd/conffiles\n(.*?)endef", text, re.S)
    assert conffiles is not None and "/etc/config/energyhub\n" in conffiles.group(1)
    version = re.search(r'^version = "(.*)"', (ROOT / "pyproject.toml").read_text(), re.M)
    assert version is not None and f"PKG_VERSION:={version.group(1)}\n" in text


def test_nftables_binding_builds_the_py_directory() -> None:
    text = (PKG / "python3-nftables-binding" / "Makefile").read_text()
    assert "PYTHON3_PKG_SETUP_DIR:=py" in text
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


@pytest.mark.skipif(shutil.which("patch") is None, reason="patch(1) not installed")
def test_python_ubus_patch_is_well_formed(tmp_path: Path) -> None:
    """Apply the patch to a file built from its own context lines (syntax check only)."""
    patch = PKG / "python-ubus-patches" / "100-lenient-signature.patch"
    lines: list[str] = []
    inside = False
    for line in patch.read_text().splitlines():
        if line.startswith("@@"):
            inside = True
            lines.append("/* gap */")
        elif inside and line[:1] in (" ", "-"):
            lines.append(line[1:])
    (tmp_path / "ubus_python.c").write_text("\n".join(lines) + "\n")
    result = subprocess.run(
        ["patch", "-p1", "--dry-run", "-i", str(patch)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "LENIENT_SIGNATURE" in patch.read_text()
