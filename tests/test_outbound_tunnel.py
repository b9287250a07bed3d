"""The support tunnel: argv for both ssh clients, then a real sshd gateway in a namespace.

The router namespace has a listener on 127.0.0.1:22 standing in for its ssh server; through
the tunnel the gateway reaches it on its own 127.0.0.1:<remote_port>.
"""

from __future__ import annotations

import secrets
import select
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from energyhub_lab import internet, netns
from energyhub_lab.internet import MiniLab, connect_in
from energyhubd.config.sections.outbound import TunnelSettings
from energyhubd.outbound.tunnel import (
    TunnelSupervisor,
    TunnelTarget,
    build_argv,
    known_hosts_line,
)

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHh0aGlzaXNhbGFiaG9zdGtleWZvcnRlc3Rz"
REMOTE_PORT = 20022


def test_openssh_argv_pins_the_host_key_and_forwards_local_ssh() -> None:
    settings = TunnelSettings(mode="always", remote_port=20022, host_key=KEY)
    argv = build_argv("openssh", settings, TunnelTarget("52.29.33.74"), "/run/kh")
    joined = " ".join(argv)
    assert argv[0] == "ssh" and "-N" in argv
    assert "-R 20022:127.0.0.1:22" in joined
    assert "-p 2443" in joined
    for option in (
        "UserKnownHostsFile=/run/kh",
        "StrictHostKeyChecking=yes",
        "ExitOnForwardFailure=yes",
        "BatchMode=yes",
        "ServerAliveInterval=30",
    ):
        assert option in argv
    assert argv[-1] == "energyhub@52.29.33.74"


def test_dropbear_argv_never_accepts_unknown_keys() -> None:
    settings = TunnelSettings(mode="always", remote_port=20022, host_key=KEY)
    argv = build_argv("dropbear", settings, TunnelTarget("52.29.33.74"), "/x/known_hosts")
    assert argv[0] == "dbclient"
    assert "-y" not in argv and "-R" in argv and "20022:127.0.0.1:22" in argv
    assert "ExitOnForwardFailure=yes" in argv


def test_known_hosts_line_uses_the_bracket_form_for_other_ports() -> None:
    assert known_hosts_line("52.29.33.74", 2443, KEY) == f"[52.29.33.74]:2443 {KEY}\n"
    assert known_hosts_line("192.0.2.1", 22, KEY) == f"192.0.2.1 {KEY}\n"


def test_enabled_tunnel_without_a_pinned_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="host_key"):
        TunnelSupervisor(
            TunnelSettings(mode="always", remote_port=1), TunnelTarget("192.0.2.1"), str(tmp_path)
        )
    disabled = TunnelSupervisor(TunnelSettings(), TunnelTarget("192.0.2.1"), str(tmp_path))
    assert disabled.status()["state"] == "disabled"
    with pytest.raises(RuntimeError, match="disabled"):
        disabled.open()


# -- real gateway --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MiniLab]:
    prefix = f"ehTt{secrets.token_hex(2)}"
    mini = MiniLab(prefix, tmp_path_factory.mktemp(prefix))
    listener: subprocess.Popen[bytes] | None = None
    try:
        mini.up()
        cmd = [sys.executable, "-m", "energyhub_lab.probe", "serve", "--name", "router-ssh"]
        cmd += ["--host", "127.0.0.1", "--port", "22"]
        listener = subprocess.Popen(
            netns.ns_cmd(mini.router, cmd), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        yield mini
    finally:
        if listener is not None:
            listener.terminate()
            listener.wait(timeout=5)
        mini.down()


def supervisor(lab: MiniLab, tmp: Path, mode: str, host_key: str | None = None) -> TunnelSupervisor:
    settings = TunnelSettings(
        mode=mode,
        user="root",
        key_file=str(lab.services.client_key),
        remote_port=REMOTE_PORT,
        host_key=host_key or lab.services.gateway_host_key,
    )
    return TunnelSupervisor(
        settings,
        TunnelTarget(internet.GATEWAY_IP, lab.services.gateway_port),
        str(tmp),
        client="openssh",
        backoff_initial=0.5,
        backoff_max=2.0,
        command_prefix=netns.ns_cmd(lab.router, []),
    )


def pump(sup: TunnelSupervisor, until: Callable[[], bool], timeout: float) -> bool:
    """A tiny event loop, as the daemon runs it: pidfd readable -> on_exit; deadline -> tick."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if until():
            return True
        wait = 0.3
        due = sup.next_deadline()
        if due is not None:
            wait = max(0.0, min(wait, due - time.monotonic()))
        fd = sup.fileno()
        if fd is not None:
            readable, _, _ = select.select([fd], [], [], wait)
            if readable:
                sup.on_exit()
        else:
            time.sleep(wait)
        due = sup.next_deadline()
        if due is not None and time.monotonic() >= due:
            sup.tick()
    return until()


def gateway_reaches_router(lab: MiniLab) -> bool:
    ok, text = connect_in(lab.services.ns, "127.0.0.1", REMOTE_PORT, timeout=1.0)
    return ok and text.startswith("router-ssh")


@pytest.mark.netns
def test_tunnel_restarts_after_the_gateway_drops_it(lab: MiniLab, tmp_path: Path) -> None:
    sup = supervisor(lab, tmp_path, "always")
    try:
        sup.start()
        assert pump(sup, lambda: gateway_reaches_router(lab), 20), (
            tmp_path / "tunnel.log"
        ).read_text()
        assert sup.status()["state"] == "running"
        first_pid = sup.status()["pid"]
        assert lab.services.drop_ssh_sessions() >= 1
        assert pump(sup, lambda: sup.restarts >= 1, 20), "the supervisor never restarted ssh"
        assert pump(sup, lambda: gateway_reaches_router(lab), 30), (
            tmp_path / "tunnel.log"
        ).read_text()
        assert sup.status()["pid"] != first_pid
        assert "ssh exited with status" in (sup.status()["last_exit"] or "")
    finally:
        sup.stop()
    assert sup.fileno() is None


@pytest.mark.netns
def test_a_wrong_host_key_never_connects(lab: MiniLab, tmp_path: Path) -> None:
    sup = supervisor(lab, tmp_path, "always", host_key=KEY)
    try:
        sup.start()
        assert pump(sup, lambda: sup.restarts >= 1, 20)
        assert sup.status()["state"] in ("backoff", "running")
        assert not gateway_reaches_router(lab)
        assert "Host key verification failed" in (tmp_path / "tunnel.log").read_text()
    finally:
        sup.stop()


@pytest.mark.netns
def test_on_demand_tunnel_closes_at_its_expiry(lab: MiniLab, tmp_path: Path) -> None:
    # A previous test's gateway session may still hold the port for a moment.
    pump_deadline = time.monotonic() + 15
    while gateway_reaches_router(lab) and time.monotonic() < pump_deadline:
        time.sleep(0.2)
    sup = supervisor(lab, tmp_path, "on_demand")
    try:
        sup.start()
        assert sup.status()["state"] == "idle" and sup.fileno() is None
        sup.open(hours=6 / 3600)
        assert sup.status()["expires_in_s"] <= 6
        assert pump(sup, lambda: gateway_reaches_router(lab), 20), (
            tmp_path / "tunnel.log"
        ).read_text()
        assert pump(sup, lambda: sup.status()["state"] == "idle", 20)
        assert sup.status()["last_exit"] == "expired"
        assert sup.fileno() is None and sup.next_deadline() is None
        deadline = time.monotonic() + 10
        while gateway_reaches_router(lab) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not gateway_reaches_router(lab)
    finally:
        sup.stop()
