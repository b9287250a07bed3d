"""A whole EnergyHub site in network namespaces.

::

    customer network 198.51.100.0/24 (ns <p>-cust: bridge, DHCP+DNS server at .1)
      |-- <p>-scada   198.51.100.20  the customer's Modbus client (allowed source)
      |-- <p>-guest   198.51.100.21  another customer host (not allowed)
      |-- <p>-router  runs `energyhubd run --wan-dhcp` (udhcpc on wan, dnsmasq on br-lan)
            |-- br-lan 192.168.254.1/24 -- lan1 --> <p>-sw (the unmanaged switch)
                  |-- <p>-display  udhcpc, fixed MAC, reserved .200
                  |-- <p>-unit1..3 udhcpc, fixed MACs (unit1 reserved .201, Modbus server)

The lab plays netifd's part on the router (the bridge); the WAN DHCP client and everything
else is energyhubd's. All state lives under /run/energyhubd-lab/<prefix>, so ``down`` can clean up
after a crash.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from energyhub_lab import internet, netns
from energyhub_lab import portal as lab_portal
from energyhub_lab.netns import LabError
from energyhubd.control.client import ControlError, call

LAB_ROOT = Path("/run/energyhubd-lab")
# Margins that hold on a loaded 2-core machine (every wait returns as soon as its condition
# holds, so a margin costs nothing when all is well). Measured: the first `lab check` under
# load failed waiting 20 s for the display's lease; udhcpc here retries for 20 s, pauses 1 s
# and starts over, and dnsmasq, the hook and the daemon share the same two busy cores.
DHCP_WAIT = 90.0
DAEMON_WAIT = 60.0
EVENT_WAIT = 30.0
CUSTOMER_GW = "198.51.100.1"
SCADA_IP = "198.51.100.20"
GUEST_IP = "198.51.100.21"
ROUTER_PORTS = (22, 80, 443, 502, 1883, 8883)
CUSTOMER_SERVICE_PORT = 8080
MODBUS_PORT = 502
UNIT2_FORWARD_PORT = 8502
DEVICE_ID = "eh-lab"
CONFIRM_WINDOW = 15
UNIT_VENDOR_CLASS = "ferroamp-energyhub"  # what the lab's inventory accepts as a unit
TUNNEL_REMOTE_PORT = 20022  # the gateway-side port of the router's reverse tunnel

UDHCPC_SCRIPT = """#!/bin/sh
# udhcpc hook for lab hosts: configure only this namespace's interface and routes.
# It never writes /etc/resolv.conf (namespaces share the host's file system).
# (The router's WAN client is the daemon's own, with the daemon's hook.)
case "$1" in
  deconfig)
    ip -4 addr flush dev "$interface"
    ;;
  bound|renew)
    ip -4 addr flush dev "$interface"
    ip addr add "$ip/$mask" dev "$interface"
    if [ -n "$router" ]; then
      ip route replace default via "${router%% *}" dev "$interface"
    fi
    if [ -n "$LAB_RESOLV" ]; then
      : > "$LAB_RESOLV.tmp"
      for server in $dns; do echo "nameserver $server" >> "$LAB_RESOLV.tmp"; done
      mv "$LAB_RESOLV.tmp" "$LAB_RESOLV"
    fi
    ;;
esac
exit 0
"""


@dataclass(frozen=True)
class Client:
    """A LAN device: the display or an EnergyHub unit (or a stranger)."""

    name: str
    mac: str
    hostname: str
    vendor_class: str | None = None  # DHCP option 60, sent with ``udhcpc -V``


@dataclass
class Site:
    prefix: str = "eh"
    units: int = 3
    python: str = field(default_factory=lambda: sys.executable)
    # Extra environment of the daemon (e.g. PYTHONPATH of a python3-ubus build)
    daemon_env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.dir = LAB_ROOT / self.prefix
        self.internet: internet.InternetServices | None = None
        self.up_at: float | None = None  # when up() began: no lease of the site is older
        self.clients = [Client("display", "02:eb:00:00:00:01", "display")]
        for i in range(1, self.units + 1):
            self.clients.append(Client(f"unit{i}", f"02:eb:00:00:01:{i:02x}", f"energyhub-unit{i}"))

    # -- names --------------------------------------------------------------------------
    def ns(self, role: str) -> str:
        return f"{self.prefix}-{role}"

    @property
    def router(self) -> str:
        return self.ns("router")

    @property
    def socket(self) -> str:
        return str(self.dir / "energyhubd.sock")

    @property
    def config_path(self) -> Path:
        return self.dir / "router.json"

    @property
    def lease_file(self) -> Path:
        return self.dir / "router-state" / "dnsmasq" / "dhcp.leases"

    @property
    def internet_dir(self) -> Path:
        return self.dir / "internet"

    @property
    def inet(self) -> str:
        """The namespace of the lab's internet (portal broker, DNS, gateway, S3, NTP)."""
        return f"{self.prefix}-inet"

    @property
    def netns_etc(self) -> Path:
        """``ip netns exec`` mounts this directory's resolv.conf over the router's."""
        return Path("/etc/netns") / self.router

    @property
    def portal_log(self) -> Path:
        """Every message the router published to the portal, as the recorder saw it."""
        return self.dir / f"{lab_portal.RECORDER}.log"

    def push(self, document: dict[str, Any] | bytes | None) -> None:
        """Publish a desired configuration as the portal does (retained; None clears it)."""
        lab_portal.push(self.inet, self.internet_dir, DEVICE_ID, document)

    def command(self, command: dict[str, Any]) -> None:
        """Send a portal command (``energyhub/<id>/command``), e.g. to open the tunnel."""
        name = lab_portal.topic(DEVICE_ID, "command")
        lab_portal.publish(self.inet, self.internet_dir, name, command)

    def portal_settings(self) -> dict[str, Any]:
        """The router's portal section: the lab broker under the production name, mutual TLS."""
        return {
            "host": internet.BROKER_NAME,
            "ca_file": str(self.internet_dir / "lab-ca.pem"),
            "cert_file": str(self.internet_dir / "router-client.pem"),
            "key_file": str(self.internet_dir / "router-client.key"),
            "health_interval": 60,
            "confirm_window": CONFIRM_WINDOW,
            "backoff_initial": 0.5,
            "backoff_max": 4,
        }

    def outbound_settings(self) -> dict[str, Any]:
        """Every required outbound flow pointed at the lab's internet, trusted via the lab CA."""
        return {
            "broker_host": internet.BROKER_NAME,
            "gateway_address": internet.GATEWAY_IP,
            "gateway_port": 2443,
            "ntp_servers": list(internet.NTP_NAMES),
            "update_host": internet.S3_NAME,
            "ca_file": str(self.internet_dir / "lab-ca.pem"),
            "ip_ranges_file": str(self.internet_dir / "ip-ranges.json"),
            "timeout": 2,
            "tunnel": self.tunnel_settings(),
        }

    def tunnel_settings(self) -> dict[str, Any]:
        """On demand, to the lab gateway, with its host key pinned (read once the lab is up)."""
        host_key = self.internet_dir / "gw_host_ed25519.pub"
        if not host_key.exists():
            return {"mode": "disabled"}
        return {
            "mode": "on_demand",
            "user": "root",
            "key_file": str(self.internet_dir / "tunnel_ed25519"),
            "remote_port": TUNNEL_REMOTE_PORT,
            "host_key": " ".join(host_key.read_text().split()[:2]),
            "expiry_hours": 1,
        }

    def namespaces(self) -> list[str]:
        return [n for n in netns.list_namespaces() if n.startswith(f"{self.prefix}-")]

    # -- configuration ------------------------------------------------------------------
    def router_config(self) -> dict[str, Any]:
        display = self.clients[0]
        unit1 = self.clients[1]
        return {
            "schema": 1,
            "version": 1,
            "device_id": DEVICE_ID,
            "platform": "linux",
            "state_dir": str(self.dir / "router-state"),
            "wan": {"device": "wan", "proto": "dhcp"},
            "lan": {
                "device": "br-lan",
                "address": "192.168.254.1/24",
                "dhcp": {
                    "start": "192.168.254.200",
                    "end": "192.168.254.244",
                    "lease_time": "24h",
                    "reservations": [
                        {"name": "display", "mac": display.mac, "ip": "192.168.254.200"},
                        {"name": "unit1", "mac": unit1.mac, "ip": "192.168.254.201"},
                    ],
                },
            },
            "forwards": [
                {
                    "name": "modbus",
                    "proto": "tcp",
                    "port": MODBUS_PORT,
                    "target": "unit1",
                    "allow_from": [SCADA_IP],
                },
                {
                    # Follows unit2 (no reservation) wherever its lease puts it.
                    "name": "unit2-modbus",
                    "proto": "tcp",
                    "port": UNIT2_FORWARD_PORT,
                    "target": self.clients[2].mac,
                    "target_port": MODBUS_PORT,
                    "allow_from": [SCADA_IP],
                },
            ],
            "inventory": {"expected_units": self.units, "unit_vendor_classes": [UNIT_VENDOR_CLASS]},
            "dns": {"fallback": [CUSTOMER_GW]},
            "control": {"socket": self.socket},
            "portal": self.portal_settings(),
            "outbound": self.outbound_settings(),
        }

    def write_config(self, document: dict[str, Any] | None = None) -> None:
        text = json.dumps(document or self.router_config(), indent=2) + "\n"
        self.config_path.write_text(text)

    # -- life cycle ---------------------------------------------------------------------
    def up(self, progress: Callable[[str], None] = lambda _m: None) -> None:
        """Build the site and start everything; on failure, tear down what was built."""
        if self.namespaces():
            raise LabError(
                f"a lab with prefix {self.prefix!r} is already up "
                f"(run `energyhubd lab down --prefix {self.prefix}`)"
            )
        self.up_at = time.time()
        try:
            self._build(progress)
        except BaseException:
            self.down()
            raise

    def _build(self, progress: Callable[[str], None]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        script = self.dir / "udhcpc.sh"
        script.write_text(UDHCPC_SCRIPT)
        script.chmod(0o755)
        progress("namespaces and links")
        for role in ("cust", "scada", "guest", "router", "sw", *(c.name for c in self.clients)):
            netns.add_namespace(self.ns(role))
        cust, router, sw = self.ns("cust"), self.router, self.ns("sw")
        # Customer network.
        netns.veth(cust, "to-router", router, "wan")
        netns.veth(cust, "to-scada", self.ns("scada"), "eth0")
        netns.veth(cust, "to-guest", self.ns("guest"), "eth0")
        netns.bridge(cust, "br-cust", ["to-router", "to-scada", "to-guest"])
        netns.ip(cust, "addr", "add", f"{CUSTOMER_GW}/24", "dev", "br-cust")
        for role, addr in (("scada", SCADA_IP), ("guest", GUEST_IP)):
            netns.ip(self.ns(role), "addr", "add", f"{addr}/24", "dev", "eth0")
            netns.ip(self.ns(role), "route", "add", "default", "via", CUSTOMER_GW)
        # The router's LAN side: br-lan with one port to the unmanaged switch.
        netns.veth(router, "lan1", sw, "uplink")
        netns.bridge(router, "br-lan", ["lan1"])
        # Short neighbour timers so a pulled cable shows within seconds, not a minute.
        netns.ns_run(
            router,
            [
                "sysctl",
                "-q",
                "-w",
                "net.ipv4.neigh.br-lan.base_reachable_time_ms=4000",
                "net.ipv4.neigh.br-lan.delay_first_probe_time=1",
            ],
        )
        ports = ["uplink"]
        for client in self.clients:
            port = f"p-{client.name}"
            netns.veth(sw, port, self.ns(client.name), "eth0", mac_b=client.mac)
            ports.append(port)
        netns.bridge(sw, "sw", ports)

        progress("internet: DNS, portal broker, gateway, S3, NTP")
        self.internet = internet.add_internet(self.dir, cust, self.prefix, require_client_cert=True)
        ca = self.internet.ca_file
        internet.make_leaf(
            self.internet_dir,
            "router-client",
            (ca, ca.with_suffix(".key")),
            [DEVICE_ID],
            usage="clientAuth",
        )
        self.spawn(
            self.inet,
            lab_portal.RECORDER,
            lab_portal.recorder_command(self.internet_dir, DEVICE_ID),
        )
        # The router resolves the portal name through the customer's DNS, as on a real site.
        self.netns_etc.mkdir(parents=True, exist_ok=True)
        (self.netns_etc / "resolv.conf").write_text(f"nameserver {CUSTOMER_GW}\n")
        progress("customer DHCP server")
        self.spawn(
            cust,
            "cust-dnsmasq",
            [
                "dnsmasq",
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--interface=br-cust",
                "--bind-interfaces",
                "--user=root",
                "--group=root",
                "--dhcp-range=198.51.100.100,198.51.100.149,255.255.255.0,1h",
                f"--dhcp-option=option:router,{CUSTOMER_GW}",
                f"--dhcp-option=option:dns-server,{CUSTOMER_GW}",
                f"--dhcp-leasefile={self.dir / 'cust.leases'}",
                f"--pid-file={self.dir / 'cust-dnsmasq.pid'}",
                "--log-facility=-",
                "--address=/customer.lab/198.51.100.1",
                f"--server={internet.DNS_IP}",
            ],
        )
        progress("listeners")
        self.spawn(router, "router-listeners", self.probe_serve("router", ROUTER_PORTS))
        for role in ("scada", "guest"):
            self.spawn(
                self.ns(role), f"{role}-listener", self.probe_serve(role, (CUSTOMER_SERVICE_PORT,))
            )
        for unit in ("unit1", "unit2"):
            self.spawn(self.ns(unit), f"{unit}-listener", self.probe_serve(unit, (MODBUS_PORT,)))

        progress("energyhubd run")
        self.write_config()
        self.start_daemon()
        progress("router WAN address by DHCP (the daemon's udhcpc)")
        self.wait_for(
            lambda: self.address_of(router, "wan") is not None,
            DHCP_WAIT,
            "the router got no WAN address from the customer network",
        )
        progress("LAN clients by DHCP")
        for client in self.clients:
            self.start_dhcp_client(client)
        for client in self.clients:
            self.wait_for_address(
                self.ns(client.name),
                "eth0",
                DHCP_WAIT,
                f"{client.name} got no DHCP lease from the router",
            )

    def add_client(self, client: Client) -> str:
        """Plug another device into the switch; returns its address once it has a lease."""
        ns = self.ns(client.name)
        netns.add_namespace(ns)
        port = f"p-{client.name}"[:15]
        netns.veth(self.ns("sw"), port, ns, "eth0", mac_b=client.mac)
        netns.ip(self.ns("sw"), "link", "set", port, "master", "sw")
        self.start_dhcp_client(client)
        self.wait_for_address(ns, "eth0", DHCP_WAIT, f"{client.name} got no DHCP lease")
        address = self.address_of(ns, "eth0")
        assert address is not None
        return address

    def start_dhcp_client(self, client: Client, request: str | None = None) -> None:
        cmd = self.udhcpc("eth0", client.hostname)
        if client.vendor_class:
            cmd += ["-V", client.vendor_class]
        if request:
            cmd += ["-r", request]
        self.spawn(self.ns(client.name), f"{client.name}-udhcpc", cmd)

    def stop_dhcp_client(self, client: Client) -> None:
        """End the client's udhcpc, which releases its lease (-R) and drops the address."""
        pid = int((self.dir / f"{client.name}-udhcpc.pid").read_text())
        os.kill(pid, 15)
        self.wait_for(
            lambda: not netns.process_alive(pid), EVENT_WAIT, f"{client.name} udhcpc lingers"
        )
        netns.ip(self.ns(client.name), "-4", "addr", "flush", "dev", "eth0")

    def remove_client(self, name: str) -> None:
        """Pull the cable: the device's namespace and link disappear without a release."""
        netns.delete_namespace(self.ns(name))

    def client(self, name: str) -> Client:
        return next(c for c in self.clients if c.name == name)

    def start_daemon(self) -> None:
        cmd = [
            self.python,
            "-m",
            "energyhubd.cli",
            "run",
            "--config",
            str(self.config_path),
            "--pid-file",
            str(self.dir / "energyhubd.pid"),
            "--resolv-file",
            str(self.dir / "router-resolv.conf"),
            "--wan-dhcp",  # the daemon runs the WAN's DHCP client, as on a real Linux router
        ]
        self.spawn(self.router, "energyhubd", cmd, env=self.daemon_env or None)
        self.wait_for(
            self._daemon_ready,
            DAEMON_WAIT,
            f"energyhubd did not report an applied policy (see {self.dir / 'energyhubd.log'})",
        )

    def _daemon_ready(self) -> bool:
        try:
            status = call(self.socket, "status", timeout=2)
        except ControlError:
            return False
        return bool(status.get("policy", {}).get("state") == "applied")

    def daemon_pid(self) -> int | None:
        try:
            return int((self.dir / "energyhubd.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def down(self) -> None:
        """Remove every namespace and process of this lab; safe to call at any time."""
        pid = self.daemon_pid()
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 15)
        for ns in self.namespaces():
            netns.delete_namespace(ns)
        shutil.rmtree(self.netns_etc, ignore_errors=True)
        if self.dir.exists():
            shutil.rmtree(self.dir, ignore_errors=True)

    # -- helpers ------------------------------------------------------------------------
    def spawn(
        self, ns: str, name: str, cmd: list[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        proc = netns.spawn_logged(ns, cmd, self.dir / f"{name}.log", env)
        (self.dir / f"{name}.pid").write_text(f"{proc.pid}\n")
        return proc

    def udhcpc(self, ifname: str, hostname: str) -> list[str]:
        return [
            "udhcpc",
            "-f",
            "-R",
            "-i",
            ifname,
            "-s",
            str(self.dir / "udhcpc.sh"),
            "-x",
            f"hostname:{hostname}",
            "-t",
            "20",
            "-T",
            "1",
            "-A",
            "1",
        ]

    def probe_serve(self, name: str, ports: tuple[int, ...]) -> list[str]:
        cmd = [self.python, "-m", "energyhub_lab.probe", "serve", "--name", name]
        for port in ports:
            cmd += ["--port", str(port)]
        return cmd

    def probe_connect(
        self, ns: str, host: str, port: int, timeout: float = 1.5
    ) -> tuple[bool, str]:
        proc = subprocess.run(
            netns.ns_cmd(
                ns,
                [
                    self.python,
                    "-m",
                    "energyhub_lab.probe",
                    "connect",
                    host,
                    str(port),
                    "--timeout",
                    str(timeout),
                ],
            ),
            capture_output=True,
            text=True,
            timeout=timeout + 15,
        )
        return proc.returncode == 0, proc.stdout.strip() or proc.stderr.strip()

    def address_of(self, ns: str, ifname: str) -> str | None:
        out = netns.ip(ns, "-4", "-o", "addr", "show", "dev", ifname, check=False)
        for line in out.splitlines():
            parts = line.split()
            if "inet" in parts:
                return parts[parts.index("inet") + 1].split("/")[0]
        return None

    def wait_for_address(self, ns: str, ifname: str, timeout: float, message: str) -> None:
        self.wait_for(lambda: self.address_of(ns, ifname) is not None, timeout, message)

    @staticmethod
    def wait_for(predicate: Callable[[], bool], timeout: float, message: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.1)
        raise LabError(message)

    def status(self) -> dict[str, Any]:
        return call(self.socket, "status")

    def energyhubd(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run an energyhubd admin verb inside the router namespace."""
        return subprocess.run(
            netns.ns_cmd(self.router, [self.python, "-m", "energyhubd.cli", *args]),
            capture_output=True,
            text=True,
            timeout=60,
        )
