"""Configuration from disk, read for the machine the daemon runs on.

The parser (``energyhubd.config.load``) is pure: it neither reads files nor looks at the
host. This module is the shell around it: it reads a file in either spelling (JSON, or UCI as
``/etc/config/energyhub`` on OpenWrt), maps UCI errors back to their lines, and passes the
detected platform (``energyhubd.paths.detect_platform``) for ``platform: auto``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from energyhubd.config import load
from energyhubd.config.errors import ConfigError, FieldError
from energyhubd.config.model import Config
from energyhubd.paths import detect_platform


def parse_document(obj: Any, source: str = "") -> Config:
    """:func:`energyhubd.config.load.parse_document` for this machine's platform."""
    return load.parse_document(obj, source, host_platform=detect_platform())


def load_file(path: str | os.PathLike[str], host_platform: str | None = None) -> Config:
    """Load a configuration file: JSON (``.json`` or text starting with ``{``) or UCI."""
    platform = host_platform or detect_platform()
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ConfigError([FieldError("", f"cannot read: {exc.strerror}")], str(p)) from None
    stripped = data.lstrip()
    if p.suffix == ".json" or stripped.startswith(b"{") or not stripped:
        return load.parse_text(data or b"{}", str(p), host_platform=platform)
    from energyhubd.openwrt import uci, uci_document  # UCI form; imported only when used

    package = uci.parse(data.decode("utf-8", errors="replace"), str(p))
    document = uci_document.uci_to_document(package, str(p))
    try:
        return load.parse_document(document, str(p), host_platform=platform)
    except ConfigError as exc:
        raise uci_document.annotate(exc, package) from None
