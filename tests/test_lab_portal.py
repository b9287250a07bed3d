"""The portal link on the running lab: real mosquitto (mutual TLS), real pushes, real cuts."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from energyhub_lab import checks, internet, netns
from energyhub_lab import portal as lab_portal
from energyhub_lab.site import TUNNEL_REMOTE_PORT, Site
from energyhubd.control.client import call

pytestmark = [pytest.mark.netns, pytest.mark.feed]


def status(site: Site) -> dict[str, Any]:
    return call(site.socket, "status")


def reported_since(site: Site, mark: int, state: str, timeout: float) -> dict[str, Any]:
    result: dict[str, Any] = lab_portal.wait_for_message(
        site.portal_log,
        "config/reported",
        lambda v: isinstance(v, dict) and v.get("state") == state,
        timeout,
        after=mark,
    )
    return result


def alive(pid: int) -> bool:
    """Running, not a zombie waiting for the test process to reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def answer(site: Site, ident: str, mark: int) -> dict[str, Any]:
    """The portal's view: the device's answer to command ``ident`` (recorded after ``mark``)."""
    result: dict[str, Any] = lab_portal.wait_for_message(
        site.portal_log,
        "command/result",
        lambda v: isinstance(v, dict) and v.get("id") == ident,
        15,
        after=mark,
    )
    return result


def reported_count(site: Site) -> int:
    return len(lab_portal.read_messages(site.portal_log, "config/reported"))


def test_health_report_carries_site_state(lab: Site) -> None:
    ok, detail = checks.check_portal_link(lab)
    assert ok, detail
    # The recorder's log holds the whole session: reports before this mark were built for
    # other tests (test_lab_site's rollback check builds some while it cuts the link, with
    # the same digest and connected: false) and prove nothing here. Cause a significant
    # change of our own and judge only the reports recorded after it.
    mark = len(lab_portal.read_messages(lab.portal_log, "health"))
    repairs = status(lab)["policy"]["drift_repairs"]
    netns.ns_run(lab.router, ["nft", "delete", "table", "inet", "energyhub"])
    lab.wait_for(
        lambda: status(lab)["policy"]["drift_repairs"] == repairs + 1, 10, "table not restored"
    )
    now = status(lab)
    # A drift repair is significant: a fresh report follows within seconds, not minutes.
    report = lab_portal.wait_for_message(
        lab.portal_log,
        "health",
        lambda v: isinstance(v, dict) and v["health"]["policy"]["drift_repairs"] == repairs + 1,
        15,
        after=mark,
    )
    health = report["health"]
    assert health["policy"]["digest"] == now["policy"]["digest"]
    assert health["policy"]["state"] == "applied"
    assert health["wan"]["addresses"] and health["wan"]["addresses"] == now["wan"]["addresses"]
    assert health["portal"]["connected"] is True
    assert set(health["lan"]) >= {"display_present", "units", "unknown_devices"}


def test_kill_during_confirm_window_rolls_back_at_restart(lab: Site) -> None:
    """rpcd forgets its rollback on a crash; energyhubd must not."""
    assert lab.internet is not None
    before = status(lab)
    version = checks._next_version(lab)
    mark = reported_count(lab)
    lab.internet.block("mqtt_tls", "drop-new")
    try:
        lab.push(checks._with_path_change(lab, version, "198.51.100.40"))
        lab.wait_for(lambda: status(lab)["config"]["version"] == version, 15, "not applied")
        assert status(lab)["portal"]["config_state"] == "pending_confirm"
        pid = lab.daemon_pid()
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        lab.wait_for(lambda: not alive(pid), 5, "daemon still alive")
        lab.start_daemon()
        # The restart itself rolled back, before the link could say anything.
        assert status(lab)["config"]["version"] == before["config"]["version"]
        # (Forwards that follow a device reopen once its lease is read again.)
        lab.wait_for(
            lambda: status(lab)["policy"]["digest"] == before["policy"]["digest"],
            10,
            "policy not restored whole",
        )
    finally:
        lab.internet.clear()
    reported = reported_since(lab, mark, "rolled_back", 30)
    assert reported["desired_version"] == version
    assert status(lab)["config"]["version"] == before["config"]["version"]


def test_confirm_false_skips_the_window(lab: Site) -> None:
    """For changes expected to drop the link: applied at once, no rollback."""
    assert lab.internet is not None
    version = checks._next_version(lab)
    doc = checks._with_allowed_source(lab, version, "198.51.100.41")
    doc["confirm"] = False
    mark = reported_count(lab)
    lab.internet.block("mqtt_tls", "drop-new")
    try:
        lab.push(doc)
        lab.wait_for(lambda: status(lab)["config"]["version"] == version, 15, "not applied")
        reported = reported_since(lab, mark, "applied", 10)
        assert reported["applied_version"] == version
        assert status(lab)["portal"]["config_state"] == "applied"
    finally:
        lab.internet.clear()
    # No window is open, so nothing can roll it back later.
    assert status(lab)["portal"]["pending"] is False


def test_garbage_push_is_rejected_and_changes_nothing(lab: Site) -> None:
    before = status(lab)
    mark = reported_count(lab)
    lab.push(b'{"version": 99, "lan": {"dhcp": ')
    reported = reported_since(lab, mark, "rejected", 15)
    assert reported["errors"], reported
    mark = reported_count(lab)
    lab.push(b"x" * (140 * 1024))
    reported = reported_since(lab, mark, "rejected", 15)
    assert any("limit is 131072" in e["reason"] for e in reported["errors"]), reported
    after = status(lab)
    assert after["policy"]["digest"] == before["policy"]["digest"]
    assert after["config"]["version"] == before["config"]["version"]
    assert after["portal"]["connected"] is True


def test_push_may_not_change_device_local_keys(lab: Site) -> None:
    version = checks._next_version(lab)
    doc = checks._with_allowed_source(lab, version, "198.51.100.42")
    doc["portal"] = {"host": "evil.example"}
    mark = reported_count(lab)
    lab.push(doc)
    reported = reported_since(lab, mark, "rejected", 15)
    assert [e["field"] for e in reported["errors"]] == ["portal"]
    assert status(lab)["portal"]["broker"].startswith("data2.ferroamp.se")


OTHER = ["-t", "energyhub/eh-other/#"]


def test_broker_acl_confines_a_device_to_its_own_topics(lab: Site) -> None:
    """The router's certificate is its identity: it cannot write another device's topics."""
    d = lab.internet_dir
    device = ["-h", internet.BROKER_IP, "-p", "8883", "--cafile", str(d / "lab-ca.pem")]
    device += ["--cert", str(d / "router-client.pem"), "--key", str(d / "router-client.key")]
    device += ["--insecure", "-q", "1"]
    # Retained: without the ACL the portal's subscription below would receive it.
    netns.ns_run(
        lab.inet, ["mosquitto_pub", *device, "-r", "-t", "energyhub/eh-other/x", "-m", "a"]
    )
    # Only the device's report leaves are writable (docs/fleet.md): not its desired state.
    netns.ns_run(
        lab.inet,
        ["mosquitto_pub", *device, "-t", "energyhub/eh-lab/config/desired", "-m", "{}"],
    )
    netns.ns_run(lab.inet, ["mosquitto_pub", *device, "-t", "energyhub/eh-lab/events", "-m", "b"])
    lab_portal.wait_for_message(lab.portal_log, "events", lambda v: v == "b", 10)
    assert all(v != {} for _l, v in lab_portal.read_messages(lab.portal_log, "config/desired"))
    seen = netns.ns_run(
        lab.inet,
        [
            "mosquitto_sub",
            *internet.portal_client_args(d),
            "-t",
            "energyhub/eh-other/#",
            "-C",
            "1",
            "-W",
            "2",
            "-v",
        ],
        check=False,
    )
    assert "eh-other" not in seen


def test_portal_command_opens_and_closes_the_support_tunnel(lab: Site) -> None:
    def gateway_side_open() -> bool:
        return internet.tcp_connect_in(lab.inet, "127.0.0.1", TUNNEL_REMOTE_PORT, 1)[0]

    mark = len(lab_portal.read_messages(lab.portal_log, "command/result"))
    lab.command({"id": "c1", "method": "tunnel", "args": {"action": "open", "hours": 1}})
    opened = answer(lab, "c1", mark)
    assert opened["ok"] is True, opened
    lab.wait_for(gateway_side_open, 20, "the tunnel does not reach the gateway")
    assert status(lab)["outbound"]["tunnel"]["state"] == "running"

    lab.command({"id": "c2", "method": "tunnel", "args": {"action": "close"}})
    assert answer(lab, "c2", mark)["ok"] is True
    lab.wait_for(lambda: not gateway_side_open(), 10, "the tunnel is still open")

    lab.command({"id": "c3", "method": "reload"})
    refused = answer(lab, "c3", mark)
    assert refused["ok"] is False and "cannot be called from the portal" in refused["error"]
    lab.command({"id": "c4", "method": "tunnel", "args": {"action": "open", "hours": "two"}})
    assert "argument 'hours' must be a number" in answer(lab, "c4", mark)["error"]


def test_portal_replaces_ip_ranges_only_with_a_trustworthy_copy(lab: Site) -> None:
    path = lab.internet_dir / "ip-ranges.json"
    original = path.read_text()

    def document(*entries: tuple[str, str]) -> dict[str, Any]:
        return {
            "syncToken": "1800000000",
            "createDate": "2026-11-26-00-00-00",
            "prefixes": [
                {"ip_prefix": p, "region": "eu-central-1", "service": s} for p, s in entries
            ],
        }

    try:
        mark = len(lab_portal.read_messages(lab.portal_log, "command/result"))
        good = document(("203.0.113.30/32", "S3"), ("203.0.113.32/31", "S3"))
        lab.command({"id": "r1", "method": "ip_ranges", "args": {"document": good}})
        accepted = answer(lab, "r1", mark)
        assert accepted["ok"] is True and accepted["result"]["s3_prefixes"] == 2, accepted
        assert json.loads(path.read_text())["syncToken"] == "1800000000"

        # Nothing for S3 in eu-central-1 (a truncated or wrong file): refused, file kept.
        broken = document(("203.0.113.30/32", "EC2"))
        lab.command({"id": "r2", "method": "ip_ranges", "args": {"document": broken}})
        refused = answer(lab, "r2", mark)
        assert refused["ok"] is False and "the previous set is kept" in refused["error"]
        assert json.loads(path.read_text())["syncToken"] == "1800000000"
    finally:
        path.write_text(original)


def test_push_that_changes_the_dhcp_plan_restarts_dnsmasq_and_stands(lab: Site) -> None:
    """A new lease time means a new dnsmasq; the push must still apply and be confirmed."""
    config = lab.router_config()
    for lease_time, seconds in (("12h", 43200), ("24h", 86400)):  # and back, for later tests
        version = checks._next_version(lab)
        dhcp = {**config["lan"]["dhcp"], "lease_time": lease_time}
        doc = lab_portal.desired_document(config, version, lan={**config["lan"], "dhcp": dhcp})
        reported = checks._push_and_wait(lab, doc, "applied", 40)
        assert reported["applied_version"] == version
        lan = status(lab)["lan"]["dhcp"]
        assert lan["lease_time_s"] == seconds and lan["server"]["running"] is True
