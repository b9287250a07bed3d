"""Where energyhubd looks for things when the command line does not say."""

from __future__ import annotations

import os

from energyhubd.config.load import detect_platform

OPENWRT_CONFIG = "/etc/config/energyhub"
LINUX_CONFIG = "/etc/energyhubd/config.json"
PID_FILE = "/var/run/energyhubd.pid"


def default_config_path() -> str | None:
    """The platform's configuration file, or None (built-in defaults) when it is absent."""
    path = OPENWRT_CONFIG if detect_platform() == "openwrt" else LINUX_CONFIG
    return path if os.path.exists(path) else None
