"""A real daemon on corrupt and on full state storage (``energyhubd run`` in a MiniLab router).

Each corruption a power cut, a full flash or a hand edit leaves is written before the start;
the daemon must come up, apply the local configuration, move the bad file aside and say so
(an event and a status line). The full-disk test mounts a tiny tmpfs as the state directory
inside a mount namespace made for the daemon alone (``unshare --mount``): the host's mount
table is never touched, and the mount disappears with the daemon.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from energyhub_lab import internet, netns
from energyhub_lab import portal as lab_portal
from energyhub_lab.internet import MiniLab
from tests.conftest import minilab_up
from tests.realdaemon import RealDaemon, RealDaemons, tail, wait_for

pytestmark = pytest.mark.netns

DEVICE = "eh-robust"
PUSH_WAIT = 30  # seconds; generous for a loaded 2-core machine (never a speed assertion)


@pytest.fixture(scope="module")
def minilab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MiniLab]:
    """A MiniLab whose broker takes the router's certificate as its identity (per-device ACL)."""
    with minilab_up(tmp_path_factory, "ehS", require_client_cert=True) as mini:
        yield mini


@pytest.fixture(scope="module")
def portal_pki(minilab: MiniLab) -> Path:
    """Client certificates for the router and the portal side, signed by the lab CA."""
    root = minilab.services.dir
    ca = minilab.services.ca_file
    for name, cn in (("router-client", DEVICE), ("portal-client", "portal")):
        if not (root / f"{name}.pem").exists():
            internet.make_leaf(root, name, (ca, ca.with_suffix(".key")), [cn], "clientAuth")
    return root


@pytest.fixture
def start(
    minilab: MiniLab, portal_pki: Path, real_daemons: RealDaemons
) -> Callable[..., RealDaemon]:
    """A daemon linked to the lab's portal broker; ``tmpfs_kib``: its state directory is a
    tmpfs of that size, mounted in a mount namespace of the daemon's own."""
    portal = {
        "host": internet.BROKER_IP,
        "server_name": internet.BROKER_NAME,
        "ca_file": str(portal_pki / "lab-ca.pem"),
        "cert_file": str(portal_pki / "router-client.pem"),
        "key_file": str(portal_pki / "router-client.key"),
        "confirm_window": 60,
        "backoff_initial": 0.5,
        "backoff_max": 2,
    }
    config = real_daemons.config(
        version=1, device_id=DEVICE, outbound=minilab.services.outbound_config(), portal=portal
    )

    def run(tmpfs_kib: int | None = None) -> RealDaemon:
        real_daemons.state.mkdir(exist_ok=True)

        def in_tmpfs(daemon: list[str]) -> list[str]:
            # exec all the way down: the daemon keeps the pid, so nsenter -t finds its mounts.
            script = (
                f'mount -t tmpfs -o size={tmpfs_kib}k,mode=0700 eh-state "$1" && shift && exec "$@"'
            )
            cmd = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]
            return [*cmd, "sh", str(real_daemons.state), *daemon]

        return real_daemons.start(config, wrap=None if tmpfs_kib is None else in_tmpfs)

    return run


def portal_args(root: Path) -> list[str]:
    return [
        "-h", internet.BROKER_IP, "-p", "8883", "--cafile", str(root / "lab-ca.pem"),
        "--cert", str(root / "portal-client.pem"), "--key", str(root / "portal-client.key"),
        "--insecure",
    ]  # fmt: skip


def push(minilab: MiniLab, root: Path, document: dict[str, Any] | None) -> None:
    """As the portal does: where the stand-in answers ``config/get`` from (a device asks on
    every connect, and an answer "no desired state" would race the retained copy), then the
    retained copy."""
    stored = lab_portal.desired_file(root / "desired", DEVICE)
    if document is None:
        stored.unlink(missing_ok=True)
    else:
        stored.parent.mkdir(exist_ok=True)
        stored.write_text(json.dumps(document))
    topic = lab_portal.topic(DEVICE, "config/desired")
    cmd = ["mosquitto_pub", *portal_args(root), "-q", "1", "-r", "-t", topic, "-i", "robust-pub"]
    payload = b"" if document is None else json.dumps(document).encode()
    cmd += ["-n"] if document is None else ["-s"]
    subprocess.run(netns.ns_cmd(minilab.services.ns, cmd), input=payload, check=True, timeout=30)


def retained_reported(minilab: MiniLab, root: Path) -> Any:
    """What the portal sees on the retained ``config/reported`` topic now."""
    topic = lab_portal.topic(DEVICE, "config/reported")
    cmd = ["mosquitto_sub", *portal_args(root), "-t", topic, "-C", "1", "-W", "5"]
    cmd += ["-i", "robust-sub"]
    proc = subprocess.run(
        netns.ns_cmd(minilab.services.ns, cmd), capture_output=True, text=True, timeout=30
    )
    return json.loads(proc.stdout) if proc.stdout.strip() else None


LAST_GOOD_V9 = json.dumps({"version": 9, "device_id": DEVICE}).encode()
CANDIDATE_V10 = json.dumps({"version": 10, "device_id": DEVICE}).encode()
MARKER_V10 = b'{"version": 10, "deadline": 1.0}'

# case -> (files under state/portal, the file that must be moved aside)
CASES: dict[str, tuple[dict[str, bytes], str]] = {
    "last-good empty": ({"last-good.json": b""}, "last-good.json"),
    "last-good half-written": ({"last-good.json": b'{"version": 9, "lan": {"dh'}, "last-good.json"),
    "last-good JSON list": ({"last-good.json": b"[1, 2]"}, "last-good.json"),
    "garbage candidate next to marker": (
        {
            "last-good.json": LAST_GOOD_V9,
            "candidate.json": b"\xff\x00garbage",
            "pending.json": MARKER_V10,
        },
        "candidate.json",
    ),
    "empty marker next to candidate": (
        {"candidate.json": CANDIDATE_V10, "pending.json": b""},
        "pending.json",
    ),
    "failed empty": ({"failed.json": b""}, "failed.json"),
    "reported garbage": ({"reported.json": b"\x00" * 64}, "reported.json"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_daemon_starts_and_applies_with_a_corrupt_state_file(
    start: Callable[..., RealDaemon], tmp_path: Path, case: str
) -> None:
    files, bad = CASES[case]
    portal_dir = tmp_path / "state" / "portal"
    portal_dir.mkdir(parents=True)
    for name, content in files.items():
        (portal_dir / name).write_bytes(content)
    # dnsmasq's own lease file, torn by the same power cut, must not stop anything either.
    (tmp_path / "state" / "dnsmasq").mkdir()
    (tmp_path / "state" / "dnsmasq" / "dhcp.leases").write_bytes(b"17000 aa:bb\n\x00\x00garb")
    daemon = start()
    status = daemon.status()
    assert status["policy"]["state"] == "applied"
    assert status["lan"]["dhcp"]["server"]["running"] is True
    # The last good source left: the local file (9 is newer than 1, but 9 survived only when
    # its file was fine; a rolled-back candidate never wins).
    expected = 9 if "last-good.json" in files and bad != "last-good.json" else 1
    assert status["config"]["version"] == expected
    lines = status["portal"]["state_files"]
    assert [line["file"] for line in lines] == [bad], lines
    moved = lines[0]["moved_to"]
    assert moved.startswith(f"{bad}.corrupt-")
    assert (portal_dir / moved).read_bytes() == files[bad]  # kept for support
    events = [e for e in status["events"] if e["kind"] == "state_file_corrupt"]
    assert events and events[0]["data"]["file"] == bad and events[0]["severity"] == "error"
    shown = daemon.ctl("status")
    assert f"{bad} was bad at start" in shown.stdout, shown.stdout
    # A second start finds nothing wrong any more.
    daemon.proc.terminate()
    daemon.proc.wait(10)
    again = start()
    assert again.status()["portal"]["state_files"] == []


def test_every_state_file_corrupt_at_once(start: Callable[..., RealDaemon], tmp_path: Path) -> None:
    portal_dir = tmp_path / "state" / "portal"
    portal_dir.mkdir(parents=True)
    for name in ("last-good.json", "candidate.json", "pending.json", "failed.json"):
        (portal_dir / name).write_bytes(b"{")
    (portal_dir / "reported.json").write_bytes(b"[]")
    status = start().status()
    assert status["config"]["version"] == 1 and status["policy"]["state"] == "applied"
    assert len(status["portal"]["state_files"]) == 5


def reload_with(daemon: RealDaemon, config: Path, change: Callable[[dict[str, Any]], None]) -> None:
    document = json.loads(config.read_text())
    change(document)
    config.write_text(json.dumps(document))
    result = daemon.call("reload", timeout=30)
    assert result["applied"] is True, result


def test_bad_state_file_line_survives_a_reload_that_restarts_the_portal_link(
    start: Callable[..., RealDaemon], tmp_path: Path
) -> None:
    """The runner that found the bad file is replaced (and then stopped) by reloads; the
    status line stays until the daemon restarts, and the event is told once."""
    portal_dir = tmp_path / "state" / "portal"
    portal_dir.mkdir(parents=True)
    (portal_dir / "last-good.json").write_bytes(b'{"version": 9, "lan": {"dh')
    daemon = start()
    found = daemon.status()["portal"]["state_files"]
    assert [line["file"] for line in found] == ["last-good.json"], found
    config = tmp_path / "config.json"

    def restarted() -> int:
        return daemon.log.read_text(errors="replace").count("portal link stopped")

    reload_with(daemon, config, lambda d: d["portal"].update(backoff_max=3))
    wait_for(lambda: restarted() == 1, 30, f"portal link not restarted; log:\n{tail(daemon.log)}")
    status = daemon.status()
    assert status["portal"]["enabled"] is True
    assert status["portal"]["state_files"] == found
    assert "last-good.json was bad at start (not valid JSON" in daemon.ctl("status").stdout
    # A reload that stops the link altogether: the line still stands.
    reload_with(daemon, config, lambda d: d["portal"].update(enabled=False))
    wait_for(lambda: restarted() == 2, 30, f"portal link not stopped; log:\n{tail(daemon.log)}")
    status = daemon.status()
    assert status["portal"]["enabled"] is False
    assert status["portal"]["state_files"] == found
    assert "last-good.json was bad at start" in daemon.ctl("status").stdout
    assert [e["data"]["file"] for e in status["events"] if e["kind"] == "state_file_corrupt"] == [
        "last-good.json"
    ]
    # Until the daemon restarts: the moved copy is kept, nothing is in the way any more.
    daemon.proc.terminate()
    daemon.proc.wait(10)
    assert start().status()["portal"]["state_files"] == []
    assert (portal_dir / found[0]["moved_to"]).exists()


def test_push_on_full_state_storage_is_rejected_then_works_once_there_is_room(
    minilab: MiniLab, portal_pki: Path, start: Callable[..., RealDaemon]
) -> None:
    daemon = start(tmpfs_kib=256)
    wait_for(lambda: daemon.status()["portal"]["connected"], PUSH_WAIT, "portal link not up")
    pid = daemon.proc.pid
    inside = ["nsenter", "-t", str(pid), "-m", "--"]
    # Fill the daemon's own tmpfs (visible only in its mount namespace) to the last block.
    fill = subprocess.run(
        [*inside, "dd", "if=/dev/zero", f"of={daemon.state}/filler", "bs=4k"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert "No space left on device" in fill.stderr, fill.stderr
    document = {"version": 2, "device_id": DEVICE, "lan": {"device": "lan"}}
    try:
        push(minilab, portal_pki, {**document, "confirm": False})
        rejected = wait_for(
            lambda: [e for e in daemon.status()["events"] if e["kind"] == "push_rejected"],
            PUSH_WAIT,
            f"no push_rejected event; log:\n{tail(daemon.log)}",
        )
        reason = rejected[-1]["data"]["errors"][0]["reason"]
        assert "No space left on device" in reason
        status = daemon.status()
        assert status["config"]["version"] == 1 and status["policy"]["state"] == "applied"
        reported = wait_for(
            lambda: (
                (retained_reported(minilab, portal_pki) or {}).get("state") == "rejected"
                and retained_reported(minilab, portal_pki)
            ),
            PUSH_WAIT,
            "the portal was not told",
        )
        assert reported["desired_version"] == 2 and "No space" in reported["errors"][0]["reason"]
        assert "Traceback" not in daemon.log.read_text(errors="replace")
        # Room again: the same push, delivered again, now applies.
        subprocess.run([*inside, "rm", f"{daemon.state}/filler"], check=True, timeout=30)
        push(minilab, portal_pki, {**document, "confirm": False})
        wait_for(
            lambda: daemon.status()["config"]["version"] == 2,
            PUSH_WAIT,
            f"push not applied once there was room; log:\n{tail(daemon.log)}",
        )
        wait_for(
            lambda: (retained_reported(minilab, portal_pki) or {}).get("state") == "applied",
            PUSH_WAIT,
            "the portal was not told it applied",
        )
    finally:
        push(minilab, portal_pki, None)  # the next test starts without a retained push


def test_reports_agree_and_survive_a_restart(
    minilab: MiniLab, portal_pki: Path, start: Callable[..., RealDaemon]
) -> None:
    daemon = start()
    wait_for(lambda: daemon.status()["portal"]["connected"], PUSH_WAIT, "portal link not up")
    status = daemon.status()
    # health.wan.dns comes from the same place as the diagnostics' servers: the resolv file.
    assert status["wan"]["dns"] == [internet.CUSTOMER_RESOLVER]
    # The queue drains on the MQTT thread; status reads it when asked, not a stale copy.
    wait_for(lambda: daemon.status()["portal"]["buffered"] == 0, PUSH_WAIT, "outbox not empty")
    # A local configuration runs: reported says its version, as status does.
    reported = wait_for(
        lambda: (
            (retained_reported(minilab, portal_pki) or {}).get("applied_version") == 1
            and retained_reported(minilab, portal_pki)
        ),
        PUSH_WAIT,
        "reported.applied_version is not the local configuration's",
    )
    assert reported["state"] == "applied"
    try:
        push(minilab, portal_pki, {"version": 2, "device_id": DEVICE, "confirm": False})
        applied = wait_for(
            lambda: (
                (retained_reported(minilab, portal_pki) or {}).get("applied_version") == 2
                and retained_reported(minilab, portal_pki)
            ),
            PUSH_WAIT,
            "push not applied",
        )
        daemon.proc.terminate()
        daemon.proc.wait(10)
        # Forget what the broker kept: what follows is what the restarted daemon says.
        topic = lab_portal.topic(DEVICE, "config/reported")
        clear = ["mosquitto_pub", *portal_args(portal_pki), "-q", "1", "-r", "-n", "-t", topic]
        subprocess.run(netns.ns_cmd(minilab.services.ns, clear), check=True, timeout=30)
        assert retained_reported(minilab, portal_pki) is None
        start()
        after = wait_for(
            lambda: retained_reported(minilab, portal_pki), PUSH_WAIT, "nothing reported"
        )
        assert after["desired_version"] == 2 and after["updated"] == applied["updated"]
        assert after["applied_version"] == 2
    finally:
        push(minilab, portal_pki, None)
