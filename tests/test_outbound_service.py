"""The outbound service without a kernel: scheduling of diagnostics runs, the allowlist in the
compiled table, DNS server sources, argument checks and rendering.

The service runs on a real ``EventLoop`` (on a thread of its own here, as in the daemon);
the diagnostics runner is a stand-in that records when it ran.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from energyhubd.config.errors import ConfigError
from energyhubd.config.load import parse_document
from energyhubd.control.methods import MethodError
from energyhubd.control.render import render_diagnose, render_outbound
from energyhubd.control.status import build_method_table
from energyhubd.loop import EventLoop
from energyhubd.outbound import diagnostics as outbound_diagnostics
from energyhubd.outbound import reasons
from energyhubd.outbound import service as outbound_service
from energyhubd.outbound.diagnose import Row
from energyhubd.outbound.inputs import read_nameservers, wan_dns_servers
from energyhubd.outbound.service import OutboundService
from energyhubd.policy import egress, nft
from tests.loopthread import on_loop


class SlowRunner:
    """Stands in for ``diagnose.run_all``: takes ``seconds`` and records each run."""

    def __init__(self, seconds: float = 0.3) -> None:
        self.seconds = seconds
        self.runs: list[tuple[float, float, list[str]]] = []

    def __call__(self, settings: Any, dns: list[str], fallback: list[str], **_: Any) -> list[Row]:
        start = time.monotonic()
        time.sleep(self.seconds)
        self.runs.append((start, time.monotonic(), list(dns)))
        return [
            Row(
                "dns",
                f"{dns[0] if dns else '-'}:53",
                1.5,
                reasons.ok("resolved") if dns else reasons.other("no DNS server"),
            ),
            Row(
                "gateway",
                "203.0.113.20:2443",
                None,
                reasons.other("TCP 2443 to 203.0.113.20: no answer"),
            ),
        ]


def make_service(
    loop: EventLoop, tmp_path: Path, runner: SlowRunner, **doc: Any
) -> OutboundService:
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("# from udhcpc\nnameserver 192.0.2.53\nnameserver 127.0.0.1\n")
    published: list[int] = []
    svc = OutboundService(loop, None, str(resolv), lambda: published.append(1), runner=runner)
    config = parse_document({"platform": "linux", "state_dir": str(tmp_path), **doc})
    on_loop(loop, lambda: svc.configure(config))
    return svc


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outbound_diagnostics, "STARTUP_DELAY", 3600.0)
    monkeypatch.setattr(outbound_diagnostics, "MIN_GAP", 0.5)


def test_requests_during_a_run_share_it_and_later_ones_keep_a_gap(
    loop: EventLoop, tmp_path: Path
) -> None:
    runner = SlowRunner(0.3)
    svc = make_service(loop, tmp_path, runner)
    first = on_loop(loop, lambda: svc.request("on demand"))
    assert on_loop(loop, lambda: svc.request("on demand")) == first  # joins the run in flight
    result = svc.wait_for(first, 5)
    assert result is not None and result.number == first
    assert result.dns_servers == ("192.0.2.53",)  # loopback (our own dnsmasq) skipped
    assert not result.passed and [r.flow for r in result.failed] == ["gateway"]
    second = on_loop(loop, lambda: svc.request("on demand"))
    assert second == first + 1
    assert on_loop(loop, lambda: svc.diagnostics_status())["state"] == "scheduled"
    assert svc.wait_for(second, 5) is not None
    assert len(runner.runs) == 2
    gap = runner.runs[1][0] - runner.runs[0][1]
    assert gap >= 0.45, f"runs only {gap:.2f} s apart"
    status = on_loop(loop, svc.status)
    assert status["diagnostics"]["runs"] == 2
    assert status["diagnostics"]["next_run"] is not None  # the interval timer is armed
    assert status["health"]["failed"] == {"gateway": "TCP 2443 to 203.0.113.20: no answer"}


def test_a_waiter_gets_none_on_timeout_and_is_released_at_shutdown(
    loop: EventLoop, tmp_path: Path
) -> None:
    svc = make_service(loop, tmp_path, SlowRunner(1.0))
    number = on_loop(loop, lambda: svc.request("on demand"))
    assert svc.wait_for(number, 0.1) is None
    released: list[str] = []

    def waiter() -> None:
        try:
            svc.wait_for(number + 1, 30)
        except RuntimeError as exc:
            released.append(str(exc))

    thread = threading.Thread(target=waiter)
    thread.start()
    on_loop(loop, svc.close)
    thread.join(5)
    assert released == ["the daemon is stopping"]


def test_wan_up_triggers_one_run(loop: EventLoop, tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setattr(outbound_service, "WAN_SETTLE", 0.1)
    runner = SlowRunner(0.05)
    svc = make_service(loop, tmp_path, runner)
    on_loop(loop, lambda: svc.wan_changed([]))
    on_loop(loop, lambda: svc.wan_changed(["198.51.100.10/24"]))
    on_loop(loop, lambda: svc.wan_changed(["198.51.100.10/24"]))  # unchanged: no new run
    assert svc.wait_for(1, 5) is not None
    time.sleep(0.8)
    assert len(runner.runs) == 1
    assert svc.last is not None and svc.last.trigger == "wan up"


def test_resolv_sources(tmp_path: Path) -> None:
    path = tmp_path / "r"
    path.write_text("nameserver 192.0.2.1\nnameserver fe80::1\nnameserver 192.0.2.1\nsearch lan\n")
    assert read_nameservers(str(path)) == ["192.0.2.1"]
    assert read_nameservers(str(tmp_path / "missing")) is None
    static = parse_document(
        {
            "platform": "linux",
            "wan": {
                "proto": "static",
                "address": "198.51.100.10/24",
                "gateway": "198.51.100.1",
                "dns": ["192.0.2.9"],
            },
        }
    )
    assert wan_dns_servers(static, str(path)) == (["192.0.2.9"], "wan.dns")
    dhcp = parse_document({"platform": "linux"})
    assert wan_dns_servers(dhcp, str(path)) == (["192.0.2.1"], str(path))


# -- the allowlist in the compiled table --------------------------------------------------------


def test_allowlist_is_accepted_and_anything_else_refused() -> None:
    assert parse_document({"egress": {"mode": "allowlist"}}).egress_mode == "allowlist"
    with pytest.raises(ConfigError) as err:
        parse_document({"egress": {"mode": "strict"}})
    assert "egress.mode" in str(err.value.render())


def test_allowlist_replaces_the_open_lan_accept_and_adds_the_output_chain() -> None:
    config = parse_document({"egress": {"mode": "allowlist"}, "dns": {"fallback": ["192.0.2.8"]}})
    inputs = egress.EgressInputs(dns_servers=("192.0.2.53",), broker_addresses=("203.0.113.10",))
    ruleset = nft.compile_ruleset(config, None, inputs)
    objects = ruleset["nftables"]
    comments = [o["rule"].get("comment") for o in objects if "rule" in o]
    assert "lan to wan" not in comments
    assert "lan egress drop other" in comments and "egress drop other" in comments
    sets = {o["set"]["name"]: o["set"] for o in objects if "set" in o}
    assert sets["dns_v4"]["elem"] == ["192.0.2.53", "192.0.2.8"]
    assert sets["broker_v4"]["elem"][0]["elem"]["val"] == "203.0.113.10"
    # The rules do not depend on learned data: a new address never forces a table replace.
    bare = nft.compile_ruleset(config)
    assert nft.normalise(bare) == nft.normalise(ruleset)
    # Open mode stays exactly as before (the golden files hold it byte for byte).
    open_config = parse_document({})
    assert nft.compile_ruleset(open_config, None, inputs) == nft.compile_ruleset(open_config)


def test_sets_transaction_only_touches_sets() -> None:
    plan = egress.plan_for(
        parse_document({"egress": {"mode": "allowlist"}}),
        egress.EgressInputs(("192.0.2.53",), ("203.0.113.10",), ()),
    )
    doc = egress.sets_transaction(plan)
    verbs = [(next(iter(c)), next(iter(next(iter(c.values()))))) for c in doc["nftables"]]
    assert verbs == [
        ("flush", "set"),
        ("add", "element"),
        ("flush", "set"),
        ("add", "element"),
        ("delete", "element"),
        ("add", "element"),
    ]


def test_executor_refuses_anything_but_set_contents() -> None:
    pytest.importorskip("nftables")
    from energyhubd.kernel.table import NftError, Table

    executor = Table()
    with pytest.raises(NftError, match="refused"):
        executor.update_sets({"nftables": [{"delete": {"table": {"family": "inet", "name": "x"}}}]})
    other = {"family": "inet", "table": "fw4", "name": "s", "elem": ["192.0.2.1"]}
    with pytest.raises(NftError, match="refused"):
        executor.update_sets({"nftables": [{"add": {"element": other}}]})


# -- the control method and its rendering ------------------------------------------------------


class _FakeDaemon:
    def __init__(self) -> None:
        self.outbound = None

    def call_on_loop(self, func: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        return func()


def test_diagnose_arguments_are_checked_with_clear_errors() -> None:
    table = build_method_table(_FakeDaemon())  # type: ignore[arg-type]
    with pytest.raises(MethodError, match="'timeout' must be 1-300 seconds, not 0"):
        table.call("diagnose", {"timeout": 0})
    with pytest.raises(MethodError, match="'wait' must be true or false"):
        table.call("diagnose", {"wait": "yes"})
    with pytest.raises(MethodError, match=r"unknown argument 'colour' \(accepted: timeout, wait\)"):
        table.call("diagnose", {"colour": 1})


def test_diagnose_table_and_status_lines() -> None:
    result = {
        "run": 3,
        "at": "2026-01-01T00:00:00Z",
        "seconds": 2.1,
        "dns_servers": ["198.51.100.1"],
        "dns_source": "/tmp/resolv",
        "fallback": ["8.8.8.8"],
        "passed": False,
        "failed_flows": ["gateway"],
        "rows": [
            {"flow": "dns", "passed": True, "latency_ms": 1.23, "reason": "resolved"},
            {"flow": "gateway", "passed": False, "latency_ms": None, "reason": "TCP 2443: no"},
        ],
    }
    text = render_diagnose(result)
    assert "FLOW          RESULT  LATENCY  REASON" in text
    assert "dns           PASS     1.2 ms  resolved" in text
    assert "gateway       FAIL          -  TCP 2443: no" in text
    assert text.endswith("FAILING: gateway")
    lines = render_outbound(
        {
            "diagnostics": {"state": "idle", "last": {**result, "trigger": "interval"}},
            "egress": {
                "mode": "allowlist",
                "broker_addresses": ["203.0.113.10"],
                "drops": {"router": {"mqtt": 0}, "lan": {"other": 4}},
            },
            "tunnel": {"mode": "disabled"},
        }
    )
    assert lines[0].startswith("outbound  FAILING gateway")
    assert "          gateway: TCP 2443: no" in lines
    assert "          dropped: lan other 4" in lines
