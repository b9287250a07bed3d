"""energyhubd on real OpenWrt userland: procd, ubusd, rpcd, uhttpd, uci, netifd, fw4, dnsmasq.

One router per module, booted from the cached build (scripts/openwrt/build.sh) with procd as
PID 1 in namespaces (energyhub_lab.openwrt). The daemon is the package's: started by
/etc/init.d/energyhubd under procd, python3-ubus built from the patched sdist against the real
libubus. Every check goes through the public interfaces an operator or LuCI uses.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from energyhub_lab.openwrt import REPO, OpenWrtRouter
from tests.conftest import unique

pytestmark = pytest.mark.netns

NTP_SERVER = "198.51.100.123"
DNS_FALLBACK = "198.51.100.53"
VIEWER = ("viewer", "viewer-secret")
ADMIN = ("admin", "admin-secret")
NO_SESSION = "0" * 32

JSONRPC = r"""
import json, sys, urllib.request
req = urllib.request.Request("http://127.0.0.1:8080/ubus", data=sys.argv[1].encode(),
                             headers={"Content-Type": "application/json"})
print(urllib.request.urlopen(req, timeout=60).read().decode())
"""


def _crypt(password: str) -> str:
    return subprocess.run(
        ["openssl", "passwd", "-1", password], capture_output=True, text=True, check=True
    ).stdout.strip()


def lab_files() -> dict[str, str]:
    """The site's files: NTP and DNS fallback inside the lab, rpcd logins with our ACL group."""
    config = (REPO / "openwrt-package/energyhubd/files/energyhub.config").read_text()
    config = config.replace(
        "\tlist ntp_servers '0.openwrt.pool.ntp.org'\n"
        "\tlist ntp_servers '1.openwrt.pool.ntp.org'\n",
        f"\tlist ntp_servers '{NTP_SERVER}'\n",
    ).replace("list fallback '8.8.8.8'", f"list fallback '{DNS_FALLBACK}'")
    assert NTP_SERVER in config and DNS_FALLBACK in config
    rpcd = (
        "config rpcd\n\toption socket /var/run/ubus/ubus.sock\n\toption timeout 30\n\n"
        f"config login\n\toption username '{VIEWER[0]}'\n"
        f"\toption password '{_crypt(VIEWER[1])}'\n\tlist read 'energyhub'\n\n"
        f"config login\n\toption username '{ADMIN[0]}'\n"
        f"\toption password '{_crypt(ADMIN[1])}'\n\tlist read 'energyhub'\n"
        "\tlist write 'energyhub'\n"
    )
    return {"/etc/config/energyhub": config, "/etc/config/rpcd": rpcd}


def wait_until(what: str, check: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def router(
    openwrt_build: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OpenWrtRouter]:
    prefix = unique("eow")
    box = OpenWrtRouter(
        prefix=prefix,
        run_dir=tmp_path_factory.mktemp(prefix),
        build_dir=openwrt_build,
        files=lab_files(),
    )
    box.up()
    try:
        box.run("ubus", "-t", "30", "wait_for", "energyhub", check=True, timeout=40)
        box.run("uhttpd", "-p", "127.0.0.1:8080", "-h", "/www", "-u", "/ubus", check=True)
        yield box
    finally:
        box.down()


def ubus_json(router: OpenWrtRouter, obj: str, method: str, args: dict[str, Any] | None = None):  # type: ignore[no-untyped-def]
    proc = router.run("ubus", "-t", "30", "call", obj, method, json.dumps(args or {}), timeout=40)
    assert proc.returncode == 0, f"ubus call {obj} {method}: {proc.returncode} {proc.stderr}"
    return json.loads(proc.stdout or "{}")


def try_status(router: OpenWrtRouter) -> dict[str, Any] | None:
    """``energyhub status``, or None while the object is not (yet) registered."""
    proc = router.run("ubus", "-t", "5", "call", "energyhub", "status", timeout=15)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def instance_pid(router: OpenWrtRouter, service: str) -> int | None:
    services = ubus_json(router, "service", "list", {"name": service})
    for instance in services.get(service, {}).get("instances", {}).values():
        if instance.get("running"):
            return int(instance["pid"])
    return None


def jsonrpc(router: OpenWrtRouter, sid: str, obj: str, method: str, args: dict[str, Any]) -> Any:
    """One call through uhttpd's /ubus endpoint, exactly as LuCI's rpc.js sends it."""
    body = {"jsonrpc": "2.0", "id": 1, "method": "call", "params": [sid, obj, method, args]}
    proc = router.run("python3", "-c", JSONRPC, json.dumps(body), check=True)
    return json.loads(proc.stdout)


def login(router: OpenWrtRouter, user: tuple[str, str]) -> str:
    answer = jsonrpc(
        router, NO_SESSION, "session", "login", {"username": user[0], "password": user[1]}
    )
    code, data = answer["result"]
    assert code == 0
    return str(data["ubus_rpc_session"])


# ------------------------------------------------------------------------------------ procd


def test_procd_runs_the_daemon_from_its_init_script(router: OpenWrtRouter) -> None:
    assert router.run("cat", "/proc/1/comm").stdout.strip() == "procd"
    services = ubus_json(router, "service", "list", {"name": "energyhubd"})
    instance = services["energyhubd"]["instances"]["energyhubd"]
    assert instance["running"]
    assert instance["command"][-4:] == [
        "/usr/bin/energyhubd",
        "run",
        "--config",
        "/etc/config/energyhub",
    ]
    assert instance["respawn"] == {"threshold": 300, "timeout": 5, "retry": 10}


def test_init_script_declarations_as_procd_holds_them(router: OpenWrtRouter) -> None:
    listed = ubus_json(router, "service", "list", {"name": "energyhubd", "verbose": True})
    service = listed["energyhubd"]
    instance = service["instances"]["energyhubd"]
    assert instance["term_timeout"] == 15
    assert instance["env"] == {"PYTHONUNBUFFERED": "1"}
    reload = ["run_script", "/etc/init.d/energyhubd", "reload"]
    assert [
        ["config.change", ["if", ["eq", "package", "energyhub"], reload], 1000],
        ["interface.*", ["if", ["eq", "interface", "wan"], reload], 1000],
    ] == service["triggers"]
    # enabled the way the package's postinst does: after dnsmasq (19) and network (20)
    links = router.run("ls", "/etc/rc.d").stdout.split()
    assert "S60energyhubd" in links and "K10energyhubd" in links
    assert links.index("S20network") < links.index("S60energyhubd")


def test_ubus_call_energyhub_status(router: OpenWrtRouter) -> None:
    status = ubus_json(router, "energyhub", "status")
    assert status["daemon"]["platform"] == "openwrt"
    assert status["policy"]["state"] == "applied"
    assert router.run("nft", "list", "table", "inet", "energyhub").returncode == 0


def daemon_pid(router: OpenWrtRouter) -> int | None:
    proc = router.run("cat", "/var/run/energyhubd.pid")
    text = proc.stdout.strip()
    return int(text) if proc.returncode == 0 and text.isdigit() else None


def test_cli_arguments_checked_by_the_daemon_through_the_real_binding(
    router: OpenWrtRouter,
) -> None:
    # the patched binding passes unknown keys on; the daemon names them
    assert ubus_json(router, "energyhub", "status", {"colour": "red"}) == {
        "error": "status: unknown argument 'colour' (accepted: none)",
        "method": "status",
    }
    # the key rpcd adds to every LuCI call is accepted and never reaches a method
    session = {"ubus_rpc_session": "0123456789abcdef0123456789abcdef"}
    assert ubus_json(router, "energyhub", "status", session)["daemon"]["platform"] == "openwrt"
    answer = ubus_json(router, "energyhub", "diagnose", {"timeout": 0})
    assert answer["error"].startswith("diagnose: argument 'timeout'")
    # the introspected signature lists the methods' own arguments
    listing = router.run("ubus", "-v", "list", "energyhub", check=True).stdout
    assert '"diagnose":{' in listing and "ubus_rpc_session" not in listing


def test_kill_9_procd_respawns_and_the_object_comes_back(router: OpenWrtRouter) -> None:
    before = ubus_json(router, "energyhub", "status")["daemon"]["pid"]
    router.run("kill", "-9", str(before), check=True)
    after = wait_until(
        "a new energyhubd",
        lambda: (
            (p := daemon_pid(router))
            and p != before
            and router.run("kill", "-0", str(p)).returncode == 0
            and p
        ),
        timeout=30,
    )
    router.run("ubus", "-t", "30", "wait_for", "energyhub", check=True, timeout=40)
    assert wait_until(
        "the object answers from the new daemon",
        lambda: ubus_json(router, "energyhub", "status")["daemon"]["pid"] == after,
    )
    assert daemons(router) == [after]


def daemons(router: OpenWrtRouter) -> list[int]:
    """Pids of every python process running /usr/bin/energyhubd in the router."""
    found = []
    for cmdline in (router.root / "proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[:3] == [b"/usr/bin/python3", b"/usr/bin/energyhubd", b"run"]:
            found.append(int(cmdline.parent.name))
    return sorted(found)


def _caps(router: OpenWrtRouter, pid: int) -> dict[str, int]:
    status = router.run("cat", f"/proc/{pid}/status", check=True).stdout
    return {
        line.split(":")[0]: int(line.split()[1], 16)
        for line in status.splitlines()
        if line.startswith("Cap")
    }


def test_procd_jail_applies_the_capability_set(router: OpenWrtRouter) -> None:
    services = ubus_json(router, "service", "list", {"name": "energyhubd"})
    instance = services["energyhubd"]["instances"]["energyhubd"]
    assert instance["capabilities"] == "/etc/capabilities/energyhubd.json"
    assert instance["jail"]["name"] == "energyhubd"
    caps = _caps(router, ubus_json(router, "energyhub", "status")["daemon"]["pid"])
    wanted = (1 << 10) | (1 << 12) | (1 << 13)  # NET_BIND_SERVICE, NET_ADMIN, NET_RAW
    assert caps == {name: wanted for name in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")}
    # with exactly that set the daemon applied its table (and the tests below exercise reload,
    # the DHCP plan through uci and dnsmasq's init script, drift repair and leases)
    assert ubus_json(router, "energyhub", "status")["policy"]["state"] == "applied"


def test_uci_commit_alone_does_not_reload_but_reload_config_does(router: OpenWrtRouter) -> None:
    applies = ubus_json(router, "energyhub", "status")["policy"]["applies"]
    router.sh("uci set energyhub.lan.lease_time=12h && uci commit energyhub", check=True)
    time.sleep(2)  # give a (wrongly) expected config.change time to arrive
    assert ubus_json(router, "energyhub", "status")["policy"]["applies"] == applies
    router.run("reload_config", check=True)
    status = wait_until(
        "the daemon reloads after reload_config",
        lambda: (
            (s := ubus_json(router, "energyhub", "status"))["policy"]["applies"] > applies and s
        ),
    )
    assert status["policy"]["last_reason"] == "SIGHUP"
    # the new lease time reached dnsmasq's UCI through the daemon
    assert router.run("uci", "get", "dhcp.lan.leasetime").stdout.strip() == "12h"


# -------------------------------------------------------------------------- rpcd and uhttpd


def test_luci_call_through_rpcd_session_with_read_only_acl(router: OpenWrtRouter) -> None:
    sid = login(router, VIEWER)
    answer = jsonrpc(router, sid, "energyhub", "status", {})
    code, status = answer["result"]
    assert code == 0 and status["daemon"]["platform"] == "openwrt"
    denied = jsonrpc(router, sid, "energyhub", "reload", {})
    assert denied["error"]["code"] == -32002  # uhttpd: "Access denied"
    nobody = jsonrpc(router, NO_SESSION, "energyhub", "status", {})
    assert nobody["error"]["code"] == -32002


def test_luci_call_through_rpcd_session_with_admin_acl(router: OpenWrtRouter) -> None:
    sid = login(router, ADMIN)
    code, answer = jsonrpc(router, sid, "energyhub", "reload", {})["result"]
    assert code == 0 and answer["applied"] is True
    # the daemon names a bad argument even though rpcd added ubus_rpc_session
    code, refused = jsonrpc(router, sid, "energyhub", "tunnel", {"action": "up"})["result"]
    assert code == 0 and refused["method"] == "tunnel"
    assert "'action'" in refused["error"]


def test_wrong_password_gets_no_session(router: OpenWrtRouter) -> None:
    answer = jsonrpc(
        router, NO_SESSION, "session", "login", {"username": ADMIN[0], "password": "nope"}
    )
    assert answer["result"][0] != 0


# ----------------------------------------------------------------------------- energyhubctl


def test_energyhubctl_refusal_exits_non_zero_with_the_daemons_sentence(
    router: OpenWrtRouter,
) -> None:
    proc = router.run("energyhubctl", "tunnel", "open")
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.strip() == (
        "energyhubctl: tunnel: the support tunnel is disabled in the configuration"
    )


def test_energyhubctl_status_over_ubus(router: OpenWrtRouter) -> None:
    proc = router.run("energyhubctl", "status", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["daemon"]["platform"] == "openwrt"


def test_energyhubctl_hands_its_timeout_to_ubus(router: OpenWrtRouter) -> None:
    # A recording wrapper in front of the real ubus: the call still goes to the daemon.
    router.sh(
        'mkdir -p /tmp/rec && printf \'#!/bin/sh\\necho "$@" >>/tmp/rec/args\\n'
        'exec /bin/ubus "$@"\\n\' >/tmp/rec/ubus && chmod 755 /tmp/rec/ubus',
        check=True,
    )
    proc = router.sh(
        "PATH=/tmp/rec:$PATH energyhubctl diagnose --timeout 45 --no-wait --json >/dev/null"
    )
    assert proc.returncode in (0, 3), proc.stderr
    assert router.run("cat", "/tmp/rec/args").stdout.split()[:2] == ["-t", "55"]


@pytest.mark.parametrize(
    ("script", "reason"),
    [
        ("call_ubus('no_such_method', {})", "method not found"),
        ("OBJ.OBJECT = 'no_such_object'; call_ubus('status', {})", "is energyhubd running?"),
    ],
)
def test_real_ubus_failures_become_short_sentences(
    router: OpenWrtRouter, script: str, reason: str
) -> None:
    code = (
        "import energyhubd.control.ubus_client as OBJ\n"
        "from energyhubd.control.ubus_client import call_ubus\n"
        "from energyhubd.control.client import ControlError\n"
        f"try:\n    {script}\nexcept ControlError as exc:\n    print('ERR', exc)\n"
    )
    out = router.run("python3", "-c", code, check=True).stdout.strip()
    assert out.startswith("ERR ubus call")
    assert out.endswith(reason)
    assert "Usage" not in out


def test_real_ubus_exit_codes_map_to_short_messages(router: OpenWrtRouter) -> None:
    from energyhubd.control.ubus_client import failure_reason

    # rpcd refuses a login without arguments: INVALID_ARGUMENT, and the CLI, its stderr not
    # being a terminal, exits with -2 (254) and prints its whole usage text.
    proc = router.run("ubus", "call", "session", "login", "{}")
    assert proc.returncode == 254 and "Usage:" in proc.stderr
    assert failure_reason(proc.returncode) == "invalid argument"
    proc = router.run("ubus", "call", "energyhub", "status", "not json")
    assert proc.returncode == 244
    assert failure_reason(proc.returncode) == "the arguments are not valid JSON"


# ---------------------------------------------------------- fw4, dnsmasq, sysntpd, LAN client


def _tables(router: OpenWrtRouter) -> set[str]:
    out = router.run("nft", "list", "tables").stdout
    return {line.split(None, 1)[1] for line in out.splitlines() if line.startswith("table ")}


def test_firewall_restart_and_fw4_flush_bring_our_table_back(router: OpenWrtRouter) -> None:
    assert {"inet fw4", "inet energyhub"} <= _tables(router)
    repairs = ubus_json(router, "energyhub", "status")["policy"]["drift_repairs"]
    router.run("service", "firewall", "restart", check=True)
    wait_until(
        "both tables after a firewall restart",
        lambda: {"inet fw4", "inet energyhub"} <= _tables(router),
    )
    router.run("fw4", "flush", check=True)
    wait_until("our table after fw4 flush", lambda: "inet energyhub" in _tables(router))
    assert "inet fw4" not in _tables(router)  # fw4 flush removes fw4's own table
    router.run("service", "firewall", "start", check=True)
    wait_until("both tables again", lambda: {"inet fw4", "inet energyhub"} <= _tables(router))
    fw4 = router.run("nft", "list", "table", "inet", "fw4").stdout
    assert "chain input_wan" in fw4 and "chain forward_lan" in fw4
    status = ubus_json(router, "energyhub", "status")
    assert status["policy"]["drift_repairs"] > repairs


def _lease(router: OpenWrtRouter, *extra: str) -> str:
    proc = subprocess.run(
        ["ip", "netns", "exec", router.lan_ns, "busybox", "udhcpc", "-i", "eth0", "-n", "-q",
         "-t", "5", "-T", "2", "-s", "/bin/true", *extra],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    for line in (proc.stdout + proc.stderr).splitlines():
        if "lease of " in line:
            return line.split("lease of ", 1)[1].split()[0]
    raise AssertionError(f"no lease: {proc.stdout} {proc.stderr}")


def test_display_gets_200_from_dnsmasq_started_by_its_init_script(router: OpenWrtRouter) -> None:
    # the daemon's first apply reloads dnsmasq with its DHCP plan: wait for the instance
    wait_until("dnsmasq runs as a procd instance", lambda: instance_pid(router, "dnsmasq"))
    conf = router.sh("cat /var/etc/dnsmasq.conf*").stdout
    assert "dhcp-range=" in conf and "dhcp-script=" in conf
    ip = _lease(router, "-x", "hostname:display")
    assert ip == "192.168.254.200"
    # dhcp-script.sh -> /etc/hotplug.d/dhcp/90-energyhubd -> SIGUSR1 -> the daemon re-reads
    devices = wait_until(
        "the daemon lists the display",
        lambda: [
            d
            for d in ubus_json(router, "energyhub", "devices")["devices"]
            if d.get("lease_ip") == ip
        ],
    )
    assert devices[0]["role"] == "display"


def test_forward_allowed_by_fw4_and_our_table_together(router: OpenWrtRouter) -> None:
    wait_until(
        "wan up by DHCP from the customer network",
        lambda: ubus_json(router, "network.interface.wan", "status").get("up"),
    )
    wan = ubus_json(router, "network.interface.wan", "status")
    assert wan["proto"] == "dhcp"
    ip = _lease(router, "-x", "hostname:unit1")
    # udhcpc ran with a no-op script: the test configures what the lease says
    for cmd in (["addr", "replace", f"{ip}/24", "dev", "eth0"],
                ["route", "replace", "default", "via", "192.168.254.1"]):  # fmt: skip
        subprocess.run(["ip", "-n", router.lan_ns, *cmd], check=True)
    ping = subprocess.run(
        ["ip", "netns", "exec", router.lan_ns, "ping", "-c", "1", "-W", "3", "198.51.100.1"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert ping.returncode == 0, ping.stdout + ping.stderr


def _wan_addresses(router: OpenWrtRouter) -> list[str]:
    out = router.run("ip", "-4", "-o", "addr", "show", "dev", "wan").stdout
    return [line.split()[3] for line in out.splitlines()]


def test_wan_static_then_dhcp_through_netifd(router: OpenWrtRouter) -> None:
    router.sh(
        "uci set energyhub.wan.proto=static && uci set energyhub.wan.address=198.51.100.10/24"
        " && uci set energyhub.wan.gateway=198.51.100.1"
        " && uci add_list energyhub.wan.dns=198.51.100.1"
        " && uci commit energyhub && reload_config",
        check=True,
    )
    wait_until("netifd set the static WAN", lambda: _wan_addresses(router) == ["198.51.100.10/24"])
    assert router.run("uci", "get", "network.wan.proto").stdout.strip() == "static"
    assert router.run("uci", "get", "network.wan.gateway").stdout.strip() == "198.51.100.1"
    status = wait_until(
        "the daemon reports netifd's static WAN",
        lambda: (
            (s := try_status(router))
            and s["wan"]["netifd"]["proto"] == "static"
            and s["wan"]["netifd"]["addresses"]
            and s
        ),
        timeout=30,
    )
    netifd = status["wan"]["netifd"]
    assert netifd["addresses"] == ["198.51.100.10/24"]
    assert netifd["gateway"] == "198.51.100.1" and netifd["dns"] == ["198.51.100.1"]
    assert router.run("ip", "route", "show", "default").stdout.startswith(
        "default via 198.51.100.1 dev wan"
    )
    # back to DHCP: the static options go, netifd's udhcpc gets a lease from the customer net
    router.sh(
        "uci set energyhub.wan.proto=dhcp && uci delete energyhub.wan.address"
        " && uci delete energyhub.wan.gateway && uci delete energyhub.wan.dns"
        " && uci commit energyhub && reload_config",
        check=True,
    )
    addresses = wait_until(
        "a DHCP address and no static one",
        lambda: (a := _wan_addresses(router)) and "198.51.100.10/24" not in a and a,
        timeout=30,
    )
    assert addresses[0].startswith("198.51.100.1") and addresses[0].endswith("/24")
    for option in ("ipaddr", "netmask", "gateway", "dns"):
        assert router.run("uci", "-q", "get", f"network.wan.{option}").returncode != 0
    status = wait_until(
        "the daemon reports the WAN up by DHCP (the interface trigger reloads it)",
        lambda: (
            (s := try_status(router))
            and s["wan"]["netifd"]["proto"] == "dhcp"
            and s["wan"]["netifd"]["addresses"] == addresses
            and s
        ),
        timeout=30,
    )
    assert status["wan"]["netifd"]["up"] is True


def test_ntp_and_dns_fallback_reach_sysntpd_and_dnsmasq(router: OpenWrtRouter) -> None:
    servers = router.run("uci", "get", "system.ntp.server").stdout.split()
    assert servers == [NTP_SERVER]
    chrony = wait_until(
        "sysntpd runs with the configured server",
        lambda: f"server {NTP_SERVER} iburst" in router.sh("cat /var/etc/chrony.conf").stdout,
    )
    assert chrony
    assert instance_pid(router, "sysntpd")
    conf = router.sh("cat /var/etc/dnsmasq.conf*").stdout
    assert f"server={DNS_FALLBACK}" in conf


def test_upgrade_keeps_a_disabled_service_stopped(router: OpenWrtRouter) -> None:
    # default_postinst starts a package's init scripts after every upgrade; an operator's
    # "service energyhubd disable" must hold through it, an enabled service must come back.
    router.sh("/etc/init.d/energyhubd disable && /etc/init.d/energyhubd stop", check=True)
    wait_until("the daemon stopped", lambda: not daemons(router), timeout=30)
    router.sh("PKG_UPGRADE=1 /etc/init.d/energyhubd start", check=True)
    # the init script hands its instances to procd before it returns: none this time
    services = ubus_json(router, "service", "list", {"name": "energyhubd"})
    assert not services.get("energyhubd", {}).get("instances")
    assert daemons(router) == []
    router.sh("/etc/init.d/energyhubd enable", check=True)
    router.sh("PKG_UPGRADE=1 /etc/init.d/energyhubd start", check=True)
    router.run("ubus", "-t", "30", "wait_for", "energyhub", check=True, timeout=40)
    assert wait_until("the daemon answers again", lambda: try_status(router), timeout=30)


def test_daemon_re_registers_after_ubusd_restart(router: OpenWrtRouter) -> None:
    # near the end: rpcd does not re-register its objects (session, uci) on a new ubusd
    before = int(router.run("pidof", "ubusd", check=True).stdout.split()[0])
    daemon = ubus_json(router, "energyhub", "status")["daemon"]["pid"]
    router.run("kill", "-9", str(before), check=True)  # procd restarts ubusd at once
    status = wait_until(
        "energyhub back on the new ubusd",
        lambda: (
            router.run("pidof", "ubusd").stdout.split() not in ([], [str(before)])
            and try_status(router)
        ),
        timeout=30,
    )
    assert status["daemon"]["pid"] == daemon  # the same process reconnected


def test_without_ujail_the_daemon_runs_unjailed_with_root_capabilities(
    router: OpenWrtRouter,
) -> None:
    # the init script's other branch (no procd-ujail package); last test: it changes the router
    router.sh("rm /sbin/ujail && /etc/init.d/energyhubd restart", check=True)
    pid = wait_until(
        "the unjailed daemon answers",
        lambda: (
            (status := try_status(router))
            and status["daemon"]["pid"] == instance_pid(router, "energyhubd")
            and status["daemon"]["pid"]
        ),
        timeout=30,
    )
    services = ubus_json(router, "service", "list", {"name": "energyhubd"})
    instance = services["energyhubd"]["instances"]["energyhubd"]
    assert "jail" not in instance and "capabilities" not in instance
    assert _caps(router, pid)["CapBnd"] == _caps(router, 1)["CapBnd"]
