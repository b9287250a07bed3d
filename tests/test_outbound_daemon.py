"""The outbound flows through the running daemon, as a user meets them.

A real ``energyhubd run`` inside the router namespace of a ``MiniLab`` (LAN host, customer
network with its resolver, lab internet with DNS, broker, gateway, "S3", NTP and one other
host). The daemon's WAN DNS server comes from the resolv file it is given, as udhcpc would
write it; ``dns.fallback`` is the lab's DNS. Everything lives in the lab's namespaces.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from energyhubd.control.client import ControlError, call
from energyhubd.lab import internet, netns
from energyhubd.lab.internet import MiniLab, connect_in, diagnose_in, tcp_connect_in

pytestmark = pytest.mark.netns

ALL_FLOWS = {
    "dns",
    "dns_fallback",
    "ntp",
    "clock",
    "mqtt_tls",
    "mqtt_plain",
    "gateway",
    "update_http",
    "update_https",
}


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MiniLab]:
    prefix = f"ehTo{secrets.token_hex(2)}"
    mini = MiniLab(prefix, tmp_path_factory.mktemp(prefix))
    try:
        mini.up()
        yield mini
    finally:
        mini.down()


@dataclass
class RunningDaemon:
    proc: subprocess.Popen[bytes]
    socket: str
    log: Path

    def call(self, method: str, args: dict[str, Any] | None = None, timeout: float = 90) -> Any:
        return call(self.socket, method, args, timeout=timeout)

    def ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "energyhubd.ctl", "--socket", self.socket, *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def wait_for(predicate: Callable[[], Any], timeout: float, message: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except ControlError:
            value = None
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(message)


@pytest.fixture
def daemon_factory(lab: MiniLab, tmp_path: Path) -> Iterator[Callable[..., RunningDaemon]]:
    started: list[RunningDaemon] = []

    def start(**doc: Any) -> RunningDaemon:
        resolv = tmp_path / "wan-resolv.conf"
        resolv.write_text(f"nameserver {internet.CUSTOMER_RESOLVER}\n")
        sock = str(tmp_path / "energyhubd.sock")
        config = {
            "platform": "linux",
            "state_dir": str(tmp_path / "state"),
            "wan": {"device": "wan"},
            "lan": {"device": "lan"},
            "control": {"socket": sock},
            "dns": {"fallback": [internet.DNS_IP]},
            "portal": {"enabled": False},
            "outbound": lab.services.outbound_config(),
            **doc,
        }
        path = tmp_path / "config.json"
        path.write_text(json.dumps(config))
        log = tmp_path / "energyhubd.log"
        cmd = [sys.executable, "-m", "energyhubd.cli", "run", "--config", str(path)]
        cmd += ["--pid-file", str(tmp_path / "energyhubd.pid"), "--resolv-file", str(resolv)]
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                netns.ns_cmd(lab.router, cmd),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        daemon = RunningDaemon(proc, sock, log)
        started.append(daemon)
        wait_for(
            lambda: daemon.call("status", timeout=2)["policy"]["state"] == "applied",
            20,
            f"energyhubd did not apply its policy; log:\n{_tail(log)}",
        )
        return daemon

    lab.services.clear()
    try:
        yield start
    finally:
        lab.services.clear()
        for daemon in started:
            daemon.proc.terminate()
            try:
                daemon.proc.wait(10)
            except subprocess.TimeoutExpired:
                daemon.proc.kill()
                daemon.proc.wait(5)
        # The daemon leaves its table in place (fail closed); the next test starts clean.
        netns.ns_run(lab.router, ["nft", "delete", "table", "inet", "energyhub"], check=False)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _rows(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["flow"]: r for r in result["rows"]}


def test_daemon_diagnoses_every_flow_and_names_the_blocked_one(
    lab: MiniLab, daemon_factory: Callable[..., RunningDaemon]
) -> None:
    daemon = daemon_factory()
    result = daemon.call("diagnose", {"timeout": 60})
    assert result["passed"], [r for r in result["rows"] if not r["passed"]]
    assert set(_rows(result)) == ALL_FLOWS
    assert result["dns_servers"] == [internet.CUSTOMER_RESOLVER]
    assert result["fallback"] == [internet.DNS_IP]
    status = daemon.call("status")
    summary = status["outbound"]["diagnostics"]["last"]
    assert summary["passed"] and summary["run"] == result["run"]
    assert status["outbound"]["health"]["failed"] == {}

    # The customer's firewall drops the gateway flow: that row, and only that one, fails.
    lab.services.block("gateway")
    holder: dict[str, Any] = {}
    waiter = threading.Thread(target=lambda: holder.update(daemon.call("diagnose")))
    waiter.start()
    # While the control call waits for the worker, status still answers at once.
    started = time.monotonic()
    assert daemon.call("status", timeout=3)["policy"]["state"] == "applied"
    assert time.monotonic() - started < 2
    waiter.join(90)
    assert holder["failed_flows"] == ["gateway"]
    assert _rows(holder)["gateway"]["reason"] == (
        "TCP 2443 to 203.0.113.20: no answer within 2 s (filtered)"
    )

    # energyhubctl: a readable table, exit status 3, and the verdict in status.
    out = daemon.ctl("diagnose")
    assert out.returncode == 3, out.stderr
    assert "FLOW          RESULT  LATENCY  REASON" in out.stdout
    gateway_line = next(line for line in out.stdout.splitlines() if line.startswith("gateway"))
    assert "FAIL" in gateway_line and "no answer within 2 s (filtered)" in gateway_line
    text = daemon.ctl("status").stdout
    assert "outbound  FAILING gateway" in text
    assert "gateway: TCP 2443 to 203.0.113.20: no answer within 2 s (filtered)" in text
    as_json = json.loads(daemon.ctl("diagnose", "--json").stdout)
    assert as_json["failed_flows"] == ["gateway"]

    with pytest.raises(ControlError, match="'timeout' must be 1-300 seconds"):
        daemon.call("diagnose", {"timeout": 0})
    lab.services.clear()


def test_allowlist_passes_the_required_flows_and_counts_what_it_drops(
    lab: MiniLab, daemon_factory: Callable[..., RunningDaemon]
) -> None:
    daemon = daemon_factory(egress={"mode": "allowlist"})
    egress_status = wait_for(
        lambda: (
            (e := daemon.call("status")["outbound"]["egress"])["broker_addresses"]
            and e["s3_prefixes"]
            and e
        ),
        20,
        "the allowlist never learned the broker address and the S3 prefixes",
    )
    assert egress_status["broker_addresses"] == [internet.BROKER_IP]
    assert egress_status["dns_servers"] == [internet.CUSTOMER_RESOLVER]
    assert egress_status["s3_prefixes"] == 1

    # A device on the LAN reaches every required flow through the allowlist ...
    rows = diagnose_in(
        lab.lanhost,
        lab.services.outbound_config(),
        [internet.CUSTOMER_RESOLVER],
        [internet.DNS_IP],
    )
    assert [r for r in rows if not r["passed"]] == []
    # ... and so does the router itself (the daemon's own diagnostics).
    result = daemon.call("diagnose")
    assert result["passed"], [r for r in result["rows"] if not r["passed"]]

    # Anything else is dropped, and status says which flow, how often.
    ok, why = connect_in(lab.lanhost, internet.OTHER_IP, 5555)
    assert not ok and "no answer" in why
    ok, _ = connect_in(lab.lanhost, internet.OTHER_IP, 8883)
    assert not ok
    drops = wait_for(
        lambda: (
            (d := daemon.call("status")["outbound"]["egress"]["drops"]).get("lan", {}).get("other")
            and d["lan"].get("mqtt")
            and d
        ),
        30,
        "the dropped connections never showed up in status",
    )
    assert drops["lan"]["other"] >= 1 and drops["lan"]["mqtt"] >= 1
    text = daemon.ctl("status").stdout
    assert "egress    allowlist" in text and "dropped: lan " in text and "other" in text

    # The allowlist's rules compare equal to what the kernel lists: a reload writes nothing.
    writes = daemon.call("status")["policy"]["writes"]
    assert daemon.call("reload")["applied"]
    assert daemon.call("status")["policy"]["writes"] == writes

    # Back to egress.mode open: the same host is reachable, so the block was the allowlist's.
    daemon.proc.terminate()
    assert daemon.proc.wait(10) == 0
    opened = daemon_factory()
    assert opened.call("status")["outbound"]["egress"] == {"mode": "open"}
    reached, why = connect_in(lab.lanhost, internet.OTHER_IP, 5555)
    assert reached, why


def test_daemon_keeps_an_always_on_tunnel_up(
    lab: MiniLab, daemon_factory: Callable[..., RunningDaemon]
) -> None:
    remote_port = 20031
    outbound = {
        **lab.services.outbound_config(),
        "tunnel": {
            "mode": "always",
            "user": "root",
            "key_file": str(lab.services.client_key),
            "remote_port": remote_port,
            "host_key": lab.services.gateway_host_key,
        },
    }
    daemon = daemon_factory(outbound=outbound)

    def tunnel() -> dict[str, Any]:
        state: dict[str, Any] = daemon.call("status")["outbound"]["tunnel"]
        return state

    def gateway_side_open() -> bool:
        return tcp_connect_in(lab.services.ns, "127.0.0.1", remote_port, timeout=0.5)[0]

    wait_for(lambda: tunnel()["state"] == "running" and gateway_side_open(), 20, "no tunnel")
    first = tunnel()
    assert first["mode"] == "always" and first["restarts"] == 0
    # The gateway drops the session: the daemon notices the exit (pidfd) and restarts ssh.
    assert lab.services.drop_ssh_sessions() >= 1
    wait_for(
        lambda: (t := tunnel())["restarts"] >= 1 and t["state"] == "running" and t["pid"],
        30,
        "the daemon never restarted the tunnel",
    )
    wait_for(gateway_side_open, 20, "the restarted tunnel does not reach the gateway")
    assert tunnel()["pid"] != first["pid"]
    assert "ssh exited with status" in (tunnel()["last_exit"] or "")
    assert "tunnel    always running" in daemon.ctl("status").stdout
