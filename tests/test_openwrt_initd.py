"""The init script's and the DHCP hotplug handler's shell, and the handler with real signals.

What the init script declares is checked under real procd in tests/test_openwrt_userland.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
INIT = ROOT / "init.d" / "energyhubd"
FILES = ROOT / "openwrt-package" / "energyhubd" / "files"
HOTPLUG_DHCP = FILES / "hotplug-dhcp"
SHELL_FILES = [INIT, HOTPLUG_DHCP]


@pytest.mark.parametrize("path", SHELL_FILES, ids=lambda p: p.name)
def test_shell_syntax(path: Path) -> None:
    result = subprocess.run(["sh", "-n", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    if os.path.exists("/bin/busybox"):  # OpenWrt's shell is busybox ash
        result = subprocess.run(["busybox", "sh", "-n", str(path)], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr


def test_init_script_installs_path_used_by_triggers() -> None:
    """The interface trigger runs /etc/init.d/energyhubd: the package must install it there."""
    makefile = (ROOT / "openwrt-package" / "energyhubd" / "Makefile").read_text()
    assert "$(ENERGYHUBD_SRC)/init.d/energyhubd $(1)/etc/init.d/energyhubd" in makefile


# ---------------------------------------------------------------------------- hotplug

RECEIVER = r"""
import signal, sys, time
out = sys.argv[2]
def on_usr1(signum, frame):
    with open(out, "a") as f:
        f.write("USR1\n")
signal.signal(signal.SIGUSR1, on_usr1)
signal.signal(signal.SIGHUP, lambda s, f: open(out, "a").write("HUP\n"))
print("ready", flush=True)
while True:
    time.sleep(0.05)
"""


@pytest.fixture
def receiver(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A process that counts signals and runs as ``<python> <dir>/energyhubd run``, as the
    daemon does on OpenWrt (``/usr/bin/python3 /usr/bin/energyhubd run ...``)."""
    out = tmp_path / "signals"
    out.write_text("")
    program = tmp_path / "energyhubd"
    program.write_text(RECEIVER)
    proc = subprocess.Popen(
        [sys.executable, str(program), "run", str(out)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    try:
        yield proc, out
    finally:
        proc.kill()
        proc.wait()


def hotplug(pidfile: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full = {"PATH": os.environ["PATH"], "ENERGYHUBD_PIDFILE": str(pidfile), **env}
    # hotplug-call sources each handler in a subshell; do the same
    return subprocess.run(
        ["sh", "-c", f'( . "{HOTPLUG_DHCP}" )'],
        env=full,
        text=True,
        capture_output=True,
        timeout=10,
    )


def wait_lines(out: Path, count: int, deadline: float = 5.0) -> list[str]:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        lines = out.read_text().splitlines()
        if len(lines) >= count:
            return lines
        time.sleep(0.02)
    return out.read_text().splitlines()


def test_dhcp_hotplug_signals_the_daemon(tmp_path: Path, receiver) -> None:  # type: ignore[no-untyped-def]
    proc, out = receiver
    pidfile = tmp_path / "energyhubd.pid"
    pidfile.write_text(f"{proc.pid}\n")
    lease = {"MACADDR": "02:00:5e:10:00:01", "IPADDR": "192.168.254.200", "HOSTNAME": "display"}
    for n, action in enumerate(("add", "update", "remove"), start=1):
        result = hotplug(pidfile, ACTION=action, **lease)
        assert result.returncode == 0, result.stderr
        # Standard signals coalesce while one is pending (the daemon re-reads the whole lease
        # file, so one wake-up per burst is all it needs): see each before sending the next.
        assert wait_lines(out, n) == ["USR1"] * n
    assert proc.poll() is None  # SIGUSR1 did not kill it


def test_dhcp_hotplug_ignores_other_actions_and_missing_daemon(tmp_path: Path, receiver) -> None:  # type: ignore[no-untyped-def]
    proc, out = receiver
    pidfile = tmp_path / "energyhubd.pid"
    pidfile.write_text(f"{proc.pid}\n")
    assert hotplug(pidfile, ACTION="tftp").returncode == 0
    assert hotplug(pidfile).returncode == 0
    # no pid file, an empty one, garbage, a dead pid: quiet success, dnsmasq is not bothered
    assert hotplug(tmp_path / "absent.pid", ACTION="add").returncode == 0
    # (never "-1" or "0" here: a broken handler would signal every process on the host)
    for content in ("", "not-a-pid\n", "12 34\n", "999999999\n"):
        pidfile.write_text(content)
        result = hotplug(pidfile, ACTION="add")
        assert result.returncode == 0 and result.stderr == ""
    pidfile.write_text(f"{proc.pid}\n")
    assert hotplug(pidfile, ACTION="add").returncode == 0
    assert wait_lines(out, 1) == ["USR1"]
    assert proc.poll() is None
    os.kill(proc.pid, signal.SIGHUP)  # the receiver still works: the test could see signals
    assert wait_lines(out, 2) == ["USR1", "HUP"]


def test_dhcp_hotplug_accepts_a_pid_file_without_newline(tmp_path: Path, receiver) -> None:  # type: ignore[no-untyped-def]
    proc, out = receiver
    pidfile = tmp_path / "energyhubd.pid"
    pidfile.write_text(str(proc.pid))
    assert hotplug(pidfile, ACTION="add").returncode == 0
    assert wait_lines(out, 1) == ["USR1"]


@pytest.mark.parametrize("content", ["0", "0\n", "00\n", "-1\n", "-0\n", "+5\n", " 1\n"])
def test_dhcp_hotplug_never_signals_pid_zero_or_a_group(tmp_path: Path, content: str) -> None:
    # pid 0 is the handler's own process group: it would kill the handler (and dnsmasq's
    # script runner with it); run in a new session so a broken handler only hurts itself.
    pidfile = tmp_path / "energyhubd.pid"
    pidfile.write_text(content)
    result = subprocess.run(
        ["sh", "-c", f'( . "{HOTPLUG_DHCP}" ); echo survived'],
        env={"PATH": os.environ["PATH"], "ENERGYHUBD_PIDFILE": str(pidfile), "ACTION": "add"},
        capture_output=True,
        text=True,
        timeout=10,
        start_new_session=True,
    )
    assert result.returncode == 0 and result.stdout == "survived\n"


def test_dhcp_hotplug_leaves_a_reused_pid_alone(tmp_path: Path) -> None:
    # After a crash the pid in the file belongs to some other process: SIGUSR1 would kill it.
    other = subprocess.Popen(["sleep", "60"])
    try:
        pidfile = tmp_path / "energyhubd.pid"
        pidfile.write_text(f"{other.pid}\n")
        assert hotplug(pidfile, ACTION="add").returncode == 0
        time.sleep(0.3)
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()
