"""Boot the OpenWrt userland (scripts/openwrt/build.sh) with procd as PID 1, in namespaces.

One :class:`OpenWrtRouter` is one booted router:

- network namespaces ``<prefix>-rtr`` (the router), ``<prefix>-up`` (the customer network,
  198.51.100.1/24, with a DHCP server for the router's WAN) and ``<prefix>-lan`` (a LAN client
  with no address; run udhcpc there);
- in ``-rtr``: new PID, mount, UTS and IPC namespaces (``unshare``); the launcher becomes PID 1,
  mounts a per-run overlay of the cached root filesystem (writes land in ``run_dir/upper``),
  ``/proc``, a read-only ``/sys``, a fresh ``/dev``, ``/tmp`` (which is ``/var`` and ``/run``),
  then execs ``/sbin/procd`` in a chroot. Never ``/sbin/init``: preinit and kmodloader act on
  the machine, not on a namespace.
- host protection: ``/proc/kmsg`` is an empty FIFO (logd would consume the host's kernel log),
  ``udevtrigger`` is a no-op in the root filesystem (it would replay the host's uevents), every
  mount lives in the router's own mount namespace, so the host's ``/etc``, ``/run`` and mount
  table never change. Ending PID 1 ends every process of the router.

The project is installed into the overlay's upper directory the way its OpenWrt package lays it
out (openwrt-package/energyhubd/Makefile), from the checkout, so a code change needs no rebuild.

Threading: none. Every call blocks; one router is driven by one thread.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from energyhub_lab import netns

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "scripts" / "openwrt" / "build.sh"
PATH_INSIDE = "/usr/sbin:/usr/bin:/sbin:/bin"
ROOT_PASSWORD = "energyhub-lab"
UPSTREAM_ADDRESS = "198.51.100.1"
BOOT_TIMEOUT = 30.0
SHUTDOWN_TIMEOUT = 15.0
# The base files' "done" init script (START=95) touches this when the boot sequence has run.
BOOT_DONE = "tmp/run/owrt-ns.boot-done"
SITE_PACKAGES = "usr/lib/python3/dist-packages"


class OpenWrtError(Exception):
    pass


def build(env: Mapping[str, str] | None = None) -> Path:
    """Build (or reuse) the cached userland; return its build dir (holds ``rootfs/``)."""
    proc = subprocess.run(
        ["sh", str(BUILD_SCRIPT)],
        capture_output=True,
        text=True,
        timeout=1800,
        env={**os.environ, **(env or {})},
    )
    if proc.returncode != 0:
        raise OpenWrtError(f"openwrt build failed:\n{proc.stderr[-3000:]}")
    return Path(proc.stdout.strip().splitlines()[-1])


def _launcher() -> str:
    # Runs as PID 1 of the new pid namespace, in its own mount namespace. $1 = lower (rootfs),
    # $2 = run dir. Everything it mounts disappears with the namespace.
    return r"""set -e
LOWER=$1; RUN=$2; R=$RUN/merged
mount --make-rprivate /
mount -t overlay overlay -o "lowerdir=$LOWER,upperdir=$RUN/upper,workdir=$RUN/work" "$R"
mount -t proc proc "$R/proc"
# logd reads /proc/kmsg; reading the real one would take the host's kernel messages away.
mkfifo -m 600 "$RUN/kmsg"
sleep 2147483647 <>"$RUN/kmsg" >&0 2>/dev/null &
mount --bind "$RUN/kmsg" "$R/proc/kmsg"
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$R/sys"
mount -t tmpfs -o mode=1777,nosuid,nodev,size=128m tmpfs "$R/tmp"
mkdir -p "$R/tmp/run" "$R/tmp/lock" "$R/tmp/state" "$R/tmp/shm" "$R/tmp/log"
mount -t tmpfs -o mode=0755,nosuid,size=512k tmpfs "$R/dev"
for d in null:1:3 zero:1:5 full:1:7 random:1:8 urandom:1:9 tty:5:0; do
    n=${d%%:*}; mm=${d#*:}; mknod -m 666 "$R/dev/$n" c "${mm%:*}" "${mm#*:}"
done
ln -s /proc/self/fd "$R/dev/fd"
ln -s /proc/self/fd/0 "$R/dev/stdin"
ln -s /proc/self/fd/1 "$R/dev/stdout"
ln -s /proc/self/fd/2 "$R/dev/stderr"
ln -s /tmp/shm "$R/dev/shm"
touch "$R/dev/console"
mount --bind "$RUN/console.log" "$R/dev/console"
mkdir -p "$R/dev/pts"
mount -t devpts -o newinstance,ptmxmode=0666 devpts "$R/dev/pts" \
    && ln -s pts/ptmx "$R/dev/ptmx" || true
hostname OpenWrt
cd "$R"
# container=...: procd skips the /dev remount and ends the pid namespace on poweroff.
exec chroot "$R" /usr/bin/env -i container=energyhub-lab PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    /sbin/procd
"""


def _copy_tree(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


def install_project(upper: Path, enable: bool = True) -> None:
    """Lay the energyhubd package out in ``upper`` as its OpenWrt package installs it."""
    files = REPO / "openwrt-package" / "energyhubd" / "files"
    _copy_tree(REPO / "daemon" / "energyhubd", upper / SITE_PACKAGES / "energyhubd")
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    (upper / "usr/bin").mkdir(parents=True, exist_ok=True)
    for name in ("energyhubd", "energyhubctl"):
        module, func = scripts[name].split(":")
        path = upper / "usr/bin" / name
        path.write_text(
            f"#!/usr/bin/python3\nimport sys\nfrom {module} import {func}\nsys.exit({func}())\n"
        )
        path.chmod(0o755)
    placed = {
        "etc/init.d/energyhubd": (REPO / "init.d" / "energyhubd", 0o755),
        "etc/config/energyhub": (files / "energyhub.config", 0o600),
        "usr/share/rpcd/acl.d/energyhub.json": (files / "energyhub.acl.json", 0o644),
        "etc/hotplug.d/dhcp/90-energyhubd": (files / "hotplug-dhcp", 0o644),
        "etc/capabilities/energyhubd.json": (files / "energyhubd.capabilities.json", 0o644),
    }
    for rel, (src, mode) in placed.items():
        target = upper / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, target)
        target.chmod(mode)
    if enable:  # what `/etc/init.d/energyhubd enable` does at package install
        rcd = upper / "etc/rc.d"
        rcd.mkdir(parents=True, exist_ok=True)
        init = (REPO / "init.d" / "energyhubd").read_text()
        for key, letter in (("START", "S"), ("STOP", "K")):
            for line in init.splitlines():
                if line.startswith(f"{key}="):
                    (rcd / f"{letter}{line.split('=', 1)[1]}energyhubd").symlink_to(
                        "../init.d/energyhubd"
                    )


@dataclass
class OpenWrtRouter:
    """A booted router: ``up()`` then ``sh()``/``run()``; ``down()`` always (also on failure)."""

    prefix: str
    run_dir: Path
    build_dir: Path | None = None
    with_project: bool = True
    enable_project: bool = True
    # extra files for the overlay, path inside the router -> content (written before boot)
    files: dict[str, str] = field(default_factory=dict)
    procd_pid: int | None = None
    boot_seconds: float | None = None
    _procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def rtr(self) -> str:
        return f"{self.prefix}-rtr"

    @property
    def up_ns(self) -> str:
        return f"{self.prefix}-up"

    @property
    def lan_ns(self) -> str:
        return f"{self.prefix}-lan"

    @property
    def root(self) -> Path:
        """The router's root as the host sees it (through procd's /proc entry)."""
        if self.procd_pid is None:
            raise OpenWrtError("router is not up")
        return Path(f"/proc/{self.procd_pid}/root")

    def up(self) -> None:
        try:
            self._up()
        except BaseException:
            self.down()
            raise

    def _up(self) -> None:
        if self.build_dir is None:
            self.build_dir = build()
        rootfs = self.build_dir / "rootfs"
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for sub in ("upper", "work", "merged"):
            (self.run_dir / sub).mkdir()
        upper = self.run_dir / "upper"
        if self.with_project:
            install_project(upper, enable=self.enable_project)
        for rel, text in self.files.items():
            target = upper / rel.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        console = self.run_dir / "console.log"
        console.touch()
        (self.run_dir / "launch.sh").write_text(_launcher())
        for name in (self.rtr, self.up_ns, self.lan_ns):
            netns.add_namespace(name)
        netns.run(["ip", "-n", self.rtr, "link", "add", "wan", "type", "veth", "peer", "name",
                   "up0", "netns", self.up_ns])  # fmt: skip
        netns.run(["ip", "-n", self.rtr, "link", "add", "lan1", "type", "veth", "peer", "name",
                   "eth0", "netns", self.lan_ns])  # fmt: skip
        netns.ip(self.up_ns, "addr", "add", f"{UPSTREAM_ADDRESS}/24", "dev", "up0")
        netns.ip(self.up_ns, "link", "set", "up0", "up")
        netns.ip(self.lan_ns, "link", "set", "eth0", "up")
        self._procs.append(
            netns.spawn_logged(
                self.up_ns,
                ["dnsmasq", "--keep-in-foreground", "--port=0", "--interface=up0",
                 "--bind-interfaces", "--dhcp-range=198.51.100.100,198.51.100.150,255.255.255.0,1h",
                 f"--dhcp-option=3,{UPSTREAM_ADDRESS}", f"--dhcp-option=6,{UPSTREAM_ADDRESS}",
                 f"--dhcp-leasefile={self.run_dir / 'upstream.leases'}", "--pid-file=",
                 "--user=root", f"--log-facility={self.run_dir / 'upstream-dnsmasq.log'}"],
                self.run_dir / "upstream-dnsmasq.log",
            )
        )  # fmt: skip
        started = time.monotonic()
        with open(console, "ab") as out:
            launcher = subprocess.Popen(
                ["ip", "netns", "exec", self.rtr, "unshare", "--pid", "--fork", "--mount",
                 "--uts", "--ipc", "--kill-child", "sh", str(self.run_dir / "launch.sh"),
                 str(rootfs), str(self.run_dir)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
        self._procs.append(launcher)
        self.procd_pid = self._wait_for_procd(launcher)
        done = self.root / BOOT_DONE
        deadline = started + BOOT_TIMEOUT
        while not done.exists():
            if launcher.poll() is not None:
                raise OpenWrtError(f"procd exited during boot:\n{self.console()[-3000:]}")
            if time.monotonic() > deadline:
                raise OpenWrtError(f"boot not done in {BOOT_TIMEOUT} s:\n{self.console()[-3000:]}")
            time.sleep(0.05)
        self.boot_seconds = time.monotonic() - started

    def _wait_for_procd(self, launcher: subprocess.Popen[bytes]) -> int:
        # ip netns exec execs unshare, whose only child becomes PID 1 (launcher, then procd).
        children = Path(f"/proc/{launcher.pid}/task/{launcher.pid}/children")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                for pid in children.read_text().split():
                    if Path(f"/proc/{pid}/comm").read_text().strip() == "procd":
                        return int(pid)
            if launcher.poll() is not None:
                break
            time.sleep(0.02)
        raise OpenWrtError(f"procd did not start:\n{self.console()[-3000:]}")

    def console(self) -> str:
        try:
            return (self.run_dir / "console.log").read_text(errors="replace")
        except OSError:
            return ""

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` as run inside the router (its namespaces, root and a clean environment)."""
        if self.procd_pid is None:
            raise OpenWrtError("router is not up")
        return ["nsenter", "-t", str(self.procd_pid), "-m", "-u", "-i", "-n", "-p", "-r", "-w",
                "env", "-i", f"PATH={PATH_INSIDE}", "HOME=/root", *argv]  # fmt: skip

    def run(
        self, *argv: str, check: bool = False, timeout: float = 60, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            self.command(list(argv)), capture_output=True, text=True, timeout=timeout, input=input
        )
        if check and proc.returncode != 0:
            raise OpenWrtError(
                f"{' '.join(argv)}: exit {proc.returncode}: {proc.stderr.strip() or proc.stdout}"
            )
        return proc

    def sh(
        self, script: str, check: bool = False, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return self.run("/bin/sh", "-c", script, check=check, timeout=timeout)

    def down(self) -> None:
        """procd shutdown (``rcS K``), SIGKILL to PID 1 if it hangs; namespaces removed."""
        pid = self.procd_pid
        if pid is not None and _alive(pid):
            # SIGUSR2 = poweroff: procd stops the services, then reboot(2) ends the pid ns.
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGUSR2)
            deadline = time.monotonic() + SHUTDOWN_TIMEOUT
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)  # PID 1 gone: the kernel kills the namespace
        for proc in reversed(self._procs):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        self._procs.clear()
        for name in (self.rtr, self.up_ns, self.lan_ns):
            if name in netns.list_namespaces():
                netns.delete_namespace(name)
        self.procd_pid = None


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"
