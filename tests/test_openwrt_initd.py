"""The procd init script and the dhcp hotplug handler, run by a real shell.

OpenWrt's /etc/rc.common and procd are not here, so the harness does what rc.common does
with a USE_PROCD script (source it, call ``start_service`` inside an open service, then
``service_triggers``; ``reload`` calls ``reload_service``) with recording stand-ins for the
procd helpers: each appends its name and arguments to a file, one argument per field.
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

HARNESS = r"""
set -u
REC="$1"; SCRIPT="$2"; ACTION="$3"
record() {
	printf '%s' "$1" >> "$REC"; shift
	for a in "$@"; do printf '\t%s' "$a" >> "$REC"; done
	printf '\n' >> "$REC"
}
for f in procd_open_service procd_close_service procd_open_instance procd_close_instance \
         procd_set_param procd_append_param procd_add_reload_trigger \
         procd_add_interface_trigger procd_add_raw_trigger procd_add_config_trigger \
         procd_send_signal procd_kill procd_open_trigger procd_close_trigger; do
	eval "$f() { record $f \"\$@\"; }"
done
initscript="$SCRIPT"
. "$SCRIPT"
[ -n "${HARNESS_UJAIL:-}" ] && have_ujail() { true; }
[ -n "${HARNESS_CAPS:-}" ] && CAPABILITIES="$HARNESS_CAPS"
record META START="$START" STOP="${STOP:-}" USE_PROCD="$USE_PROCD"
case "$ACTION" in
	start)
		procd_open_service energyhubd "$SCRIPT"
		start_service
		procd_open_trigger
		service_triggers
		procd_close_trigger
		procd_close_service
		;;
	reload) reload_service ;;
esac
"""


def run_init(tmp_path: Path, action: str, **env: str) -> list[list[str]]:
    rec = tmp_path / "calls"
    harness = tmp_path / "harness.sh"
    harness.write_text(HARNESS)
    rec.write_text("")
    subprocess.run(
        ["sh", str(harness), str(rec), str(INIT), action],
        check=True,
        env={"PATH": os.environ["PATH"], **env},
        timeout=30,
    )
    return [line.split("\t") for line in rec.read_text().splitlines()]


@pytest.mark.parametrize("path", SHELL_FILES, ids=lambda p: p.name)
def test_shell_syntax(path: Path) -> None:
    result = subprocess.run(["sh", "-n", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    if os.path.exists("/bin/busybox"):  # OpenWrt's shell is busybox ash
        result = subprocess.run(["busybox", "sh", "-n", str(path)], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr


def test_init_script_declares_the_service(tmp_path: Path) -> None:
    calls = run_init(tmp_path, "start")
    meta = next(c for c in calls if c[0] == "META")
    assert meta[1:] == ["START=60", "STOP=10", "USE_PROCD=1"]
    # starts after dnsmasq (19) and network (20)
    assert int(meta[1].split("=")[1]) > 20

    params = {c[1]: c[2:] for c in calls if c[0] == "procd_set_param"}
    assert params["command"] == ["/usr/bin/energyhubd", "run", "--config", "/etc/config/energyhub"]
    assert params["respawn"] == ["300", "5", "10"]
    assert params["stdout"] == ["1"] and params["stderr"] == ["1"]
    assert params["file"] == ["/etc/config/energyhub"]
    assert params["term_timeout"] == ["15"]
    assert "capabilities" not in params  # no ujail on this box: not declared
    assert ["procd_open_instance", "energyhubd"] in calls
    opened = calls.index(["procd_open_instance", "energyhubd"])
    closed = calls.index(["procd_close_instance"])
    assert all(opened < calls.index(c) < closed for c in calls if c[0] == "procd_set_param")

    assert ["procd_add_reload_trigger", "energyhub"] in calls
    assert [
        "procd_add_interface_trigger",
        "interface.*",
        "wan",
        "/etc/init.d/energyhubd",
        "reload",
    ] in calls


def test_capabilities_declared_where_ujail_exists(tmp_path: Path) -> None:
    caps = FILES / "energyhubd.capabilities.json"
    calls = run_init(tmp_path, "start", HARNESS_UJAIL="1", HARNESS_CAPS=str(caps))
    params = {c[1]: c[2:] for c in calls if c[0] == "procd_set_param"}
    assert params["capabilities"] == [str(caps)]


def test_reload_sends_sighup_through_procd(tmp_path: Path) -> None:
    calls = run_init(tmp_path, "reload")
    assert ["procd_send_signal", "energyhubd", "*", "HUP"] in calls
    assert not any(c[0] == "procd_open_instance" for c in calls)


def test_init_script_installs_path_used_by_triggers() -> None:
    """The interface trigger runs /etc/init.d/energyhubd: the package must install it there."""
    makefile = (ROOT / "openwrt-package" / "energyhubd" / "Makefile").read_text()
    assert "$(ENERGYHUBD_SRC)/init.d/energyhubd $(1)/etc/init.d/energyhubd" in makefile


# ---------------------------------------------------------------------------- hotplug

RECEIVER = r"""
import signal, sys, time
out = sys.argv[1]
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
    out = tmp_path / "signals"
    out.write_text("")
    proc = subprocess.Popen(
        [sys.executable, "-c", RECEIVER, str(out)], stdout=subprocess.PIPE, text=True
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
    for action in ("add", "update", "remove"):
        result = hotplug(pidfile, ACTION=action, **lease)
        assert result.returncode == 0, result.stderr
    assert wait_lines(out, 3) == ["USR1", "USR1", "USR1"]
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
