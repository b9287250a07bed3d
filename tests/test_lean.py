"""Importing only what the daemon uses: each check runs in a fresh interpreter.

The daemon's own imports must leave pyroute2's NDB/IPDB (and sqlite3) and paho's proxy
helpers (urllib.request, http.client, email) unloaded, yet every name stays reachable for code
that does ask for it.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = [
    "sqlite3",
    "pyroute2.ndb",
    "pyroute2.ipdb",
    "pyroute2.nslink",
    "http.client",
    "email",
    "unittest.case",  # unittest's __init__ (the test runner)
    "difflib",
]


def loaded_after(code: str) -> dict[str, bool]:
    probe = (
        f"{code}\nimport json, sys\nprint(json.dumps({{m: m in sys.modules for m in {HEAVY!r}}}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    result: dict[str, bool] = json.loads(out.splitlines()[-1])
    return result


@pytest.mark.feed
def test_daemon_imports_leave_heavy_modules_out() -> None:
    code = (
        "from energyhubd import lean\nlean.install()\n"
        "import energyhubd.service, energyhubd.portal.link, energyhubd.kernel.neighbours"
    )
    assert loaded_after(code) == dict.fromkeys(HEAVY, False)


@pytest.mark.feed
def test_public_pyroute2_names_still_work_after_the_bare_import() -> None:
    code = (
        "import energyhubd.kernel.rtnl\n"
        "from pyroute2 import IPRoute, NDB\n"
        "import pyroute2\n"
        "assert pyroute2.IPRoute is IPRoute and pyroute2.__version__\n"
    )
    assert loaded_after(code)["pyroute2.ndb"] is True


@pytest.mark.feed
def test_deferred_module_loads_on_first_use() -> None:
    code = (
        "from energyhubd import lean\nlean.install()\n"
        "import urllib.request\n"
        "assert 'http.client' not in sys.modules\n"
        "assert callable(urllib.request.getproxies)\n"
        "from urllib.request import Request\n"
        "import sys\n"
    ).replace("assert 'http.client'", "import sys\nassert 'http.client'")
    assert loaded_after(code)["http.client"] is True


@pytest.mark.feed
def test_an_object_built_at_import_is_built_for_real_on_first_use() -> None:
    """pyroute2 0.9 builds a Mock in a class body; the stand-in defers it, and the object
    works as the real one the moment it is used."""
    code = (
        "from energyhubd import lean\nlean.install()\n"
        "import sys\nfrom unittest import mock\n"
        "sink = mock.Mock()\n"
        "assert 'difflib' not in sys.modules and 'unittest.case' not in sys.modules\n"
        "sink.put_nowait(0, b'')\n"
        "assert sink.put_nowait.called and sink.put_nowait.call_args.args == (0, b'')\n"
        "import unittest, unittest.mock\n"
        "assert unittest.mock.MagicMock and unittest.TestCase and unittest.mock.Mock is mock.Mock\n"
    )
    loaded = loaded_after(code)
    assert loaded["difflib"] and loaded["unittest.case"]  # once really asked for
