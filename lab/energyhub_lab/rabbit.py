"""A throwaway RabbitMQ cluster with its MQTT plugin, for the fleet benchmark and tests.

Why it exists: a clustered broker need not keep one retained store. RabbitMQ's MQTT plugin
keeps retained messages per node and (in 3.10, Debian 12's version) speaks only MQTT 3.1.1,
so it is the broker on which the fleet design (desired state asked from the portal with
``config/get``, never read from a cluster-wide retained store; MQTT 3.1.1 fallback) must hold.
See docs/fleet.md § "On a RabbitMQ cluster".

Everything lives under one directory the caller owns: the Erlang cookie (``HOME`` points
there), an empty ``rabbitmq-env.conf`` (so /etc/rabbitmq is never read), and per node its
``rabbitmq.conf``, Mnesia directory and logs. The nodes are ``<random>-<i>@localhost``; their
MQTT (TLS) and distribution listeners, the CLI's distribution port and an epmd of our own are
all on 127.0.0.1 on free ports, so nothing of the Debian system service (its ``rabbitmq`` user,
/var/lib/rabbitmq, the epmd on 4369) is used or disturbed. The release scripts in
/usr/lib/rabbitmq/bin are called directly: the /usr/sbin wrappers switch to the system user.

Access: TLS with client certificates only (``ssl_cert_login``: the CN is the user name, like
``use_identity_as_username`` in mosquitto), no anonymous access, no AMQP listener, no ``guest``
user, and the directional ACL as RabbitMQ topic permissions generated from the same topic list
as the mosquitto ACL (:func:`topic_permissions`).

Processes: epmd and each node's ``rabbitmq-server`` run in their own process group with a
parent-death signal (``setpriv --pdeathsig TERM``), so even a killed caller leaves no beam or
epmd behind; :meth:`RabbitCluster.close` stops the nodes (SIGTERM, then SIGKILL to the group)
and then epmd. Start nodes from a thread that outlives them (the parent-death signal fires
when the thread that started the process ends, not only the process).

Threading contract: none of its own; one ``RabbitCluster`` is driven from one thread.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import secrets
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from energyhub_lab.netns import LabError
from energyhubd.portal.topics import DEVICE_PUBLISHES, DEVICE_SUBSCRIBES, PREFIX

RELEASE_BIN = Path("/usr/lib/rabbitmq/bin")
SERVER = RELEASE_BIN / "rabbitmq-server"
CTL = RELEASE_BIN / "rabbitmqctl"
EXCHANGE = "amq.topic"  # where the MQTT plugin publishes; topic permissions apply to it
VHOST = "/"
# The CLI's own Erlang node: distribution on loopback only, never an epmd of its own.
LOOPBACK_CTL_ARGS = "-start_epmd false -kernel inet_dist_use_interface {127,0,0,1}"


class RabbitUnavailable(LabError):
    """rabbitmq-server is not installed or a node did not come up."""


@dataclass(frozen=True)
class Tls:
    """The broker's TLS material: the CA that signs the clients, the server chain and key."""

    ca: Path
    cert: Path
    key: Path


def available() -> bool:
    return SERVER.exists() and CTL.exists()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---- pure: what the cluster is configured with ---------------------------------------------


def _routing_key(leaf: str) -> str:
    """An MQTT topic leaf as the regex of its AMQP routing key (the plugin maps / to .)."""
    return leaf.replace("/", r"\.")


def topic_permissions() -> tuple[str, str]:
    """The device ACL as RabbitMQ topic permissions on ``amq.topic``: (write, read) regexes.

    ``{username}`` is expanded by RabbitMQ to the user name (the certificate CN); publishing
    is checked against ``write``, subscribing against ``read``, exactly the directions of
    ``mosquitto_acl``."""

    def alternatives(leaves: Sequence[str]) -> str:
        return "|".join(_routing_key(leaf) for leaf in leaves)

    head = rf"^{PREFIX}\.{{username}}\."
    return (
        f"{head}({alternatives(DEVICE_PUBLISHES)})$",
        f"{head}({alternatives(DEVICE_SUBSCRIBES)})$",
    )


def definitions(devices: Iterable[str], portal_user: str = "portal") -> dict[str, Any]:
    """Users, permissions and topic permissions, imported at boot (so no ``guest`` is made).

    No user has a password: the only way in is a client certificate. Resource permissions
    are open because the MQTT plugin declares each client's subscription queue itself; what a
    client may publish or subscribe to is decided by the topic permissions."""
    write, read = topic_permissions()
    users, permissions, topics = [], [], []
    for name in [*devices, portal_user]:
        users.append({"name": name, "password_hash": "", "tags": [],
                      "hashing_algorithm": "rabbit_password_hashing_sha256"})  # fmt: skip
        permissions.append({"user": name, "vhost": VHOST, "configure": ".*", "write": ".*",
                            "read": ".*"})  # fmt: skip
        if name == portal_user:
            w = r = rf"^{PREFIX}\."
        else:
            w, r = write, read
        topics.append({"user": name, "vhost": VHOST, "exchange": EXCHANGE, "write": w, "read": r})
    return {"users": users, "vhosts": [{"name": VHOST}], "permissions": permissions,
            "topic_permissions": topics}  # fmt: skip


def node_config(mqtt_port: int, dist_port: int, tls: Tls, definitions_path: Path) -> str:
    """rabbitmq.conf of one node: MQTT over mutual TLS on loopback, nothing else listening."""
    lines = [
        "listeners.tcp = none",  # no AMQP: the MQTT listener is the only way in
        "mqtt.listeners.tcp = none",
        f"mqtt.listeners.ssl.default = 127.0.0.1:{mqtt_port}",
        "mqtt.allow_anonymous = false",
        "mqtt.ssl_cert_login = true",
        "ssl_cert_login_from = common_name",
        # A fleet connects at once; the default backlog (128) would drop SYNs.
        "mqtt.tcp_listen_options.backlog = 4096",
        f"ssl_options.cacertfile = {tls.ca}",
        f"ssl_options.certfile = {tls.cert}",
        f"ssl_options.keyfile = {tls.key}",
        "ssl_options.verify = verify_peer",
        "ssl_options.fail_if_no_peer_cert = true",
        "ssl_options.versions.1 = tlsv1.3",
        "ssl_options.versions.2 = tlsv1.2",
        "distribution.listener.interface = 127.0.0.1",
        f"distribution.listener.port_range.min = {dist_port}",
        f"distribution.listener.port_range.max = {dist_port}",
        "definitions.import_backend = local_filesystem",
        f"definitions.local.path = {definitions_path}",
        "log.console = false",
        "log.file.level = info",
        "",
    ]
    return "\n".join(lines)


# ---- shell: processes -------------------------------------------------------------------------


def _spawn(cmd: Sequence[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Own process group (stopped as a whole) and SIGTERM when the starting thread dies;
    run in the log's directory, where a crash dump would land."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            ["setpriv", "--pdeathsig", "TERM", *cmd],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=log.parent,
            start_new_session=True,
        )


def _stop_group(proc: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM the leader (rabbitmq-server's shell stops its node cleanly and waits for it),
    then SIGKILL whatever is left of the group. Not SIGTERM to the whole group: a beam whose
    erl_child_setup dies first aborts with a crash dump."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace)
    # Whatever is left in the group (a beam that ignored the shell, erl_child_setup, ...).
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


@dataclass
class Node:
    name: str  # Erlang node name, e.g. "ehr1a2b3c-1@localhost"
    dir: Path
    mqtt_port: int
    dist_port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.dir / "log" / f"{self.name}.log"

    def rss_kib(self) -> int:
        """Resident memory of the node's Erlang VM (the shell's child), 0 when not running."""
        if self.proc is None:
            return 0
        try:
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
            for pid in children.split():
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except OSError:
            pass
        return 0

    def log_tail(self, chars: int = 3000) -> str:
        parts = []
        for path in (self.dir / "stdout.log", self.log):
            with contextlib.suppress(OSError):
                parts.append(path.read_text(errors="replace")[-chars:])
        return "\n".join(parts)


class RabbitCluster:
    """``nodes`` RabbitMQ nodes with the MQTT plugin, clustered with ``join_cluster``.

    ``with RabbitCluster(workdir, tls, devices) as cluster:`` starts everything (and stops
    everything again if starting fails); ``cluster.nodes[i].mqtt_port`` is node i's MQTT/TLS
    port on 127.0.0.1. ``devices`` are the certificate CNs allowed in as devices."""

    def __init__(
        self,
        workdir: Path,
        tls: Tls,
        devices: Iterable[str],
        portal_user: str = "portal",
        nodes: int = 2,
    ) -> None:
        if not available():
            raise RabbitUnavailable(f"{SERVER} not found (scripts/setup.sh installs it)")
        self.workdir = workdir
        tag = f"ehr{secrets.token_hex(3)}"
        self.epmd_port = free_port()
        self.ctl_port = free_port()
        self.nodes = [
            Node(f"{tag}-{i + 1}@localhost", workdir / f"node{i + 1}", free_port(), free_port())
            for i in range(nodes)
        ]
        self._epmd: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        cookie = workdir / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(16))
        cookie.chmod(0o400)  # Erlang refuses a cookie others can read
        (workdir / "rabbitmq-env.conf").write_text("")
        (workdir / "enabled_plugins").write_text("[rabbitmq_mqtt].\n")
        defs = workdir / "definitions.json"
        defs.write_text(json.dumps(definitions(devices, portal_user)))
        for node in self.nodes:
            (node.dir / "log").mkdir(parents=True, exist_ok=True)
            (node.dir / "rabbitmq.conf").write_text(
                node_config(node.mqtt_port, node.dist_port, tls, defs)
            )

    # ---- environment ---------------------------------------------------------------------

    def _env(self, node: Node | None = None) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        w = self.workdir
        env = {
            **base,
            "HOME": str(w),  # the cookie
            "RABBITMQ_CONF_ENV_FILE": str(w / "rabbitmq-env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(w / "enabled_plugins"),
            "RABBITMQ_USE_LONGNAME": "false",
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            # The CLI is an Erlang node too: loopback only, our epmd only (never start one).
            "RABBITMQ_CTL_ERL_ARGS": LOOPBACK_CTL_ARGS,
            "RABBITMQ_CTL_DIST_PORT_MIN": str(self.ctl_port),
            "RABBITMQ_CTL_DIST_PORT_MAX": str(self.ctl_port),
        }
        if node is not None:
            env.update({
                "RABBITMQ_NODENAME": node.name,
                "RABBITMQ_CONFIG_FILE": str(node.dir / "rabbitmq.conf"),
                "RABBITMQ_ADVANCED_CONFIG_FILE": str(node.dir / "advanced.config"),
                "RABBITMQ_MNESIA_BASE": str(node.dir / "mnesia"),
                "RABBITMQ_LOG_BASE": str(node.dir / "log"),
                "RABBITMQ_PID_FILE": str(node.dir / "rabbitmq.pid"),
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-start_epmd false",
                "ERL_CRASH_DUMP": str(node.dir / "erl_crash.dump"),
            })  # fmt: skip
        return env

    def ctl(self, node: Node, *args: str, timeout: float = 120) -> str:
        """``rabbitmqctl -n <node> ARGS`` with this cluster's cookie and epmd."""
        cmd = [str(CTL), "-n", node.name, *args]
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, env=self._env(),
            cwd=self.workdir,
        )  # fmt: skip
        if proc.returncode != 0:
            out = (proc.stderr.strip() or proc.stdout.strip())[-2000:]
            raise RabbitUnavailable(f"rabbitmqctl {' '.join(args)} on {node.name}: {out}")
        return proc.stdout

    # ---- life cycle ----------------------------------------------------------------------

    def start(self, timeout: float = 180) -> None:
        """epmd, every node, then join nodes 2.. to node 1; stops everything on failure."""
        try:
            self._epmd = _spawn(
                ["epmd", "-port", str(self.epmd_port), "-address", "127.0.0.1"],
                self.workdir / "epmd.log", self._env(),
            )  # fmt: skip
            self._wait_listening(self.epmd_port, 10, "epmd")
            for node in self.nodes:
                self._launch(node)
            for node in self.nodes:
                self._await(node, timeout)
            first = self.nodes[0]
            for node in self.nodes[1:]:
                self.ctl(node, "stop_app")
                self.ctl(node, "join_cluster", first.name)
                self.ctl(node, "start_app")
                self._await(node, timeout)
            running = self.running_nodes()
            if sorted(running) != sorted(n.name for n in self.nodes):
                raise RabbitUnavailable(f"cluster incomplete: running {running}")
        except BaseException:
            self.close()
            raise

    def _launch(self, node: Node) -> None:
        node.proc = _spawn([str(SERVER)], node.dir / "stdout.log", self._env(node))

    def _await(self, node: Node, timeout: float) -> None:
        """Until the node runs and its MQTT listener accepts connections."""
        deadline = time.monotonic() + timeout
        while True:
            if node.proc is not None and node.proc.poll() is not None:
                raise RabbitUnavailable(f"{node.name} exited:\n{node.log_tail()}")
            try:
                self.ctl(node, "await_startup", "--timeout", "5", timeout=30)
                break
            except (RabbitUnavailable, subprocess.TimeoutExpired) as exc:
                if time.monotonic() > deadline:
                    raise RabbitUnavailable(f"{node.name} did not start: {exc}\n"
                                            f"{node.log_tail()}") from exc  # fmt: skip
                time.sleep(0.5)
        self._wait_listening(node.mqtt_port, max(5.0, deadline - time.monotonic()), node.name)

    def _wait_listening(self, port: int, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while True:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    return
            if time.monotonic() > deadline:
                raise RabbitUnavailable(f"{what} does not listen on 127.0.0.1:{port}")
            time.sleep(0.1)

    def running_nodes(self) -> list[str]:
        status = json.loads(self.ctl(self.nodes[0], "cluster_status", "--formatter", "json"))
        return [str(n) for n in status.get("running_nodes", [])]

    def stop_node(self, index: int, grace: float = 30) -> None:
        """Stop one node (its process group); the others keep running."""
        node = self.nodes[index]
        if node.proc is not None:
            _stop_group(node.proc, grace)
            node.proc = None

    def start_node(self, index: int, timeout: float = 180, wait: bool = True) -> None:
        """Start a stopped node again; it rejoins the cluster from its own Mnesia directory.
        ``wait=False`` returns once the process is launched (``await_node`` waits later)."""
        node = self.nodes[index]
        self._launch(node)
        if wait:
            self._await(node, timeout)

    def await_node(self, index: int, timeout: float = 180) -> None:
        """Until node ``index`` runs and its MQTT listener accepts connections."""
        self._await(self.nodes[index], timeout)

    def close(self) -> None:
        """Stop every node, then epmd. Idempotent; never raises for a process already gone."""
        for i in range(len(self.nodes)):
            with contextlib.suppress(Exception):
                self.stop_node(i)
        if self._epmd is not None:
            _stop_group(self._epmd, 5)
            self._epmd = None

    def __enter__(self) -> RabbitCluster:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


# ---- what a subscriber on one node sees -------------------------------------------------------


def seen_before_marker(
    port: int,
    tls: ssl.SSLContext,
    client_id: str,
    topic: str,
    send_marker: Callable[[bytes], None],
    timeout: float = 30,
) -> list[tuple[bytes, bool]]:
    """Subscribe to ``topic`` on 127.0.0.1:``port`` (MQTT 3.1.1) and return every message
    (payload, retained flag) that arrives before a marker ``send_marker`` publishes after the
    SUBACK. A broker hands a retained message to a new subscription when it subscribes, before
    anything published later, so an empty list means this node holds no retained message for
    ``topic`` — no waiting for something that does not come."""
    marker = b"marker-" + secrets.token_hex(4).encode()
    kwargs: dict[str, Any] = {"client_id": client_id, "protocol": mqtt.MQTTv311}
    api = getattr(mqtt, "CallbackAPIVersion", None)
    if api is not None:
        kwargs["callback_api_version"] = api.VERSION2
    client = mqtt.Client(**kwargs)
    client.tls_set_context(tls)
    got: queue.Queue[tuple[bytes, bool]] = queue.Queue()
    subscribed: queue.Queue[bool] = queue.Queue()
    client.on_connect = lambda c, *_a: c.subscribe(topic, qos=1)
    client.on_subscribe = lambda *_a: subscribed.put(True)
    client.on_message = lambda _c, _u, msg: got.put((bytes(msg.payload), bool(msg.retain)))
    client.connect("localhost", port, 30)
    client.loop_start()
    try:
        subscribed.get(timeout=timeout)
        send_marker(marker)
        before: list[tuple[bytes, bool]] = []
        while True:
            item = got.get(timeout=timeout)
            if item[0] == marker:
                return before
            before.append(item)
    except queue.Empty as exc:
        raise LabError(f"no SUBACK or marker on port {port} within {timeout:.0f} s") from exc
    finally:
        with contextlib.suppress(Exception):
            client.disconnect()
        client.loop_stop()
