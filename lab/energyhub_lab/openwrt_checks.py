"""``energyhubd lab check --openwrt``: the router on OpenWrt's own userland, checked end to end.

Boots the cached userland (scripts/openwrt/build.sh) with procd as PID 1
(:mod:`energyhub_lab.openwrt`), the package installed and enabled, and checks through the
interfaces an operator and LuCI use: ubus, rpcd sessions through uhttpd, energyhubctl, uci and
``reload_config``, procd's respawn, fw4, dnsmasq's init script with a LAN client, netifd's WAN.
The full set, with more detail, is tests/test_openwrt_userland.py.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from typing import Any

from energyhub_lab.checks import CheckResult
from energyhub_lab.openwrt import ROOT_PASSWORD, OpenWrtRouter

UHTTPD = "127.0.0.1:8080"
NO_SESSION = "0" * 32
JSONRPC = r"""
import sys, urllib.request
req = urllib.request.Request("http://UHTTPD/ubus", data=sys.argv[1].encode(),
                             headers={"Content-Type": "application/json"})
print(urllib.request.urlopen(req, timeout=60).read().decode())
""".replace("UHTTPD", UHTTPD)

Check = Callable[[OpenWrtRouter], tuple[bool, str]]


def _ubus(router: OpenWrtRouter, obj: str, method: str, args: dict[str, Any] | None = None) -> Any:
    proc = router.run("ubus", "-t", "10", "call", obj, method, json.dumps(args or {}), timeout=20)
    if proc.returncode != 0:
        raise AssertionError(f"ubus call {obj} {method}: exit {proc.returncode}")
    return json.loads(proc.stdout or "{}")


def _status(router: OpenWrtRouter) -> dict[str, Any] | None:
    proc = router.run("ubus", "-t", "5", "call", "energyhub", "status", timeout=15)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def _until(check: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def check_procd(router: OpenWrtRouter) -> tuple[bool, str]:
    pid1 = router.run("cat", "/proc/1/comm").stdout.strip()
    listed = _ubus(router, "service", "list", {"name": "energyhubd"})
    instance = listed.get("energyhubd", {}).get("instances", {}).get("energyhubd", {})
    jail = "jailed (ujail, capability set)" if "jail" in instance else "not jailed"
    return pid1 == "procd" and bool(instance.get("running")), f"PID 1 {pid1}; energyhubd {jail}"


def check_status(router: OpenWrtRouter) -> tuple[bool, str]:
    status = _until(lambda: _status(router))
    if not status:
        return False, "no answer from ubus call energyhub status"
    policy = status["policy"]["state"]
    return status["daemon"]["platform"] == "openwrt" and policy == "applied", f"policy {policy}"


def _jsonrpc(router: OpenWrtRouter, sid: str, obj: str, method: str, args: dict[str, Any]) -> Any:
    body = {"jsonrpc": "2.0", "id": 1, "method": "call", "params": [sid, obj, method, args]}
    proc = router.run("python3", "-c", JSONRPC, json.dumps(body), check=True)
    return json.loads(proc.stdout)


def check_luci_session(router: OpenWrtRouter) -> tuple[bool, str]:
    router.run("uhttpd", "-p", UHTTPD, "-h", "/www", "-u", "/ubus", check=True)
    login = {"username": "root", "password": ROOT_PASSWORD}
    answer = _until(lambda: _jsonrpc(router, NO_SESSION, "session", "login", login).get("result"))
    sid = answer[1]["ubus_rpc_session"]
    code, status = _jsonrpc(router, sid, "energyhub", "status", {})["result"]
    denied = _jsonrpc(router, NO_SESSION, "energyhub", "status", {}).get("error", {})
    ok = code == 0 and "daemon" in status and denied.get("code") == -32002
    return ok, "status through uhttpd /ubus with a root session; refused without one"


def check_ctl_refusal(router: OpenWrtRouter) -> tuple[bool, str]:
    proc = router.run("energyhubctl", "tunnel", "open")
    return proc.returncode == 1 and proc.stdout == "", proc.stderr.strip()


def check_respawn(router: OpenWrtRouter) -> tuple[bool, str]:
    before = (_status(router) or {}).get("daemon", {}).get("pid")
    router.run("kill", "-9", str(before), check=True)
    after = _until(
        lambda: (s := _status(router)) and s["daemon"]["pid"] != before and s["daemon"]["pid"],
        timeout=30,
    )
    return bool(after), f"pid {before} -> {after}"


def check_reload_config(router: OpenWrtRouter) -> tuple[bool, str]:
    applies = (_status(router) or {})["policy"]["applies"]
    router.sh("uci set energyhub.lan.lease_time=12h && uci commit energyhub", check=True)
    router.run("reload_config", check=True)
    status = _until(lambda: (s := _status(router)) and s["policy"]["applies"] > applies and s)
    leasetime = router.run("uci", "get", "dhcp.lan.leasetime").stdout.strip()
    ok = bool(status) and status["policy"]["last_reason"] == "SIGHUP" and leasetime == "12h"
    return ok, f"uci commit + reload_config -> SIGHUP reload; dhcp.lan.leasetime {leasetime}"


def _tables(router: OpenWrtRouter) -> set[str]:
    out = router.run("nft", "list", "tables").stdout
    return {line.split(None, 1)[1] for line in out.splitlines() if line.startswith("table ")}


def check_fw4_flush(router: OpenWrtRouter) -> tuple[bool, str]:
    router.run("fw4", "flush", check=True)
    ours = _until(lambda: "inet energyhub" in _tables(router))
    router.run("service", "firewall", "start", check=True)
    both = _until(lambda: {"inet fw4", "inet energyhub"} <= _tables(router))
    return bool(ours and both), "table inet energyhub back after fw4 flush; fw4's after start"


def _udhcpc(router: OpenWrtRouter, hostname: str) -> str | None:
    proc = subprocess.run(
        ["ip", "netns", "exec", router.lan_ns, "busybox", "udhcpc", "-i", "eth0", "-n", "-q",
         "-t", "5", "-T", "2", "-s", "/bin/true", "-x", f"hostname:{hostname}"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    for line in (proc.stdout + proc.stderr).splitlines():
        if "lease of " in line:
            return line.split("lease of ", 1)[1].split()[0]
    return None


def check_display(router: OpenWrtRouter) -> tuple[bool, str]:
    _until(lambda: "dnsmasq" in _ubus(router, "service", "list", {"name": "dnsmasq"}))
    ip = _udhcpc(router, "display")
    listed = _until(
        lambda: [
            d for d in _ubus(router, "energyhub", "devices")["devices"] if d.get("lease_ip") == ip
        ]
    )
    role = listed[0]["role"] if listed else None
    return ip == "192.168.254.200" and role == "display", f"lease {ip}, daemon role {role}"


def check_wan_and_forward(router: OpenWrtRouter) -> tuple[bool, str]:
    wan = _until(lambda: (w := _ubus(router, "network.interface.wan", "status")).get("up") and w)
    if not wan:
        return False, "netifd brought no WAN up"
    address = wan["ipv4-address"][0]["address"]
    ip = _udhcpc(router, "unit1")
    for cmd in (["addr", "replace", f"{ip}/24", "dev", "eth0"],
                ["route", "replace", "default", "via", "192.168.254.1"]):  # fmt: skip
        subprocess.run(["ip", "-n", router.lan_ns, *cmd], check=True)
    ping = subprocess.run(
        ["ip", "netns", "exec", router.lan_ns, "ping", "-c", "1", "-W", "3", "198.51.100.1"],
        capture_output=True,
    )
    return ping.returncode == 0, f"WAN {address} by DHCP; LAN {ip} -> 198.51.100.1 through fw4"


CHECKS: list[tuple[str, Check]] = [
    ("procd runs energyhubd", check_procd),
    ("ubus energyhub status", check_status),
    ("rpcd session via uhttpd", check_luci_session),
    ("energyhubctl refusal exits 1", check_ctl_refusal),
    ("kill -9 -> procd respawns", check_respawn),
    ("uci commit + reload_config", check_reload_config),
    ("fw4 flush -> table back", check_fw4_flush),
    ("display gets .200 (dnsmasq)", check_display),
    ("WAN via netifd, LAN forward", check_wan_and_forward),
]


def run_openwrt_checks(router: OpenWrtRouter) -> list[CheckResult]:
    results = []
    for name, check in CHECKS:
        try:
            passed, detail = check(router)
        except Exception as exc:  # a check that crashes is a FAIL with its reason
            passed, detail = False, f"{type(exc).__name__}: {exc}"
        results.append(CheckResult(name, passed, detail))
    return results
