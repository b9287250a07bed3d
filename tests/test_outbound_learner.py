"""The allowlist learner without a kernel (``table=None``): what a refresh job learns, what it
keeps when a source fails, and the inputs it gives the compiler. The tunnel driver's refusals
when the tunnel is disabled ride along (no child is started)."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from energyhubd.config.load import parse_document
from energyhubd.config.model import Config
from energyhubd.loop import EventLoop
from energyhubd.outbound.learner import AllowlistLearner
from energyhubd.outbound.tunnel_driver import TunnelDriver

SAMPLE = Path(__file__).parent / "outbound_ip_ranges_sample.json"


class Resolver:
    """Stands in for ``diagnose.resolve``: answers ``addresses`` (empty: a failed lookup)."""

    def __init__(self, addresses: list[str]) -> None:
        self.addresses = addresses

    def __call__(self, name: str, servers: Sequence[str], timeout: float) -> tuple[list[str], str]:
        return list(self.addresses), "" if self.addresses else "no answer"


def allowlist_config(tmp_path: Path) -> Config:
    ranges = tmp_path / "ip-ranges.json"
    shutil.copy(SAMPLE, ranges)
    return parse_document(
        {
            "platform": "linux",
            "state_dir": str(tmp_path),
            "egress": {"mode": "allowlist"},
            "outbound": {"ip_ranges_file": str(ranges)},
        }
    )


def refreshed(loop: EventLoop, published: threading.Event, step: Callable[[], None]) -> None:
    """Run ``step`` on the loop and wait until the refresh job it started published."""
    published.clear()
    loop.post(step)
    assert published.wait(5)


def test_a_refresh_learns_and_a_failed_lookup_keeps_the_last_addresses(
    loop: EventLoop, tmp_path: Path
) -> None:
    resolver = Resolver(["203.0.113.10", "203.0.113.10", "203.0.113.9"])
    published = threading.Event()
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 192.0.2.53\nnameserver 127.0.0.1\n")
    learner = AllowlistLearner(loop, None, str(resolv), published.set, resolver)
    config = allowlist_config(tmp_path)
    refreshed(loop, published, lambda: learner.configure(config))
    status = learner.status()
    assert status["mode"] == "allowlist"
    assert status["dns_servers"] == ["192.0.2.53"] and status["dns_source"] == str(resolv)
    assert status["broker_addresses"] == ["203.0.113.10", "203.0.113.9"]
    assert status["s3_prefixes"] > 0 and status["ip_ranges_error"] is None
    inputs = learner.egress_inputs(config)
    assert inputs is not None and inputs.broker_addresses == ("203.0.113.10", "203.0.113.9")

    resolver.addresses = []
    refreshed(loop, published, lambda: learner.refresh("test"))
    status = learner.status()
    assert status["broker_addresses"] == ["203.0.113.10", "203.0.113.9"]
    assert status["broker_error"] == "no answer"
    loop.post(learner.close)


def test_open_mode_learns_nothing(loop: EventLoop, tmp_path: Path) -> None:
    learner = AllowlistLearner(loop, None, None, lambda: None, Resolver(["203.0.113.10"]))
    config = parse_document({"platform": "linux", "state_dir": str(tmp_path)})
    learner.configure(config)  # open mode starts no job and no timer
    assert learner.egress_inputs(config) is None
    assert learner.status() == {"mode": "open"}
    assert not learner.read_counters()


def test_a_disabled_tunnel_refuses_open_and_close(loop: EventLoop, tmp_path: Path) -> None:
    driver = TunnelDriver(loop, lambda: None)
    driver.configure(parse_document({"platform": "linux", "state_dir": str(tmp_path)}))
    assert driver.status() == {"mode": "disabled", "state": "disabled"}
    for action in (driver.open, driver.close):
        with pytest.raises(RuntimeError, match="disabled in the configuration"):
            action()
