"""Keep the merged upstream resolv file of our own dnsmasq (plain Linux) up to date.

dnsmasq's ``strict-order`` asks ``server=`` lines before the servers of its resolv file, so
the DHCP-provided servers and ``dns.fallback`` are merged into one file in the right order
(``policy.dhcp.render_upstream``). The WAN DHCP client rewrites its resolv file on every
lease change; an inotify watch on the event loop notices that (no polling), and after a short
settle delay (a client script may write the file in several steps) the merged file is
rewritten, only when its text changed. dnsmasq polls the mtime of its resolv file and
re-reads it by itself: no restart, no lost cache.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from pathlib import Path

from energyhubd.config.atomic import write_if_changed
from energyhubd.kernel.filewatch import FileWatch
from energyhubd.loop import EventLoop, Timer
from energyhubd.policy.dhcp import render_upstream, upstream_servers

log = logging.getLogger("energyhubd.dnsmasq")

SETTLE = 0.2  # seconds after the last change of the WAN resolv file before it is read


class UpstreamFile:
    """``target`` = servers of ``source`` (the WAN resolv file), then the fallback.

    Lives on the event loop. Without a loop (one-shot use) the file is written on
    ``configure`` only.
    """

    def __init__(self, source: str, target: str | Path, loop: EventLoop | None = None) -> None:
        self.source = source
        self.target = Path(target)
        self.loop = loop
        self.fallback: tuple[ipaddress.IPv4Address, ...] = ()
        self.servers: list[str] = []
        self._watch: FileWatch | None = None
        self._timer: Timer | None = None

    def configure(self, fallback: tuple[ipaddress.IPv4Address, ...]) -> bool:
        """Set the fallback, start watching the source; True when the file was rewritten."""
        self.fallback = tuple(fallback)
        if self._watch is None and self.loop is not None:
            try:
                self._watch = FileWatch(self.source)
            except OSError as exc:
                log.warning(
                    "cannot watch %s (%s): DNS servers follow it on reload only", self.source, exc
                )
            else:
                self.loop.add_reader(self._watch, self._on_change)
        return self.refresh()

    def refresh(self) -> bool:
        """Re-read the source and rewrite the merged file if its text changes."""
        try:
            text = Path(self.source).read_text(encoding="utf-8", errors="replace")
        except OSError:
            text = ""  # no lease yet: the fallback alone until the client writes the file
        servers = upstream_servers(text)
        try:
            old_mtime = int(self.target.stat().st_mtime)
        except OSError:
            old_mtime = None
        if not write_if_changed(self.target, render_upstream(servers, self.fallback)):
            return False
        # dnsmasq notices a change by the file's mtime in whole seconds: two writes in the
        # same second would look like one, so the new file's mtime is moved on.
        if old_mtime is not None and int(self.target.stat().st_mtime) <= old_mtime:
            os.utime(self.target, (old_mtime + 1, old_mtime + 1))
        if servers != self.servers:
            log.info(
                "DNS upstream: %s, then fallback %s",
                ", ".join(servers) or "no DHCP-provided server",
                ", ".join(str(a) for a in self.fallback) or "none",
            )
        self.servers = servers
        return True

    def _on_change(self) -> None:
        assert self._watch is not None and self.loop is not None
        if not self._watch.drain():
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_later(SETTLE, self._settled)

    def _settled(self) -> None:
        self._timer = None
        self.refresh()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._watch is not None:
            if self.loop is not None:
                self.loop.remove_reader(self._watch)
            self._watch.close()
            self._watch = None
