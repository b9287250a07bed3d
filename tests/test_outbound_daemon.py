"""The outbound flows through the running daemon, as a user meets them.

A real ``energyhubd run`` inside the router namespace of a ``MiniLab`` (LAN host, customer
network with its resolver, lab internet with DNS, broker, gateway, "S3", NTP and one other
host). The daemon's WAN DNS server comes from the resolv file it is given, as udhcpc would
write it; ``dns.fallback`` is the lab's DNS. Everything lives in the lab's namespaces.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from energyhub_lab import internet, netns
from energyhub_lab.internet import MiniLab, connect_in, diagnose_in, tcp_connect_in
from energyhubd.control.client import ControlError
from energyhubd.outbound.diagnose import FLOWS
from tests.realdaemon import RealDaemon, RealDaemons, wait_for

pytestmark = pytest.mark.netns

ALL_FLOWS = FLOWS


@pytest.fixture(scope="module")
def lab(minilab: MiniLab) -> MiniLab:
    return minilab


@pytest.fixture
def daemon_factory(outbound_lab: MiniLab, real_daemons: RealDaemons) -> Callable[..., RealDaemon]:
    """Starts a daemon with the lab's outbound services, the portal off; ``doc`` replaces
    whole top-level sections. The lab's block switches are clear before and after."""

    def start(**doc: Any) -> RealDaemon:
        outbound = outbound_lab.services.outbound_config()
        sections = {"portal": {"enabled": False}, "outbound": outbound}
        return real_daemons.start(real_daemons.config(**{**sections, **doc}))

    return start


def _rows(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["flow"]: r for r in result["rows"]}


def test_daemon_diagnoses_every_flow_and_names_the_blocked_one(
    lab: MiniLab, daemon_factory: Callable[..., RealDaemon]
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
    lab: MiniLab, daemon_factory: Callable[..., RealDaemon]
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


@dataclass
class TunnelRig:
    """A daemon with the support tunnel to the lab's gateway, and what the tests look at."""

    lab: MiniLab
    daemon: RealDaemon
    remote_port: int

    @classmethod
    def start(
        cls,
        lab: MiniLab,
        daemon_factory: Callable[..., RealDaemon],
        remote_port: int,
        **tunnel: Any,
    ) -> TunnelRig:
        settings = {
            "user": "root",
            "key_file": str(lab.services.client_key),
            "remote_port": remote_port,
            "host_key": lab.services.gateway_host_key,
            **tunnel,
        }
        outbound = {**lab.services.outbound_config(), "tunnel": settings}
        return cls(lab, daemon_factory(outbound=outbound), remote_port)

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = self.daemon.call("status")["outbound"]["tunnel"]
        return state

    def gateway_side_open(self) -> bool:
        return tcp_connect_in(self.lab.services.ns, "127.0.0.1", self.remote_port, timeout=0.5)[0]


def test_daemon_keeps_an_always_on_tunnel_up(
    lab: MiniLab, daemon_factory: Callable[..., RealDaemon]
) -> None:
    rig = TunnelRig.start(lab, daemon_factory, 20031, mode="always")
    daemon, tunnel, gateway_side_open = rig.daemon, rig.state, rig.gateway_side_open
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


def test_on_demand_tunnel_opens_closes_and_expires_on_command(
    lab: MiniLab, daemon_factory: Callable[..., RealDaemon]
) -> None:
    # expiry_hours 0.001 = 3.6 s: the default expiry of a plain "open"
    rig = TunnelRig.start(lab, daemon_factory, 20032, mode="on_demand", expiry_hours=0.001)
    daemon, tunnel, gateway_side_open = rig.daemon, rig.state, rig.gateway_side_open

    assert tunnel()["state"] == "idle" and not gateway_side_open()

    # Opened by hand for an hour: the gateway reaches the router's ssh through it.
    out = daemon.ctl("tunnel", "open", "--hours", "1")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("tunnel on_demand running") and "closes in 1h00m" in out.stdout
    wait_for(gateway_side_open, 20, "the opened tunnel does not reach the gateway")
    assert 3500 < tunnel()["expires_in_s"] <= 3600

    # Closed on request: the forwarded port disappears on the gateway side.
    closed = daemon.call("tunnel", {"action": "close"})
    assert closed["tunnel"]["state"] == "idle" and closed["tunnel"]["pid"] is None
    wait_for(lambda: not gateway_side_open(), 10, "the closed tunnel still reaches the gateway")
    assert "expires_in_s" not in tunnel()

    # Opened with the configured expiry (3.6 s): it closes by itself.
    opened = daemon.call("tunnel", {"action": "open"})
    assert opened["tunnel"]["state"] == "running" and opened["tunnel"]["expires_in_s"] <= 4
    wait_for(
        lambda: (t := tunnel())["state"] == "idle" and t["last_exit"] == "expired",
        15,
        "the on-demand tunnel did not close at its expiry",
    )
    wait_for(lambda: not gateway_side_open(), 10, "the expired tunnel still reaches the gateway")
    assert "tunnel    on_demand idle" in daemon.ctl("status").stdout

    # Refusals name the argument.
    with pytest.raises(ControlError, match="argument 'action' must be open or close"):
        daemon.call("tunnel", {"action": "start"})
    with pytest.raises(ControlError, match=r"argument 'hours' must be 0\.001-168"):
        daemon.call("tunnel", {"action": "open", "hours": 500})
    with pytest.raises(ControlError, match="argument 'hours' is only accepted with action 'open'"):
        daemon.call("tunnel", {"action": "close", "hours": 1})
    bad = daemon.ctl("tunnel", "open", "--hours", "0")
    assert bad.returncode == 1 and "argument 'hours' must be 0.001-168, not 0.0" in bad.stderr


def test_tunnel_method_refuses_when_the_tunnel_is_disabled(
    daemon_factory: Callable[..., RealDaemon],
) -> None:
    daemon = daemon_factory()
    with pytest.raises(ControlError, match="tunnel: the support tunnel is disabled"):
        daemon.call("tunnel", {"action": "open"})


# A stub resolver as musl and glibc behave: the identical query (same id, same socket) is
# sent again every second until an answer arrives; prints {"addresses", "rcode", "seconds",
# "sends"} or {"error"}.
_STUB_QUERY = """
import json, socket, sys, time
from energyhubd.outbound import dnswire
server, name, budget = sys.argv[1], sys.argv[2], float(sys.argv[3])
query = dnswire.build_query(name, 0x4242)
start = time.monotonic()
sends = 0
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
    sock.connect((server, 53))
    while time.monotonic() - start < budget:
        sock.send(query)
        sends += 1
        sock.settimeout(1.0)
        try:
            response = dnswire.parse_response(sock.recv(4096))
        except (TimeoutError, dnswire.DnsFormatError):
            continue
        print(json.dumps({"addresses": list(response.addresses), "rcode": response.rcode_name,
                          "seconds": round(time.monotonic() - start, 2), "sends": sends}))
        sys.exit(0)
print(json.dumps({"error": "no answer", "sends": sends}))
"""


def _lan_query(lab: MiniLab, name: str, budget: float = 8.0) -> dict[str, Any]:
    cmd = [sys.executable, "-c", _STUB_QUERY, internet.LAN_ROUTER_IP, name, str(budget)]
    proc = subprocess.run(
        netns.ns_cmd(lab.lanhost, cmd), capture_output=True, text=True, timeout=budget + 20
    )
    assert proc.returncode == 0, proc.stderr
    answer: dict[str, Any] = json.loads(proc.stdout)
    return answer


def test_lan_dns_falls_back_when_the_dhcp_provided_server_does_not_answer(
    lab: MiniLab, daemon_factory: Callable[..., RealDaemon]
) -> None:
    """The router's dnsmasq asks the WAN's DHCP-provided server first, ``dns.fallback`` next.

    Distinct names per step: the router's dnsmasq must not answer from its cache.
    """
    daemon = daemon_factory()
    name_primary, name_fallback, name_none = (
        internet.NTP_NAMES[0],
        internet.BROKER_NAME,
        (internet.NTP_NAMES[1]),
    )
    # The fallback is unreachable: the DHCP-provided server answers, at the first try.
    lab.services.block("dns_fallback")
    answer = _lan_query(lab, name_primary)
    assert answer.get("addresses") == [internet.NTP_IP], answer
    assert answer["sends"] == 1, answer
    # The DHCP-provided server does not answer: the client's retry is sent to the fallback.
    lab.services.clear()
    lab.services.block("dns")
    answer = _lan_query(lab, name_fallback)
    assert answer.get("addresses") == [internet.BROKER_IP], answer
    assert answer["seconds"] < 5, answer
    # Both silent: no answer (so the previous one really came through the fallback).
    lab.services.block("dns_fallback")
    answer = _lan_query(lab, name_none, budget=4)
    assert "addresses" not in answer or not answer["addresses"], answer

    # A new WAN lease names another server: the router's dnsmasq follows without a restart.
    lab.services.clear()
    lab.services.block("dns")
    daemon.resolv.write_text(f"nameserver {internet.DNS_IP}\n")
    merged = daemon.state / "dnsmasq" / "upstream.resolv"
    wait_for(
        lambda: merged.read_text().split("\n")[1:] == [f"nameserver {internet.DNS_IP}", ""],
        5,
        "the merged upstream file did not follow the WAN resolv file",
    )
    answer = _lan_query(lab, internet.S3_NAME)
    assert answer.get("addresses") == [internet.S3_IP], answer
    assert answer["sends"] == 1, answer
    lab.services.clear()
