"""The WAN DHCP client under the daemon (``energyhubd run --wan-dhcp``, plain Linux).

Two namespaces: the router (``wan``, and an empty ``br-lan``) and a customer network whose
dnsmasq hands out 198.51.100.100-149 with itself as router and DNS server. The daemon runs in
the router namespace with a real busybox udhcpc; nothing outside the namespaces is touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from energyhub_lab import netns
from energyhubd.control.client import ControlError, call
from tests.conftest import unique

pytestmark = [pytest.mark.netns, pytest.mark.feed]

STATIC = "198.51.100.7/24"


def wait_for(predicate: Callable[[], Any], timeout: float, message: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ControlError, OSError, KeyError, ValueError):
            value = predicate()
            if value:
                return value
        time.sleep(0.2)
    pytest.fail(message)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[dict[str, Any]]:
    router, cust = unique("ehw"), unique("ehc")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for ns in (router, cust):
            netns.add_namespace(ns)
        netns.veth(router, "wan", cust, "eth0")
        netns.bridge(router, "br-lan", [])
        netns.ip(cust, "addr", "add", "198.51.100.1/24", "dev", "eth0")
        dnsmasq = [
            "dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts", "--port=0",
            "--interface=eth0", "--bind-interfaces", "--user=root", "--group=root",
            "--dhcp-range=198.51.100.100,198.51.100.149,255.255.255.0,1h",
            "--dhcp-option=option:router,198.51.100.1",
            "--dhcp-option=option:dns-server,198.51.100.53",
            f"--dhcp-leasefile={tmp_path / 'cust.leases'}", "--log-facility=-",
            f"--pid-file={tmp_path / 'cust.pid'}",
        ]  # fmt: skip
        procs.append(netns.spawn_logged(cust, dnsmasq, tmp_path / "cust.log"))
        yield {"router": router, "dir": tmp_path, "procs": procs}
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
        for ns in (router, cust):
            netns.delete_namespace(ns)


def write_config(site: dict[str, Any], wan: dict[str, Any]) -> Path:
    path: Path = site["dir"] / "config.json"
    doc = {
        "platform": "linux",
        "device_id": "eh-wan-test",
        "state_dir": str(site["dir"] / "state"),
        "control": {"socket": str(site["dir"] / "control.sock")},
        "dns": {"fallback": []},
        "portal": {"enabled": False},
        "wan": {"device": "wan", **wan},
    }
    path.write_text(json.dumps(doc))
    return path


def addresses(site: dict[str, Any]) -> str:
    return netns.ip(site["router"], "-4", "-o", "addr", "show", "dev", "wan")


def test_daemon_runs_the_wan_dhcp_client_and_drops_the_static_address(
    site: dict[str, Any],
) -> None:
    config = write_config(
        site, {"proto": "static", "address": STATIC, "gateway": "198.51.100.1", "dns": []}
    )
    resolv = site["dir"] / "wan-resolv.conf"
    sock = str(site["dir"] / "control.sock")
    cmd = [sys.executable, "-m", "energyhubd.cli", "run", "--config", str(config)]
    cmd += ["--pid-file", str(site["dir"] / "d.pid"), "--resolv-file", str(resolv), "--wan-dhcp"]
    daemon = netns.spawn_logged(site["router"], cmd, site["dir"] / "energyhubd.log")
    site["procs"].insert(0, daemon)
    log = site["dir"] / "energyhubd.log"
    wait_for(
        lambda: call(sock, "status", timeout=2)["policy"]["state"] == "applied",
        20,
        f"daemon did not start: {log.read_text()[-2000:]}",
    )
    assert STATIC.split("/")[0] in addresses(site)
    assert "client" not in call(sock, "status")["wan"]  # static: no DHCP client
    # Switch to DHCP: the static address goes, a lease from the customer network comes.
    write_config(site, {"proto": "dhcp"})
    assert call(sock, "reload")["applied"]
    wait_for(
        lambda: "198.51.100.1" in addresses(site) and STATIC not in addresses(site),
        20,
        f"no DHCP address on the WAN: {addresses(site)}; {log.read_text()[-2000:]}",
    )
    assert STATIC.split("/")[0] not in addresses(site)
    # The hook sets the address, then the route; the status follows the netlink events.
    wan = wait_for(
        lambda: (w := call(sock, "status")["wan"])["gateway"] == "198.51.100.1" and w,
        10,
        "the default route via the customer router never showed in status",
    )
    assert wan["client"]["running"]
    assert any(a.startswith("198.51.100.1") for a in wan["addresses"])
    wait_for(lambda: "nameserver 198.51.100.53" in resolv.read_text(), 5, "no resolv file written")
    # The client dies: the supervisor starts it again (after its backoff) and it renews.
    pid = wan["client"]["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_for(
        lambda: (
            call(sock, "status")["wan"]["client"]["restarts"] >= 1
            and call(sock, "status")["wan"]["client"]["pid"] not in (None, pid)
        ),
        15,
        "the WAN DHCP client was not restarted",
    )
    # Back to static: the client stops, the static address returns.
    write_config(site, {"proto": "static", "address": STATIC, "gateway": "198.51.100.1", "dns": []})
    assert call(sock, "reload")["applied"]
    wait_for(lambda: STATIC in addresses(site), 10, f"static address not back: {addresses(site)}")
    assert "client" not in call(sock, "status")["wan"]
    assert netns.process_alive(call(sock, "status")["daemon"]["pid"]) is not False
