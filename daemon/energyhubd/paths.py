"""Where energyhubd looks for things when the command line does not say, and which platform
it runs on (the configuration parser is told, it never looks)."""

from __future__ import annotations

import os

OPENWRT_RELEASE = "/etc/openwrt_release"
OPENWRT_CONFIG = "/etc/config/energyhub"
LINUX_CONFIG = "/etc/energyhubd/config.json"
PID_FILE = "/var/run/energyhubd.pid"


def detect_platform() -> str:
    """``openwrt`` on an OpenWrt system, else ``linux``: what ``platform: auto`` means."""
    return "openwrt" if os.path.exists(OPENWRT_RELEASE) else "linux"


def default_config_path() -> str | None:
    """The platform's configuration file, or None (built-in defaults) when it is absent."""
    path = OPENWRT_CONFIG if detect_platform() == "openwrt" else LINUX_CONFIG
    return path if os.path.exists(path) else None


def write_pid_file(path: str) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as handle:
        handle.write(f"{os.getpid()}\n")


def remove_pid_file(path: str) -> None:
    """Only our own: a newer instance may already have written its pid there."""
    try:
        with open(path) as handle:
            if handle.read().strip() == str(os.getpid()):
                os.unlink(path)
    except OSError:
        pass
