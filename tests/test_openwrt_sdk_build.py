"""The OpenWrt packages built as the SDK builds them (tests/openwrt_sdk.py says which step
stands for which OpenWrt file), once per release branch's host setuptools, and the resulting
package contents checked against what the Makefile's install section names."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests import openwrt_sdk as sdk

ENERGYHUBD = sdk.PKG / "energyhubd"
BINDING = sdk.PKG / "python3-nftables-binding"
BRANCHES = sorted(sdk.BRANCH_SETUPTOOLS)


def prepare_energyhubd(build_dir: Path, text: str) -> None:
    """Build/Prepare of the energyhubd Makefile: copy what it names, prune what it prunes."""
    block = sdk.define_block(text, "Build/Prepare")
    sources = re.findall(r"\$\(ENERGYHUBD_SRC\)/(\S+)", block)
    assert sources, block
    build_dir.mkdir(parents=True)
    for name in sources:
        subprocess.run(["cp", "-a", str(sdk.ROOT / name), str(build_dir)], check=True)
    assert "-name __pycache__ -o -name '*.egg-info'" in block
    for junk in [*build_dir.rglob("__pycache__"), *build_dir.rglob("*.egg-info")]:
        subprocess.run(["rm", "-rf", str(junk)], check=True)


@pytest.fixture(scope="module", params=BRANCHES)
def energyhubd_ipkg(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    branch: str = request.param
    python = sdk.host_python(branch)
    text = ENERGYHUBD.joinpath("Makefile").read_text()
    work = tmp_path_factory.mktemp(f"energyhubd-{branch}")
    build_dir = work / f"energyhubd-{sdk.makefile_var(text, 'PKG_VERSION')}"
    prepare_energyhubd(build_dir, text)
    outdir = sdk.build_wheel(python, build_dir)
    sdk.install_wheel(python, outdir, sdk.wheel_glob(text), build_dir / "ipkg-install")
    ipkg = work / "ipkg-all" / "energyhubd"
    sdk.package(text, "energyhubd", ENERGYHUBD, build_dir / "ipkg-install", ipkg)
    return branch, ipkg, outdir


def test_energyhubd_package_holds_exactly_what_the_makefile_names(energyhubd_ipkg) -> None:
    _branch, ipkg, _ = energyhubd_ipkg
    text = ENERGYHUBD.joinpath("Makefile").read_text()
    block = sdk.define_block(text, "Py3Package/energyhubd/install")
    named = {
        m.group(3).removeprefix("$(1)/") for m in map(sdk.INSTALL_RE.match, block.splitlines()) if m
    }
    modules = {
        f"{sdk.SITE}/{p.relative_to(sdk.ROOT / 'daemon').with_suffix('.pyc')}"
        for p in (sdk.ROOT / "daemon" / "energyhubd").rglob("*.py")
    }
    got = sdk.files(ipkg)
    dist_info = {f for f in got if ".dist-info/" in f}
    assert got == named | modules | {f"{sdk.SITE}/energyhubd/py.typed"} | dist_info
    assert not [f for f in got if f.endswith(".py") or "energyhub_lab" in f or "/lab/" in f]
    names = {f.rsplit("/", 1)[-1] for f in dist_info}
    assert {"METADATA", "RECORD", "WHEEL", "entry_points.txt", "LICENSE"} <= names
    assert {"usr/bin/energyhubd", "usr/bin/energyhubctl", "etc/init.d/energyhubd"} <= got
    for exe in ("usr/bin/energyhubd", "usr/bin/energyhubctl", "etc/init.d/energyhubd"):
        assert os.access(ipkg / exe, os.X_OK), exe
    for script in ("energyhubd", "energyhubctl"):
        first = (ipkg / "usr/bin" / script).read_text().splitlines()[0]
        assert first == "#!/usr/bin/python3", first


def test_energyhubd_conffiles_are_the_sites_files(energyhubd_ipkg) -> None:
    _branch, ipkg, _ = energyhubd_ipkg
    text = ENERGYHUBD.joinpath("Makefile").read_text()
    conffiles = sdk.define_block(text, "Package/energyhubd/conffiles").split()
    shipped_etc = {f"/{f}" for f in sdk.files(ipkg) if f.startswith("etc/")}
    # every file under /etc an operator may change is kept on upgrade; init script and
    # hotplug handler are code and are replaced
    code = {"/etc/init.d/energyhubd", "/etc/hotplug.d/dhcp/90-energyhubd"}
    assert {c for c in conffiles if not c.endswith("/")} == shipped_etc - code
    assert "/etc/energyhubd/" in conffiles  # state: last good config, tunnel key, portal


def test_energyhubd_runs_from_the_compiled_package(energyhubd_ipkg) -> None:
    _branch, ipkg, _ = energyhubd_ipkg
    code = (
        "import sys, energyhubd, energyhubd.cli;"
        "assert energyhubd.__file__.endswith('__init__.pyc'), energyhubd.__file__;"
        "energyhubd.cli.build_parser();"
        "assert not [m for m in sys.modules if m.startswith('energyhub_lab')]"
    )
    env = {"PYTHONPATH": f"{ipkg / sdk.SITE}:{sdk.purelib()}", "PATH": os.environ["PATH"]}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, cwd=ipkg)


def test_energyhubd_wheel_metadata_carries_the_licence(energyhubd_ipkg) -> None:
    _branch, _ipkg, outdir = energyhubd_ipkg
    (wheel,) = outdir.glob("energyhubd-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        meta = zf.read("energyhubd-0.1.0.dist-info/METADATA").decode()
    assert re.search(r"^License(-Expression)?: LicenseRef-Proprietary$", meta, re.M), meta


@pytest.fixture(scope="module", params=BRANCHES)
def binding_ipkg(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    branch: str = request.param
    python = sdk.host_python(branch)
    text = BINDING.joinpath("Makefile").read_text()
    (tarball,) = (sdk.CACHE / "dl").glob("nftables-*.tar.xz")
    version = tarball.name.removeprefix("nftables-").removesuffix(".tar.xz")
    work = tmp_path_factory.mktemp(f"nftables-{branch}")
    build_dir = work / f"nftables-py-{version}"  # the Makefile's PKG_BUILD_DIR
    assert sdk.makefile_var(text, "PKG_BUILD_DIR") == "$(BUILD_DIR)/nftables-py-$(PKG_VERSION)"
    sdk.unpack(tarball, build_dir, text)
    build_path = sdk.makefile_var(text, "PYTHON3_PKG_BUILD_PATH") or ""
    assert (build_dir / build_path / "pyproject.toml").exists() or (
        build_dir / build_path / "setup.py"
    ).exists(), sorted(p.name for p in build_dir.iterdir())
    outdir = sdk.build_wheel(python, build_dir, build_path)
    sdk.install_wheel(python, outdir, sdk.wheel_glob(text), build_dir / "ipkg-install")
    ipkg = work / "ipkg-all" / "python3-nftables-binding"
    sdk.package(text, "python3-nftables-binding", BINDING, build_dir / "ipkg-install", ipkg)
    return branch, ipkg, tarball


def test_binding_unpacks_into_its_build_directory(tmp_path: Path) -> None:
    text = BINDING.joinpath("Makefile").read_text()
    (tarball,) = (sdk.CACHE / "dl").glob("nftables-*.tar.xz")
    build_dir = tmp_path / "build" / "nftables-py-x"
    sdk.unpack(tarball, build_dir, text)
    assert (build_dir / "py").is_dir()
    assert sorted(p.name for p in build_dir.parent.iterdir()) == ["nftables-py-x"]


def test_binding_package_holds_the_module_and_nothing_else(binding_ipkg) -> None:
    _branch, ipkg, _ = binding_ipkg
    got = sdk.files(ipkg)
    module = {f for f in got if f.startswith(f"{sdk.SITE}/nftables/")}
    assert {f.rsplit("/", 1)[-1] for f in module} == {"__init__.pyc", "nftables.pyc", "schema.json"}
    assert {f for f in got if not f.startswith(f"{sdk.SITE}/nftables-0.1.dist-info/")} == module


@pytest.mark.netns
def test_binding_drives_the_system_libnftables(binding_ipkg) -> None:
    """The compiled module, and nothing else from Python's paths, against libnftables.so.1,
    in a network namespace of its own (unshare), so the host's ruleset is not read."""
    _branch, ipkg, _ = binding_ipkg
    code = (
        "import json, nftables;"
        "assert nftables.__file__.endswith('.pyc'), nftables.__file__;"
        "n = nftables.Nftables(); n.set_json_output(True);"
        "rc, out, err = n.json_cmd({'nftables': [{'list': {'ruleset': None}}]});"
        "assert rc == 0, err;"
        "assert [i for i in out['nftables'] if 'metainfo' in i], out;"
        "print('ok')"
    )
    env = {"PYTHONPATH": str(ipkg / sdk.SITE), "PATH": os.environ["PATH"]}
    result = subprocess.run(
        ["unshare", "--net", sys.executable, "-s", "-c", code],
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.stdout.strip() == "ok", result.stdout + result.stderr


def test_binding_source_is_the_version_of_the_system_library() -> None:
    """The binding must match the library it loads: the cached source is the system's."""
    (tarball,) = (sdk.CACHE / "dl").glob("nftables-*.tar.xz")
    system = subprocess.run(
        ["dpkg-query", "-W", "-f=${source:Upstream-Version}", "libnftables1"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert tarball.name == f"nftables-{system}.tar.xz"


def test_binding_makefile_follows_the_trees_nftables() -> None:
    text = BINDING.joinpath("Makefile").read_text()
    assert "package/network/utils/nftables/Makefile" in text
    assert "feeds/base/package/network/utils/nftables/Makefile" in text
    pinned = re.search(r"PKG_HASH:=\$\(or \$\(call nftables_var,PKG_HASH\),([0-9a-f]{64})\)", text)
    assert pinned, "a real sha256 as the fallback PKG_HASH"
    assert "skip" not in (sdk.makefile_var(text, "PKG_HASH") or "")


def test_ubus_package_hash_is_the_cached_sdists() -> None:
    text = (sdk.PKG / "python3-ubus-energyhub" / "Makefile").read_text()
    sdist = sdk.cached("ubus-0.1.3.tar.gz")
    assert sdk.makefile_var(text, "PKG_VERSION") == "0.1.3"
    assert sdk.makefile_var(text, "PKG_HASH") == hashlib.sha256(sdist.read_bytes()).hexdigest()
