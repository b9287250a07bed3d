"""``energyhubd lab check --openwrt``: its checks pass on a freshly booted OpenWrt userland."""

from __future__ import annotations

from pathlib import Path

import pytest

from energyhub_lab.openwrt import OpenWrtRouter
from energyhub_lab.openwrt_checks import CHECKS, run_openwrt_checks
from tests.conftest import unique

pytestmark = pytest.mark.netns


def test_every_openwrt_check_passes(openwrt_build: Path, tmp_path: Path) -> None:
    router = OpenWrtRouter(prefix=unique("eoc"), run_dir=tmp_path / "run", build_dir=openwrt_build)
    router.up()
    try:
        results = run_openwrt_checks(router)
    finally:
        router.down()
    assert [r.name for r in results] == [name for name, _ in CHECKS]
    failed = [f"{r.name}: {r.detail}" for r in results if not r.passed]
    assert failed == []
    # nothing of the router is left behind
    from energyhub_lab import netns

    assert not [n for n in netns.list_namespaces() if n.startswith(router.prefix)]
