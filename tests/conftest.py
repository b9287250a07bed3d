"""Shared fixtures: throwaway network namespaces and a whole lab site.

Everything that touches the kernel happens inside namespaces created here and deleted in the
fixture's teardown, also when a test fails.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from energyhub_lab import netns
from energyhub_lab.internet import MiniLab
from energyhub_lab.site import Site
from energyhubd.loop import EventLoop
from tests import loopthread
from tests.realdaemon import RealDaemons

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root to create network namespaces")
    for item in items:
        if "netns" in item.keywords:
            item.add_marker(skip)


def unique(prefix: str = "eht") -> str:
    return f"{prefix}{secrets.token_hex(3)}"


@pytest.fixture
def ns() -> Iterator[str]:
    """One empty network namespace, removed afterwards."""
    name = unique()
    netns.add_namespace(name)
    try:
        yield name
    finally:
        netns.delete_namespace(name)


@pytest.fixture(scope="session")
def lab() -> Iterator[Site]:
    """A whole EnergyHub site (router, customer network, display, three units)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces")
    site = Site(prefix=unique("ehl"))
    try:
        site.up()
        yield site
    finally:
        site.down()


@contextlib.contextmanager
def minilab_up(
    tmp_path_factory: pytest.TempPathFactory, stem: str, **options: Any
) -> Iterator[MiniLab]:
    """A ``MiniLab`` under a random prefix starting with ``stem``, taken down afterwards (also
    when it did not come up completely). ``options``: ``MiniLab``'s own."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces")
    prefix = unique(stem)
    mini = MiniLab(prefix, tmp_path_factory.mktemp(prefix), **options)
    try:
        mini.up()
        yield mini
    finally:
        mini.down()


@pytest.fixture(scope="module")
def minilab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MiniLab]:
    """The small outbound topology with the lab internet (one per test module)."""
    with minilab_up(tmp_path_factory, "ehT") as mini:
        yield mini


@pytest.fixture
def outbound_lab(minilab: MiniLab) -> Iterator[MiniLab]:
    """The module's ``minilab`` with every block/intercept switch of its internet clear, before
    the test and after it (also when it failed)."""
    minilab.services.clear()
    try:
        yield minilab
    finally:
        minilab.services.clear()


@pytest.fixture
def real_daemons(minilab: MiniLab, tmp_path: Path) -> Iterator[RealDaemons]:
    """Starts real daemons in the module's ``minilab`` router (``tests/realdaemon.py``); every
    one is stopped and the router's table removed afterwards, also when the test fails."""
    daemons = RealDaemons(minilab, tmp_path)
    try:
        yield daemons
    finally:
        daemons.close()


@pytest.fixture
def loop() -> Iterator[EventLoop]:
    """The daemon's event loop on a thread of its own (``tests/loopthread.py``)."""
    with loopthread.running(EventLoop()) as running:
        yield running


def run_in(ns_name: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run an energyhubd command inside a namespace with this interpreter."""
    cmd = ["ip", "netns", "exec", ns_name, sys.executable, "-m", "energyhubd.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def openwrt_build() -> Path:
    """The OpenWrt userland built from ENERGYHUB_OPENWRT_SRC (cached; ~40 s the first time)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to build and boot the OpenWrt userland")
    from energyhub_lab import openwrt

    return openwrt.build()
