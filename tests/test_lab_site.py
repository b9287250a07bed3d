"""The whole site in namespaces: the lab's checks as tests, plus the running daemon's
behaviour as an operator sees it (control socket, energyhubctl, reload, signals)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from energyhub_lab import checks, netns
from energyhub_lab.site import Site
from energyhubd.control.client import ControlError, call

pytestmark = [pytest.mark.netns, pytest.mark.feed]


@pytest.mark.parametrize("check", [c for _, c in checks.CHECKS], ids=[n for n, _ in checks.CHECKS])
def test_lab_check(lab: Site, check: checks.Check) -> None:
    passed, detail = check(lab)
    assert passed, detail


def ctl(site: Site, *args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "energyhubctl"
    return subprocess.run(
        [str(exe), "--socket", site.socket, *args], capture_output=True, text=True, timeout=30
    )


def test_energyhubctl_status_is_readable_and_json_is_complete(lab: Site) -> None:
    text = ctl(lab, "status")
    assert text.returncode == 0, text.stderr
    assert "policy    applied" in text.stdout
    assert (
        "forward   modbus tcp/502 -> unit1 192.168.254.201:502  open  from 198.51.100.20"
        in text.stdout
    )
    data = json.loads(ctl(lab, "status", "--json").stdout)
    assert data["lan"]["dhcp"]["pool"] == "192.168.254.200-192.168.254.244"
    assert data["lan"]["dhcp"]["server"]["running"] is True
    assert data["wan"]["link"] == "up"


def test_control_methods_and_argument_errors(lab: Site) -> None:
    running = call(lab.socket, "config")
    assert running["document"]["device_id"] == "eh-lab"
    with pytest.raises(ControlError, match="unknown argument 'verbose'"):
        call(lab.socket, "status", {"verbose": True})
    with pytest.raises(ControlError, match="unknown method 'restart'"):
        call(lab.socket, "restart")
    # rpcd adds ubus_rpc_session to every LuCI call: accepted and ignored.
    assert call(lab.socket, "status", {"ubus_rpc_session": "abc"})["policy"]["state"] == "applied"


def test_control_socket_survives_garbage(lab: Site) -> None:
    import socket as sk

    with sk.socket(sk.AF_UNIX, sk.SOCK_STREAM) as s:
        s.connect(lab.socket)
        s.sendall(b"\xff\xfe not json\n")
        reply = json.loads(s.recv(4096))
    assert reply["ok"] is False and "not JSON" in reply["error"]
    assert call(lab.socket, "status")["policy"]["state"] == "applied"


def test_reload_with_bad_config_keeps_running_policy(lab: Site) -> None:
    good = lab.config_path.read_text()
    before = netns.ns_run(lab.router, ["nft", "list", "table", "inet", "energyhub"])
    try:
        document = json.loads(good)
        document["forwards"][0]["port"] = 0
        lab.config_path.write_text(json.dumps(document))
        result = ctl(lab, "reload")
        assert result.returncode == 2
        assert "forwards[0].port: 0 is out of range 1..65535" in result.stderr
        status = call(lab.socket, "status")
        assert status["config"]["last_error"] == [
            {"field": "forwards[0].port", "reason": "0 is out of range 1..65535"}
        ]
        assert status["policy"]["state"] == "applied"
        assert netns.ns_run(lab.router, ["nft", "list", "table", "inet", "energyhub"]) == before
    finally:
        lab.config_path.write_text(good)
        version = json.loads(good)["version"]  # a confirmed portal push may have raised it
        assert ctl(lab, "reload").stdout.startswith(f"configuration version {version} applied")


def test_sighup_applies_a_changed_config(lab: Site) -> None:
    """Closing the Modbus forward through a config edit + SIGHUP (procd's reload)."""
    good = lab.config_path.read_text()
    wan = checks.wan_address(lab)
    try:
        document = json.loads(good)
        document["forwards"] = []
        document["version"] = 2
        lab.config_path.write_text(json.dumps(document))
        pid = lab.daemon_pid()
        assert pid
        os.kill(pid, signal.SIGHUP)
        lab.wait_for(
            lambda: call(lab.socket, "status")["config"]["version"] == 2,
            10,
            "SIGHUP did not reload",
        )
        ok, text = lab.probe_connect(lab.ns("scada"), wan, 502, timeout=1.0)
        assert not ok, text
    finally:
        lab.config_path.write_text(good)
        call(lab.socket, "reload")
    ok, text = lab.probe_connect(lab.ns("scada"), wan, 502)
    assert ok and text.startswith("unit1"), text


def test_dnsmasq_is_restarted_when_it_dies(lab: Site) -> None:
    before = call(lab.socket, "status")["lan"]["dhcp"]["server"]
    os.kill(before["pid"], signal.SIGKILL)

    def restarted() -> bool:
        server = call(lab.socket, "status")["lan"]["dhcp"]["server"]
        return bool(server["running"] and server["pid"] != before["pid"])

    lab.wait_for(restarted, 10, "dnsmasq was not restarted")
    assert call(lab.socket, "status")["lan"]["dhcp"]["server"]["restarts"] == before["restarts"] + 1


def test_sigterm_stops_cleanly_and_keeps_the_firewall(lab: Site) -> None:
    pid = lab.daemon_pid()
    assert pid
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and netns.process_alive(pid):
        time.sleep(0.05)
    assert not netns.process_alive(pid), "daemon did not exit within 5 s of SIGTERM"
    assert not Path(lab.socket).exists()
    # A stopped daemon must not open the site: the table stays.
    assert "inet energyhub" in netns.ns_run(lab.router, ["nft", "list", "tables"])
    lab.start_daemon()
    assert call(lab.socket, "status")["policy"]["state"] == "applied"
