"""The python3-ubus-energyhub patches against the real sdist the packages feed builds (PyPI
ubus 0.1.3, cached by scripts/setup.sh): unpacked as include/unpack.mk does, every patch
applied in order as OpenWrt's Build/Patch does, each with no offset and no fuzz."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests import openwrt_sdk as sdk

PACKAGE = sdk.PKG / "python3-ubus-energyhub"
PATCHES = sorted((PACKAGE / "patches").glob("*.patch"))


@pytest.fixture
def sdist_tree(tmp_path: Path) -> Path:
    text = (PACKAGE / "Makefile").read_text()
    sdist = sdk.cached("ubus-0.1.3.tar.gz")
    build_dir = tmp_path / "pypi" / "python-ubus-energyhub" / "ubus-0.1.3"
    sdk.unpack(sdist, build_dir, text)  # pypi.mk: the sdist's top directory is the build dir
    assert (build_dir / "ubus_python.c").is_file()
    return build_dir


def patch(tree: Path, patch_file: Path, *extra: str) -> str:
    result = subprocess.run(
        ["patch", "-p1", "--no-backup-if-mismatch", *extra, "-i", str(patch_file)],
        cwd=tree,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def test_the_patches_are_the_ones_the_package_carries() -> None:
    assert [p.name for p in PATCHES] == [
        "001-no-pytest-runner-at-build.patch",
        "100-lenient-signature.patch",
    ]
    assert not (sdk.PKG / "python-ubus-patches").exists()


@pytest.mark.parametrize("patch_file", PATCHES, ids=lambda p: p.name)
def test_patch_has_a_header(patch_file: Path) -> None:
    header, sep, _ = patch_file.read_text().partition("\n---\n")
    assert sep, "header ends with a '---' line"
    assert re.search(r"^From: .+ <[^@\s]+@[^@\s]+>$", header, re.M), header
    assert re.search(r"^Subject: \[PATCH\] .+$", header, re.M), header
    body = header.split("\n\n", 1)[1] if "\n\n" in header else ""
    assert len(body.split()) > 20, "a header that says why"


def test_patches_apply_in_order_with_no_offset_and_no_fuzz(sdist_tree: Path) -> None:
    for patch_file in PATCHES:
        dry = patch(sdist_tree, patch_file, "--dry-run")
        assert "offset" not in dry and "fuzz" not in dry, f"{patch_file.name}: {dry}"
        applied = patch(sdist_tree, patch_file)
        assert "offset" not in applied and "fuzz" not in applied, f"{patch_file.name}: {applied}"


def test_patched_source_is_lenient_and_flags_itself(sdist_tree: Path) -> None:
    for patch_file in PATCHES:
        patch(sdist_tree, patch_file)
    source = (sdist_tree / "ubus_python.c").read_text()
    policies = re.search(r"bool test_policies\(.*?\n}\n", source, re.S)
    assert policies is not None
    body = policies.group(0)
    assert "return passed_count == n_policies" not in body  # missing keys: Python decides
    assert "pol_idx >= n_policies" not in body  # unknown keys (ubus_rpc_session): ditto
    assert "pol_type != type" in body  # declared types are still checked
    assert 'PyModule_AddIntConstant(module, "LENIENT_SIGNATURE", 1);' in source


def unmet_build_dependencies(tree: Path) -> str:
    """What `python -m build --no-isolation` would stop on, as the SDK runs it."""
    code = "import build; print(sorted(build.ProjectBuilder('.').check_dependencies('wheel')))"
    python = sdk.host_python("25.12")
    result = subprocess.run(
        [str(python), "-c", code], cwd=tree, env=sdk.build_env(), capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]  # the backend's egg_info chatter comes first


def test_stock_sdist_would_stop_on_pytest_runner_and_patched_does_not(sdist_tree: Path) -> None:
    assert "pytest-runner" in unmet_build_dependencies(sdist_tree)
    for patch_file in PATCHES:
        patch(sdist_tree, patch_file)
    assert unmet_build_dependencies(sdist_tree) == "[]"


def test_package_replaces_the_stock_binding_by_name() -> None:
    text = (PACKAGE / "Makefile").read_text()
    block = sdk.define_block(text, "Package/python3-ubus-energyhub")
    assert re.search(r"^\s*PROVIDES:=python3-ubus$", block, re.M)
    assert re.search(r"^\s*CONFLICTS:=python3-ubus$", block, re.M)
    assert "+libubus" in block and "+python3-light" in block
    energyhubd = (sdk.PKG / "energyhubd" / "Makefile").read_text()
    assert "+python3-ubus-energyhub" in energyhubd
    assert not re.search(r"\+python3-ubus\b(?!-)", energyhubd)
    assert sdk.wheel_glob(text) == "ubus-0.1.3-*.whl"
