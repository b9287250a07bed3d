"""OpenWrt's own ``uci`` (from the cached userland build) for tests of ``uci batch`` lines.

Runs on the host against a temporary config dir, with the build's libraries; the build is
made once per session (scripts/openwrt/build.sh, cached), which needs root.
"""

from __future__ import annotations

import functools
import os
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pytest

from energyhubd.openwrt.uci import Package, parse, render


@functools.cache
def _build() -> Path:
    from energyhub_lab import openwrt

    return openwrt.build()


def uci_batch(package: Package, commands: Sequence[str]) -> Package:
    """``package`` after ``uci batch`` of ``commands`` and ``uci commit``, as uci writes it."""
    if os.geteuid() != 0:
        pytest.skip("the real uci comes from the OpenWrt userland build, which needs root")
    names = {c.split(" ", 1)[1].split(".", 1)[0].split("=")[0].split()[0] for c in commands}
    name = names.pop() if len(names) == 1 else "dhcp"
    rootfs = _build() / "rootfs"
    with tempfile.TemporaryDirectory() as tmp:
        confdir = Path(tmp)
        (confdir / ".delta").mkdir()
        (confdir / name).write_text(render(package))
        for args, stdin in (
            (["batch"], "\n".join(commands) + "\n"),
            (["commit", name], None),
        ):
            subprocess.run(
                [str(rootfs / "usr/bin/uci"), "-c", str(confdir), "-t", str(confdir / ".delta"),
                 *args],
                input=stdin, capture_output=True, text=True, check=True,
                env={**os.environ, "LD_LIBRARY_PATH": str(rootfs / "usr/lib")},
            )  # fmt: skip
        return parse((confdir / name).read_text())
