"""Byte-compile what the daemon imports, as the OpenWrt package ships it, before timing it.

The router runs energyhubd from ``.pyc`` files (``openwrt-package/energyhubd`` installs
them). A development checkout may have none, or stale ones: with ``PYTHONDONTWRITEBYTECODE``
set (as on the build hosts) every start compiles each module from source again, which cost
30-50 ms of start-up and a few MiB of RSS that the router never pays, while the floor's
libraries come with ``.pyc`` files from their installation. The benchmarks call ``compile()``
first so both sides load bytecode.
"""

from __future__ import annotations

import compileall
import importlib.util
from pathlib import Path

# The daemon's package and the libnftables binding (copied into the venvs by the set-up
# script, so pip never compiled it); the other libraries were compiled by pip.
PACKAGES = ("energyhubd", "nftables")


def compile_packages(packages: tuple[str, ...] = PACKAGES) -> list[str]:
    """Write up-to-date ``__pycache__`` files for ``packages``; return the directories done."""
    done: list[str] = []
    for name in packages:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            continue
        for location in spec.submodule_search_locations:
            if compileall.compile_dir(location, quiet=1, workers=1):
                done.append(str(Path(location)))
    return done
