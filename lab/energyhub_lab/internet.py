""" "Internet services" for a lab: stand-ins for every outbound flow the router needs.

::

    customer ns (<cust>)  to-inet 203.0.113.1/24  ----  eth0  ns <prefix>-inet
      nft table inet labswitch: block(flow) / intercept(flow) switches
                                                         203.0.113.53  DNS (dnsmasq)
                                                         203.0.113.10  MQTT broker (mosquitto,
                                                                       TLS 8883 + plain 1883)
                                                         203.0.113.20  service gateway (sshd 2443)
                                                         203.0.113.30  "S3" (HTTP 80, HTTPS 443)
                                                         203.0.113.40  NTP (chronyd, -x)
                                                         203.0.113.99  any other internet host

The DNS server answers the production names (``data2.ferroamp.se``, the S3 name, the NTP pool
names) with these lab addresses; nothing here has a route to the real internet. Certificates
come from a lab CA made with ``openssl`` in the lab directory; ``intercept(flow)`` DNATs the
flow in the customer namespace to a TLS proxy that presents a certificate from another CA, as
an inspecting firewall would. Everything lives under ``dir`` and in the inet namespace;
``close()`` removes it. ``python -m energyhub_lab.internet`` runs the Python servers.
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from energyhub_lab import netns
from energyhub_lab.netns import LabError
from energyhubd.portal.topics import mosquitto_acl

INET_GW = "203.0.113.1"
DNS_IP = "203.0.113.53"
BROKER_IP = "203.0.113.10"
GATEWAY_IP = "203.0.113.20"
S3_IP = "203.0.113.30"
NTP_IP = "203.0.113.40"
OTHER_IP = "203.0.113.99"
OTHER_PORTS = (22, 80, 443, 1883, 2443, 5555, 8883)
# The largest MQTT message the lab broker takes: the upper bound of portal.max_push_bytes.
# With the directional ACL a device owns a fixed, small set of retained topics, so this also
# bounds what one device can park in the broker's retained store.
BROKER_MESSAGE_LIMIT = 1024 * 1024

BROKER_NAME = "data2.ferroamp.se"
S3_NAME = "s3.eu-central-1.amazonaws.com"
NTP_NAMES = ("0.openwrt.pool.ntp.org", "1.openwrt.pool.ntp.org")
NXDOMAIN_NAME = "missing.internet.lab"

SWITCH_TABLE = "labswitch"
PROXY_PORTS = {"update_https": 10443, "mqtt_tls": 18883}

# flow -> (destination, protocols, port); "dns" is the customer's own resolver (input).
FLOW_TARGETS: dict[str, tuple[str | None, tuple[str, ...], int]] = {
    "dns": (None, ("udp", "tcp"), 53),
    "dns_fallback": (DNS_IP, ("udp", "tcp"), 53),
    "ntp": (NTP_IP, ("udp",), 123),
    "mqtt_tls": (BROKER_IP, ("tcp",), 8883),
    "mqtt_plain": (BROKER_IP, ("tcp",), 1883),
    "gateway": (GATEWAY_IP, ("tcp",), 2443),
    "update_http": (S3_IP, ("tcp",), 80),
    "update_https": (S3_IP, ("tcp",), 443),
}


def _openssl(*args: str) -> None:
    netns.run(["openssl", *args])


def make_ca(directory: Path, name: str, cn: str, org: str) -> tuple[Path, Path]:
    """A self-signed CA: (cert, key)."""
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", str(key), "-out", str(cert), "-days", "30", "-subj", f"/CN={cn}/O={org}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    return cert, key


def make_leaf(
    directory: Path,
    name: str,
    ca: tuple[Path, Path],
    names: Sequence[str],
    usage: str = "serverAuth",
) -> tuple[Path, Path]:
    """A certificate for ``names`` signed by ``ca``: (cert chain, key). ``usage`` is the
    extended key usage: ``serverAuth`` for servers, ``clientAuth`` for a device's identity."""
    cert, key, csr = (directory / f"{name}{s}" for s in (".pem", ".key", ".csr"))
    ext = directory / f"{name}.ext"
    ext.write_text(
        f"basicConstraints=CA:FALSE\nextendedKeyUsage={usage}\n"
        "subjectAltName=" + ",".join(f"DNS:{n}" for n in names) + "\n"
    )
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={names[0]}",
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]),
        "-CAcreateserial", "-out", str(cert), "-days", "30", "-extfile", str(ext),
    )  # fmt: skip
    return cert, key


@dataclass
class InternetServices:
    """Handles to the lab's internet: addresses, trust material, switches, teardown."""

    dir: Path
    cust_ns: str
    ns: str
    ca_file: Path
    client_key: Path
    gateway_host_key: str
    ip_ranges_file: Path
    python: str = sys.executable
    require_client_cert: bool = False
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    blocked: dict[str, str] = field(default_factory=dict)
    intercepted: set[str] = field(default_factory=set)

    dns_address: str = DNS_IP
    broker_address: str = BROKER_IP
    gateway_address: str = GATEWAY_IP
    s3_address: str = S3_IP
    ntp_address: str = NTP_IP
    other_address: str = OTHER_IP
    gateway_port: int = 2443

    def outbound_config(self) -> dict[str, Any]:
        """The ``outbound`` section pointing every flow at this lab."""
        return {
            "broker_host": BROKER_NAME,
            "gateway_address": self.gateway_address,
            "gateway_port": self.gateway_port,
            "ntp_servers": list(NTP_NAMES),
            "update_host": S3_NAME,
            "ca_file": str(self.ca_file),
            "ip_ranges_file": str(self.ip_ranges_file),
            "timeout": 2,
        }

    # -- switches ----------------------------------------------------------------------
    def block(self, flow: str, how: str = "drop") -> None:
        """Make the customer network drop (or ``reject``) one flow.

        ``drop-new`` drops only new connections: established ones keep working, as after a
        firewall change that conntrack has not caught up with.
        """
        if flow not in FLOW_TARGETS:
            raise LabError(f"unknown flow {flow!r} (known: {', '.join(FLOW_TARGETS)})")
        if how not in ("drop", "reject", "drop-new"):
            raise LabError("how must be drop, reject or drop-new")
        self.blocked[flow] = how
        self._apply_switches()

    def intercept(self, flow: str) -> None:
        """Put a TLS-inspecting proxy (certificate from another CA) in the flow's path."""
        if flow not in PROXY_PORTS:
            raise LabError(f"only {', '.join(PROXY_PORTS)} can be intercepted")
        name = f"proxy-{flow}"
        if name not in self.procs:
            dest, _protos, port = FLOW_TARGETS[flow]
            cert, key = self.dir / "inspect-leaf.pem", self.dir / "inspect-leaf.key"
            self._spawn(
                self.cust_ns,
                name,
                [
                    self.python, "-m", "energyhub_lab.internet", "tls-proxy",
                    "--listen", f"{INET_GW}:{PROXY_PORTS[flow]}",
                    "--upstream", f"{dest}:{port}", "--cert", str(cert), "--key", str(key),
                ],
            )  # fmt: skip
            _wait_tcp(self.cust_ns, INET_GW, PROXY_PORTS[flow], name)
        self.intercepted.add(flow)
        self._apply_switches()

    def clear(self) -> None:
        """Every flow open again, no interception."""
        self.blocked.clear()
        self.intercepted.clear()
        self._apply_switches()

    def _apply_switches(self) -> None:
        fwd: list[str] = []
        inp: list[str] = []
        nat: list[str] = []
        for flow, how in sorted(self.blocked.items()):
            dest, protos, port = FLOW_TARGETS[flow]
            for proto in protos:
                verdict = "reject with tcp reset" if (how == "reject" and proto == "tcp") else how
                if how == "drop-new":
                    verdict = "ct state new drop"
                if dest is None:
                    inp.append(f"{proto} dport {port} {verdict}")
                else:
                    fwd.append(f"ip daddr {dest} {proto} dport {port} {verdict}")
        for flow in sorted(self.intercepted):
            dest, _protos, port = FLOW_TARGETS[flow]
            nat.append(f"ip daddr {dest} tcp dport {port} dnat ip to {INET_GW}:{PROXY_PORTS[flow]}")
        text = (
            f"table inet {SWITCH_TABLE}\ndelete table inet {SWITCH_TABLE}\n"
            f"table inet {SWITCH_TABLE} {{\n"
            "  chain forward { type filter hook forward priority -5; policy accept;\n"
            + "".join(f"    {r}\n" for r in fwd)
            + "  }\n  chain input { type filter hook input priority -5; policy accept;\n"
            + "".join(f"    {r}\n" for r in inp)
            + "  }\n  chain prerouting { type nat hook prerouting priority -105; policy accept;\n"
            + "".join(f"    {r}\n" for r in nat)
            + "  }\n}\n"
        )
        path = self.dir / "switches.nft"
        path.write_text(text)
        # The filter chains see every packet (no conntrack shortcut), so a block acts on the
        # next packet; the DNAT of an interception applies to new connections.
        netns.ns_run(self.cust_ns, ["nft", "-f", str(path)])

    def start_customer_resolver(self, address: str) -> None:
        """The customer's DHCP-announced resolver at ``address`` (in ``cust_ns``), forwarding
        to the lab DNS. With ``Site``, add ``--server=DNS_IP`` to its customer dnsmasq instead.
        """
        self._spawn(
            self.cust_ns,
            "customer-dns",
            [
                "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv",
                "--no-hosts", f"--listen-address={address}", "--bind-interfaces",
                "--user=root", "--group=root", "--log-facility=-", f"--server={DNS_IP}",
                f"--pid-file={self.dir / 'customer-dns.pid'}",
            ],
        )  # fmt: skip
        _wait_tcp(self.cust_ns, address, 53, "the customer resolver")

    # -- gateway -----------------------------------------------------------------------
    def drop_ssh_sessions(self) -> int:
        """Kill the gateway's per-connection sshd processes (the gateway "drops" tunnels)."""
        listener = self.procs.get("sshd")
        count = 0
        for pid in netns.pids_in(self.ns):
            if listener is not None and pid == listener.pid:
                continue
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if cmdline.startswith(b"sshd:"):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, 15)
                    count += 1
        return count

    # -- life cycle --------------------------------------------------------------------
    def _spawn(self, ns: str, name: str, cmd: list[str]) -> subprocess.Popen[bytes]:
        proc = netns.spawn_logged(ns, cmd, self.dir / f"{name}.log")
        self.procs[name] = proc
        return proc

    def close(self) -> None:
        """Stop every service, remove the switches and the inet namespace."""
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=3)
        self.procs.clear()
        netns.ns_run(
            self.cust_ns,
            ["nft", "delete", "table", "inet", SWITCH_TABLE],
            check=False,
        )
        netns.delete_namespace(self.ns)


def portal_client_args(directory: Path) -> list[str]:
    """mosquitto_pub/sub options for the lab's portal side: mutual TLS as user "portal".

    ``--insecure`` skips only the host-name check (the broker is dialled by address inside
    the lab's internet namespace, which has no DNS); the chain is still verified.
    """
    return [
        "-h", BROKER_IP, "-p", "8883", "--cafile", str(directory / "lab-ca.pem"),
        "--cert", str(directory / "portal-client.pem"),
        "--key", str(directory / "portal-client.key"), "--insecure",
    ]  # fmt: skip


def _wait_tcp(ns: str, host: str, port: int, what: str, timeout: float = 10) -> None:
    script = (
        "import socket,sys\n"
        "try:\n"
        f"    socket.create_connection(({host!r}, {port}), timeout=0.5).close()\n"
        "except OSError:\n"
        "    sys.exit(1)\n"
    )
    _wait_script(ns, script, timeout, 0.1, f"{what} did not start listening on {host}:{port}")


def _wait_udp_ntp(ns: str, host: str, timeout: float = 10) -> None:
    script = (
        "import socket,sys\n"
        "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.settimeout(0.5)\n"
        f"s.connect(({host!r},123)); s.send(bytes([0x23])+bytes(47))\n"
        "try:\n    s.recv(512)\nexcept OSError:\n    sys.exit(1)\n"
    )
    _wait_script(ns, script, timeout, 0.2, f"the lab NTP server on {host} does not answer")


def _wait_script(ns: str, script: str, timeout: float, pause: float, failure: str) -> None:
    """Run a small probe in ``ns`` until it exits 0: a service has come up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proc = subprocess.run(
            netns.ns_cmd(ns, [sys.executable, "-c", script]), capture_output=True, timeout=10
        )
        if proc.returncode == 0:
            return
        time.sleep(pause)
    raise LabError(failure)


def add_internet(
    directory: str | Path, cust_ns: str, prefix: str, require_client_cert: bool = False
) -> InternetServices:
    """Create ``<prefix>-inet`` behind ``cust_ns`` and start every service; see module doc.

    ``cust_ns`` must be the namespace that routes for the customer network (198.51.100.1);
    its IPv4 forwarding is switched on. On failure everything started is removed again.
    """
    root = Path(directory) / "internet"
    root.mkdir(parents=True, exist_ok=True)
    inet = f"{prefix}-inet"
    netns.add_namespace(inet)
    services: InternetServices | None = None
    try:
        netns.veth(cust_ns, "to-inet", inet, "eth0")
        netns.ip(cust_ns, "addr", "add", f"{INET_GW}/24", "dev", "to-inet")
        netns.ns_run(cust_ns, ["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        for addr in (DNS_IP, BROKER_IP, GATEWAY_IP, S3_IP, NTP_IP, OTHER_IP):
            netns.ip(inet, "addr", "add", f"{addr}/24", "dev", "eth0")
        netns.ip(inet, "route", "add", "default", "via", INET_GW)
        services = _start_services(root, cust_ns, inet, require_client_cert)
        return services
    except BaseException:
        if services is not None:
            services.close()
        else:
            netns.delete_namespace(inet)
        raise


def _start_services(
    root: Path, cust_ns: str, inet: str, require_client_cert: bool = False
) -> InternetServices:
    ca = make_ca(root, "lab-ca", "EnergyHub Lab Root CA", "EnergyHub Lab")
    names = [BROKER_NAME, S3_NAME]
    leaf = make_leaf(root, "lab-leaf", ca, names)
    inspect_ca = make_ca(root, "inspect-ca", "Contoso Inspection CA", "Contoso Firewall")
    make_leaf(root, "inspect-leaf", inspect_ca, names)
    # Gateway keys: the host key the router pins, the client key the gateway authorises.
    host_key = root / "gw_host_ed25519"
    client_key = root / "tunnel_ed25519"
    for key in (host_key, client_key):
        netns.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "lab", "-f", str(key)])
    (root / "authorized_keys").write_text(Path(f"{client_key}.pub").read_text())
    pub = Path(f"{host_key}.pub").read_text().split()
    ranges = {
        "syncToken": "1700000000",
        "createDate": "2026-11-25-00-00-00",
        "prefixes": [
            {"ip_prefix": f"{S3_IP}/32", "region": "eu-central-1", "service": "S3",
             "network_border_group": "eu-central-1"},
            {"ip_prefix": f"{S3_IP}/32", "region": "eu-central-1", "service": "AMAZON",
             "network_border_group": "eu-central-1"},
        ],
        "ipv6_prefixes": [],
    }  # fmt: skip
    (root / "ip-ranges.json").write_text(json.dumps(ranges, indent=1))
    svc = InternetServices(
        dir=root,
        cust_ns=cust_ns,
        ns=inet,
        ca_file=ca[0],
        client_key=client_key,
        gateway_host_key=f"{pub[0]} {pub[1]}",
        ip_ranges_file=root / "ip-ranges.json",
        require_client_cert=require_client_cert,
    )
    try:
        _start_all(svc, root, leaf)
    except BaseException:
        svc.close()
        raise
    return svc


def _start_all(svc: InternetServices, root: Path, leaf: tuple[Path, Path]) -> None:
    inet = svc.ns
    dns_cmd = [
        "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv",
        "--no-hosts", f"--listen-address={DNS_IP}", "--bind-interfaces", "--user=root",
        "--group=root", "--log-facility=-", f"--pid-file={root / 'dns.pid'}",
        f"--address=/{BROKER_NAME}/{BROKER_IP}", f"--address=/{S3_NAME}/{S3_IP}",
        f"--address=/{NXDOMAIN_NAME}/",
        *(f"--address=/{n}/{NTP_IP}" for n in NTP_NAMES),
    ]  # fmt: skip
    svc._spawn(inet, "dns", dns_cmd)
    # chronyd: -x never touches the clock (it serves the host's), no sources, no cmd port.
    chrony_conf = root / "chrony.conf"
    chrony_conf.write_text(
        f"local stratum 3\nallow all\nbindaddress {NTP_IP}\nport 123\ncmdport 0\n"
        f"pidfile {root / 'chronyd.pid'}\ndriftfile {root / 'chrony.drift'}\n"
    )
    svc._spawn(inet, "ntp", ["chronyd", "-d", "-x", "-u", "root", "-f", str(chrony_conf)])
    # mosquitto as the portal broker. With client certificates, the certificate's CN is the
    # MQTT user and the ACL (energyhubd.portal.topics.mosquitto_acl, docs/fleet.md) confines
    # each device to its own topics BY DIRECTION; the lab's portal tools authenticate as
    # "portal" (see ``portal_client_args``). No listener accepts anonymous clients: port 1883
    # stays open (the router's outbound check dials it) but every CONNECT there is refused,
    # since a plain client can present no certificate, so nothing bypasses the ACL.
    (root / "mosquitto.acl").write_text(mosquitto_acl("portal"))
    if svc.require_client_cert:
        make_leaf(root, "portal-client", (svc.ca_file, svc.ca_file.with_suffix(".key")),
                  ["portal"], usage="clientAuth")  # fmt: skip
    mq = root / "mosquitto.conf"
    mq.write_text(
        "per_listener_settings false\nallow_anonymous false\npersistence false\n"
        f"user root\nlog_dest stderr\nacl_file {root / 'mosquitto.acl'}\n"
        f"message_size_limit {BROKER_MESSAGE_LIMIT}\n"
        f"listener 1883 {BROKER_IP}\n"
        f"listener 8883 {BROKER_IP}\ncertfile {leaf[0]}\nkeyfile {leaf[1]}\n"
        "tls_version tlsv1.2\n"
        + (
            f"require_certificate true\ncafile {svc.ca_file}\nuse_identity_as_username true\n"
            if svc.require_client_cert
            else "require_certificate false\n"
        )
    )
    svc._spawn(inet, "broker", ["mosquitto", "-c", str(mq)])
    if svc.require_client_cert:
        # The portal's side of the desired-state protocol (energyhub_lab.portal).
        _wait_tcp(inet, BROKER_IP, 8883, "mosquitto")
        (root / "desired").mkdir(exist_ok=True)
        standin = [svc.python, "-m", "energyhub_lab.portal", str(root), str(root / "desired")]
        svc._spawn(inet, "portal-standin", standin)
    # sshd as the service gateway.
    os.makedirs("/run/sshd", exist_ok=True)  # privilege separation directory
    sshd_conf = root / "sshd_config"
    sshd_conf.write_text(
        f"Port {svc.gateway_port}\nListenAddress {GATEWAY_IP}\n"
        f"HostKey {root / 'gw_host_ed25519'}\nPidFile {root / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {root / 'authorized_keys'}\nStrictModes no\nUsePAM no\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "PermitRootLogin prohibit-password\nAllowTcpForwarding remote\nGatewayPorts no\n"
        "ClientAliveInterval 5\nClientAliveCountMax 2\nPermitTTY no\nLogLevel VERBOSE\n"
    )
    svc._spawn(inet, "sshd", ["/usr/sbin/sshd", "-D", "-e", "-f", str(sshd_conf)])
    # "S3": HTTP and HTTPS.
    svc._spawn(
        inet,
        "s3",
        [
            svc.python, "-m", "energyhub_lab.internet", "s3", "--address", S3_IP,
            "--cert", str(leaf[0]), "--key", str(leaf[1]),
        ],
    )  # fmt: skip
    # Any other internet host.
    other_cmd = [svc.python, "-m", "energyhub_lab.probe", "serve", "--name", "internet-other"]
    other_cmd += ["--host", OTHER_IP]
    for port in OTHER_PORTS:
        other_cmd += ["--port", str(port)]
    svc._spawn(inet, "other", other_cmd)
    svc._apply_switches()
    for host, port, what in (
        (BROKER_IP, 8883, "mosquitto"),
        (BROKER_IP, 1883, "mosquitto"),
        (GATEWAY_IP, svc.gateway_port, "sshd"),
        (S3_IP, 443, "the S3 stand-in"),
        (S3_IP, 80, "the S3 stand-in"),
        (OTHER_IP, 5555, "the other internet host"),
    ):
        _wait_tcp(inet, host, port, what)
    _wait_udp_ntp(inet, NTP_IP)


# -- the Python servers (run inside namespaces) ---------------------------------------------


class _S3Handler(http.server.BaseHTTPRequestHandler):
    server_version = "AmazonS3"
    sys_version = ""

    def do_HEAD(self) -> None:
        self.send_response(403)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        body = b"<Error><Code>AccessDenied</Code></Error>"
        self.send_response(403)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        sys.stderr.write("s3: " + (format % args) + "\n")


def serve_s3(address: str, cert: str, key: str) -> int:
    plain = http.server.ThreadingHTTPServer((address, 80), _S3Handler)
    secure = http.server.ThreadingHTTPServer((address, 443), _S3Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    secure.socket = ctx.wrap_socket(secure.socket, server_side=True)
    threading.Thread(target=plain.serve_forever, daemon=True).start()
    secure.serve_forever()
    return 0


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := src.recv(65536):
            dst.sendall(data)
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)


def _proxy_one(conn: socket.socket, ctx: ssl.SSLContext, upstream: tuple[str, int]) -> None:
    with (
        contextlib.suppress(OSError, ssl.SSLError),
        ctx.wrap_socket(conn, server_side=True) as tls_in,
    ):
        client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        client_ctx.check_hostname = False
        client_ctx.verify_mode = ssl.CERT_NONE
        raw = socket.create_connection(upstream, timeout=5)
        with client_ctx.wrap_socket(raw) as tls_out:
            t = threading.Thread(target=_pipe, args=(tls_out, tls_in), daemon=True)
            t.start()
            _pipe(tls_in, tls_out)
            t.join(5)


def serve_tls_proxy(listen: str, upstream: str, cert: str, key: str) -> int:
    """An inspecting proxy: terminates TLS with its own certificate, relays upstream."""
    host, port = listen.rsplit(":", 1)
    up_host, up_port = upstream.rsplit(":", 1)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as srv:
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind((host, int(port)))
        srv.listen(16)
        while True:
            conn, _peer = srv.accept()
            threading.Thread(
                target=_proxy_one, args=(conn, ctx, (up_host, int(up_port))), daemon=True
            ).start()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="energyhub_lab.internet")
    sub = parser.add_subparsers(dest="cmd", required=True)
    s3 = sub.add_parser("s3")
    s3.add_argument("--address", required=True)
    s3.add_argument("--cert", required=True)
    s3.add_argument("--key", required=True)
    px = sub.add_parser("tls-proxy")
    px.add_argument("--listen", required=True)
    px.add_argument("--upstream", required=True)
    px.add_argument("--cert", required=True)
    px.add_argument("--key", required=True)
    args = parser.parse_args(argv)
    if args.cmd == "s3":
        return serve_s3(args.address, args.cert, args.key)
    return serve_tls_proxy(args.listen, args.upstream, args.cert, args.key)


if __name__ == "__main__":
    sys.exit(main())


ROUTER_WAN_IP = "198.51.100.10"
CUSTOMER_RESOLVER = "198.51.100.1"
LAN_ROUTER_IP = "192.168.254.1"
LAN_HOST_IP = "192.168.254.10"


@dataclass
class MiniLab:
    """A small topology for outbound tests: router (WAN ``wan``, LAN ``lan``), a LAN host,
    the customer network with its resolver at 198.51.100.1, and the internet behind it.

    ::

        <p>-lanhost 192.168.254.10 -- lan <p>-router wan 198.51.100.10 -- <p>-cust -- <p>-inet
    """

    prefix: str
    dir: Path
    internet: InternetServices | None = None
    require_client_cert: bool = False  # the portal broker: client certificates, per-device ACL

    @property
    def router(self) -> str:
        return f"{self.prefix}-router"

    @property
    def cust(self) -> str:
        return f"{self.prefix}-cust"

    @property
    def lanhost(self) -> str:
        return f"{self.prefix}-lanhost"

    @property
    def services(self) -> InternetServices:
        assert self.internet is not None
        return self.internet

    def up(self) -> MiniLab:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            for ns in (self.router, self.cust, self.lanhost):
                netns.add_namespace(ns)
            netns.veth(self.cust, "to-router", self.router, "wan")
            netns.ip(self.cust, "addr", "add", f"{CUSTOMER_RESOLVER}/24", "dev", "to-router")
            netns.ip(self.router, "addr", "add", f"{ROUTER_WAN_IP}/24", "dev", "wan")
            netns.ip(self.router, "route", "add", "default", "via", CUSTOMER_RESOLVER)
            netns.veth(self.router, "lan", self.lanhost, "eth0")
            netns.ip(self.router, "addr", "add", f"{LAN_ROUTER_IP}/24", "dev", "lan")
            netns.ip(self.lanhost, "addr", "add", f"{LAN_HOST_IP}/24", "dev", "eth0")
            netns.ip(self.lanhost, "route", "add", "default", "via", LAN_ROUTER_IP)
            netns.ns_run(self.router, ["sysctl", "-qw", "net.ipv4.ip_forward=1"])
            self.internet = add_internet(
                self.dir, self.cust, self.prefix, require_client_cert=self.require_client_cert
            )
            self.internet.start_customer_resolver(CUSTOMER_RESOLVER)
        except BaseException:
            self.down()
            raise
        return self

    def down(self) -> None:
        if self.internet is not None:
            self.internet.close()
            self.internet = None
        for ns in netns.list_namespaces():
            if ns.startswith(f"{self.prefix}-"):
                netns.delete_namespace(ns)


# -- helpers for tests and the lab CLI: run things inside a namespace ------------------------


def diagnose_in(
    ns: str,
    outbound: dict[str, Any],
    dns: Sequence[str],
    fallback: Sequence[str],
    python: str = sys.executable,
    broker_ca_file: str | None = None,
) -> list[dict[str, Any]]:
    """Run the outbound diagnostics inside ``ns``; the rows as dicts."""
    cmd = [python, "-m", "energyhubd.outbound.diagnose", "--outbound", json.dumps(outbound)]
    cmd += [f"--dns={s}" for s in dns] + [f"--fallback={s}" for s in fallback]
    if broker_ca_file is not None:
        cmd += ["--broker-ca-file", broker_ca_file]
    proc = subprocess.run(netns.ns_cmd(ns, cmd), capture_output=True, text=True, timeout=120)
    if proc.returncode not in (0, 1):
        raise LabError(f"diagnostics failed in {ns}: {proc.stderr.strip()}")
    rows: list[dict[str, Any]] = json.loads(proc.stdout)["rows"]
    return rows


_NFT_SCRIPT = """
import json, sys
import nftables
nft = nftables.Nftables()
nft.set_json_output(True)
request = json.load(sys.stdin)
if "cmd" in request:
    rc, out, err = nft.cmd(request["cmd"])
else:
    rc, out, err = nft.json_cmd(request["json"])
print(json.dumps({"rc": rc, "out": out, "err": err}))
"""


def nft_in(ns: str, doc: dict[str, Any] | str, python: str = sys.executable) -> str:
    """libnftables inside ``ns``: a JSON document (json_cmd) or a text command; the output."""
    request = {"cmd": doc} if isinstance(doc, str) else {"json": doc}
    proc = subprocess.run(
        netns.ns_cmd(ns, [python, "-c", _NFT_SCRIPT]),
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=60,
    )
    if proc.returncode != 0:
        raise LabError(f"libnftables in {ns}: {proc.stderr.strip()}")
    result = json.loads(proc.stdout)
    if result["rc"] != 0:
        raise LabError(f"libnftables in {ns}: {result['err'].strip()}")
    return str(result["out"])


def connect_in(ns: str, host: str, port: int, timeout: float = 1.5) -> tuple[bool, str]:
    """One TCP probe from ``ns`` (``energyhub_lab.probe connect``)."""
    cmd = [sys.executable, "-m", "energyhub_lab.probe", "connect", host, str(port)]
    cmd += ["--timeout", str(timeout)]
    proc = subprocess.run(netns.ns_cmd(ns, cmd), capture_output=True, text=True, timeout=30)
    return proc.returncode == 0, (proc.stdout.strip() or proc.stderr.strip())


_CONNECT_SCRIPT = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])).close()
except TimeoutError:
    print("no answer (filtered)"); sys.exit(1)
except OSError as exc:
    print(exc.strerror or exc); sys.exit(1)
print("connected")
"""


def tcp_connect_in(ns: str, host: str, port: int, timeout: float = 1.5) -> tuple[bool, str]:
    """Only the TCP handshake from ``ns`` (for servers that wait for the client to speak)."""
    cmd = [sys.executable, "-c", _CONNECT_SCRIPT, host, str(port), str(timeout)]
    proc = subprocess.run(netns.ns_cmd(ns, cmd), capture_output=True, text=True, timeout=30)
    return proc.returncode == 0, (proc.stdout.strip() or proc.stderr.strip())
