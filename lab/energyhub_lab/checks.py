"""``energyhubd lab check``: prove the site's policy end to end with real traffic.

Each check returns (passed, detail). The checks leave the site as they found it, so they can
run in any order and again.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from energyhub_lab import netns
from energyhub_lab import portal as lab_portal
from energyhub_lab.site import (
    CONFIRM_WINDOW,
    CUSTOMER_SERVICE_PORT,
    EVENT_WAIT,
    GUEST_IP,
    MODBUS_PORT,
    ROUTER_PORTS,
    SCADA_IP,
    Client,
    Site,
)
from energyhubd.control.client import call

# The daemon alerts a stranger once its settle window (8 s after its lease) ended.
STRANGER_ALERT = 15.0


@dataclass(frozen=True)
class CheckResult:
    name: str
    passed: bool
    detail: str


Check = Callable[[Site], tuple[bool, str]]


def wan_address(site: Site) -> str:
    addr = site.address_of(site.router, "wan")
    if addr is None:
        raise AssertionError("router has no WAN address")
    return addr


def check_policy_applied(site: Site) -> tuple[bool, str]:
    policy = site.status()["policy"]
    return policy.get(
        "state"
    ) == "applied", f"state {policy.get('state')}, digest {policy.get('digest')}"


def check_wan_dhcp(site: Site) -> tuple[bool, str]:
    addr = wan_address(site)
    wan = site.status()["wan"]
    ok = addr.startswith("198.51.100.") and addr in " ".join(wan.get("addresses", []))
    return ok, f"WAN {addr} from the customer DHCP server; status shows {wan.get('addresses')}"


def check_display_reserved(site: Site) -> tuple[bool, str]:
    addr = site.address_of(site.ns("display"), "eth0")
    return addr == "192.168.254.200", f"display has {addr}"


def check_units_pool(site: Site) -> tuple[bool, str]:
    found = {}
    for client in site.clients[1:]:
        found[client.name] = site.address_of(site.ns(client.name), "eth0")
    in_pool = all(a and 200 <= int(a.rsplit(".", 1)[1]) <= 244 for a in found.values())
    return in_pool and len(set(found.values())) == len(found), ", ".join(
        f"{k} {v}" for k, v in found.items()
    )


def check_lease_time(site: Site) -> tuple[bool, str]:
    now = time.time()
    remaining = []
    for line in site.lease_file.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0].isdigit():
            remaining.append(int(parts[0]) - now)
    # A lease is never older than the site (renewals only start at half its time), so a
    # 24 h lease has between 24 h minus the site's age and 24 h left; a shorter lease time
    # falls below that on a site younger than the difference.
    age = now - site.up_at if site.up_at is not None else 120.0
    ok = bool(remaining) and all(86400 - age - 5 <= r <= 86400 + 5 for r in remaining)
    hours = ", ".join(f"{r / 3600:.2f}h" for r in remaining)
    return ok, f"{len(remaining)} leases, remaining {hours}"


def check_no_inbound(site: Site) -> tuple[bool, str]:
    wan = wan_address(site)
    answered = []
    for role in ("scada", "guest"):
        for port in ROUTER_PORTS:
            if role == "scada" and port == MODBUS_PORT:
                continue  # the Modbus forward: checked separately
            ok, text = site.probe_connect(site.ns(role), wan, port, timeout=0.7)
            if ok and text.startswith("router"):
                answered.append(f"{role}->{port}")
    ports = ",".join(map(str, ROUTER_PORTS))
    if answered:
        return False, f"router answered: {', '.join(answered)}"
    return True, f"ports {ports} on {wan}: no answer from scada or guest (listeners running)"


def check_masquerade(site: Site) -> tuple[bool, str]:
    wan = wan_address(site)
    ok, text = site.probe_connect(site.ns("unit2"), SCADA_IP, CUSTOMER_SERVICE_PORT)
    seen = text.split()[-1] if ok and text else None
    return (
        ok and seen == wan,
        f"unit2 -> {SCADA_IP}:{CUSTOMER_SERVICE_PORT}: seen as {seen} (router WAN {wan})",
    )


def check_forward_allowed(site: Site) -> tuple[bool, str]:
    wan = wan_address(site)
    ok, text = site.probe_connect(site.ns("scada"), wan, MODBUS_PORT)
    return ok and text.startswith(
        f"unit1 {SCADA_IP}"
    ), f"scada {SCADA_IP} -> {wan}:{MODBUS_PORT}: {text}"


def check_forward_locked(site: Site) -> tuple[bool, str]:
    wan = wan_address(site)
    ok, text = site.probe_connect(site.ns("guest"), wan, MODBUS_PORT, timeout=1.0)
    return not ok, f"guest {GUEST_IP} -> {wan}:{MODBUS_PORT}: {text}"


def _table_handles(site: Site) -> list[int]:
    out = netns.ns_run(site.router, ["nft", "-j", "-a", "list", "table", "inet", "energyhub"])
    handles = []
    for obj in json.loads(out)["nftables"]:
        for kind in ("table", "chain", "rule"):
            if kind in obj:
                handles.append(int(obj[kind]["handle"]))
    return handles


def check_noop_apply(site: Site) -> tuple[bool, str]:
    before = _table_handles(site)
    result = site.energyhubd("apply", "--config", str(site.config_path))
    after = _table_handles(site)
    ok = result.returncode == 0 and "unchanged" in result.stdout and before == after
    return ok, (
        result.stdout.strip() or result.stderr.strip()
    ) + f"; handles {'unchanged' if before == after else 'CHANGED'}"


def check_bad_config(site: Site) -> tuple[bool, str]:
    before = netns.ns_run(site.router, ["nft", "list", "ruleset"])
    bad = site.dir / "bad.json"
    document = site.router_config()
    document["forwards"][0].pop("allow_from")
    bad.write_text(json.dumps(document))
    result = site.energyhubd("apply", "--config", str(bad))
    after = netns.ns_run(site.router, ["nft", "list", "ruleset"])
    message = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else ""
    ok = (
        result.returncode == 2
        and before == after
        and "forwards[0].allow_from: required unless allow_any_source is true" in result.stderr
    )
    ruleset = "unchanged" if before == after else "CHANGED"
    return ok, f"exit {result.returncode}: {message}; ruleset {ruleset}"


def check_flush_restored(site: Site) -> tuple[bool, str]:
    repairs_before = site.status()["policy"].get("drift_repairs", 0)
    netns.ns_run(site.router, ["nft", "flush", "ruleset"])
    flushed = time.monotonic()
    restored_after = None
    while time.monotonic() - flushed < 3:
        out = netns.ns_run(site.router, ["nft", "list", "tables"], check=False)
        if "inet energyhub" in out:
            restored_after = time.monotonic() - flushed
            break
        time.sleep(0.02)
    deadline = time.monotonic() + 1.0
    repairs = repairs_before
    while repairs == repairs_before and time.monotonic() < deadline:
        # The status snapshot is republished just after the table is back.
        repairs = site.status()["policy"].get("drift_repairs", 0)
        time.sleep(0.02)
    ok = restored_after is not None and restored_after < 1.0 and repairs == repairs_before + 1
    when = f"{restored_after * 1000:.0f} ms" if restored_after is not None else "never"
    return ok, f"table restored after {when}; drift repairs {repairs_before} -> {repairs}"


def _inventory(site: Site) -> dict:
    return dict(site.status().get("inventory") or {})


def check_display_discovered(site: Site) -> tuple[bool, str]:
    def found() -> bool:
        return bool(_inventory(site).get("display", {}).get("present"))

    try:
        site.wait_for(found, EVENT_WAIT, "display not discovered")
    except Exception:
        return False, f"inventory: {_inventory(site).get('display')}"
    display = _inventory(site)["display"]
    devices = site.status().get("devices", [])
    named = [d for d in devices if d.get("role") == "display" and d.get("name") == "display"]
    ok = display.get("ip") == "192.168.254.200" and len(named) == 1
    return ok, f"display present at {display.get('ip')} named {named[0]['name'] if named else None}"


def check_units_discovered(site: Site) -> tuple[bool, str]:
    want = f"{site.units}/{site.units}"

    def complete() -> bool:
        return bool(_inventory(site).get("units", {}).get("text") == want)

    with contextlib.suppress(Exception):
        site.wait_for(complete, EVENT_WAIT, "units missing")
    units = _inventory(site).get("units", {})
    names = sorted(d["name"] for d in site.status().get("devices", []) if d.get("role") == "unit")
    return units.get("text") == want, f"units online {units.get('text')}: {', '.join(names)}"


def unknown_events(site: Site, mac: str) -> list[dict]:
    return [
        e
        for e in site.status().get("events", [])
        if e["kind"] == "unknown_device" and e["data"].get("mac") == mac
    ]


def check_unknown_device(site: Site) -> tuple[bool, str]:
    stranger = Client("stranger", "02:66:00:00:00:66", "laptop")
    try:
        address = site.add_client(stranger)
        site.wait_for(
            lambda: bool(unknown_events(site, stranger.mac)),
            STRANGER_ALERT,
            "no unknown_device event",
        )
        events = unknown_events(site, stranger.mac)
        count = _inventory(site).get("unknown", {}).get("count")
        return (
            len(events) == 1,
            f"stranger {stranger.mac} at {address}: unknown_device "
            f"raised {len(events)}x; unknown devices {count}",
        )
    finally:
        site.remove_client(stranger.name)


# -- the portal link -------------------------------------------------------------------------


def _portal(site: Site) -> dict:
    return dict(site.status().get("portal") or {})


def check_portal_link(site: Site) -> tuple[bool, str]:
    site.wait_for(lambda: _portal(site).get("connected") is True, EVENT_WAIT, "portal link not up")
    online = lab_portal.wait_for_message(
        site.portal_log,
        "status",
        lambda v: isinstance(v, dict) and v.get("state") == "online",
        EVENT_WAIT,
    )
    lab_portal.wait_for_message(
        site.portal_log, "health", lambda v: isinstance(v, dict) and "health" in v, EVENT_WAIT
    )
    health = lab_portal.read_messages(site.portal_log, "health")[-1][1]
    lan = health["health"].get("lan", {})
    portal = _portal(site)
    return True, (
        f"mutual TLS to {portal.get('broker')}; status {online.get('state')} "
        f"(software {online.get('software')}); health: display {lan.get('display_present')}, "
        f"units {lan.get('units')}"
    )


def _next_version(site: Site) -> int:
    """Above both the running version and anything the portal has asked for before."""
    running = int(site.status()["config"]["version"] or 0)
    reported = lab_portal.read_messages(site.portal_log, "config/reported")
    asked = [v.get("desired_version") or 0 for _l, v in reported if isinstance(v, dict)]
    return max([running, *asked]) + 1


def _push_and_wait(site: Site, document: dict, state: str, timeout: float) -> dict:
    mark = len(lab_portal.read_messages(site.portal_log, "config/reported"))
    version = document["version"]
    site.push(document)

    def reached(value: object) -> bool:
        return (
            isinstance(value, dict)
            and value.get("state") == state
            and version in (value.get("desired_version"), value.get("applied_version"))
        )

    result: dict = lab_portal.wait_for_message(
        site.portal_log, "config/reported", reached, timeout, after=mark
    )
    return result


def _with_allowed_source(site: Site, version: int, source: str) -> dict:
    config = site.router_config()
    forwards = json.loads(json.dumps(config["forwards"]))
    forwards[0]["allow_from"] = [*forwards[0]["allow_from"], source]
    return lab_portal.desired_document(config, version, forwards=forwards)


def _with_path_change(site: Site, version: int, source: str) -> dict:
    """Like ``_with_allowed_source`` but also changing something on the path to the portal
    (a DNS fallback): only such a push is confirmed over a NEW connection; a forwards-only
    push is confirmed over the live one (docs/mqtt.md § confirm or roll back)."""
    doc = _with_allowed_source(site, version, source)
    fallback = list((doc.get("dns") or {}).get("fallback") or [])
    doc["dns"] = {**(doc.get("dns") or {}), "fallback": [*fallback, "198.51.100.53"]}
    return doc


def check_push_applied(site: Site) -> tuple[bool, str]:
    version = _next_version(site)
    start = time.monotonic()
    _push_and_wait(site, _with_allowed_source(site, version, "198.51.100.30"), "applied", 40)
    took = time.monotonic() - start
    status = site.status()
    allowed = status["forwards"][0]["allow_from"]
    on_disk = json.loads(site.config_path.read_text()).get("version")
    ok = status["config"]["version"] == version and "198.51.100.30/32" in allowed
    ok = ok and on_disk == version
    return ok, (
        f"version {version} applied and confirmed over the live connection in {took:.1f} s; "
        f"modbus allow_from {allowed}; router.json now version {on_disk}"
    )


def check_push_rejected(site: Site) -> tuple[bool, str]:
    before = site.status()
    version = _next_version(site)
    config = site.router_config()
    forwards = json.loads(json.dumps(config["forwards"]))
    del forwards[0]["allow_from"]
    doc = lab_portal.desired_document(config, version, forwards=forwards)
    reported = _push_and_wait(site, doc, "rejected", 20)
    after = site.status()
    errors = [f"{e.get('field')}: {e.get('reason')}" for e in reported.get("errors", [])]
    ok = (
        any(e.startswith("forwards[0].allow_from") for e in errors)
        and after["policy"]["digest"] == before["policy"]["digest"]
        and after["config"]["version"] == before["config"]["version"]
    )
    return ok, f"version {version} rejected ({'; '.join(errors)}); running policy untouched"


def check_push_rolled_back(site: Site) -> tuple[bool, str]:
    """A push after which no NEW connection reaches the portal stands only its window."""
    assert site.internet is not None
    before = site.status()
    version = _next_version(site)
    mark = len(lab_portal.read_messages(site.portal_log, "config/reported"))
    site.internet.block("mqtt_tls", "drop-new")
    try:
        site.push(_with_path_change(site, version, "198.51.100.31"))
        site.wait_for(
            lambda: site.status()["config"]["version"] == version, EVENT_WAIT, "push not applied"
        )
        applied_at = time.monotonic()
        site.wait_for(
            lambda: _portal(site).get("config_state") == "rolled_back",
            CONFIRM_WINDOW + 15,
            "no rollback after the confirm window",
        )
        took = time.monotonic() - applied_at
    finally:
        site.internet.clear()
    reported = lab_portal.wait_for_message(
        site.portal_log,
        "config/reported",
        lambda v: isinstance(v, dict) and v.get("state") == "rolled_back",
        30,
        after=mark,
    )
    after = site.status()
    ok = (
        after["config"]["version"] == before["config"]["version"]
        and after["policy"]["digest"] == before["policy"]["digest"]
    )
    return ok, (
        f"version {version} applied, no new connection for {took:.0f} s "
        f"(window {CONFIRM_WINDOW} s) -> version {after['config']['version']} restored whole; "
        f"portal told {reported.get('state')} once reconnected"
    )


# -- outbound flows -----------------------------------------------------------------------


def _diagnose(site: Site) -> list[dict]:
    result = call(site.socket, "diagnose", {"timeout": 60}, timeout=75)
    rows: list[dict] = result["rows"]
    return rows


def check_outbound_flows(site: Site) -> tuple[bool, str]:
    rows = _diagnose(site)
    failed = [f"{r['flow']}: {r['reason']}" for r in rows if not r["passed"]]
    flows = sorted({r["flow"] for r in rows})
    if failed:
        return False, "; ".join(failed)
    return True, f"{len(rows)} checks pass ({', '.join(flows)})"


def check_outbound_blocked_and_intercepted(site: Site) -> tuple[bool, str]:
    """The customer's firewall filters 2443 and inspects TLS: both named, the rest pass."""
    assert site.internet is not None
    site.internet.block("gateway")
    site.internet.intercept("update_https")
    try:
        rows = _diagnose(site)
    finally:
        site.internet.clear()
    by_flow = {r["flow"]: r for r in rows}
    gateway, https = by_flow["gateway"], by_flow["update_https"]
    expected = {"gateway", "update_https"}
    others = [r["flow"] for r in rows if not r["passed"] and r["flow"] not in expected]
    ok = (
        not gateway["passed"]
        and "filtered" in gateway["reason"]
        and not https["passed"]
        and "intercepted" in https["reason"]
        and not others
    )
    return ok, f"gateway: {gateway['reason']}; update_https: {https['reason']}; others pass"


CHECKS: list[tuple[str, Check]] = [
    ("policy applied by energyhubd run", check_policy_applied),
    ("router WAN address by DHCP", check_wan_dhcp),
    ("display reserved at .200", check_display_reserved),
    ("units get pool addresses", check_units_pool),
    ("leases are 24 h", check_lease_time),
    ("display found at .200 and named", check_display_discovered),
    ("all units found", check_units_discovered),
    ("unknown client raises unknown_device", check_unknown_device),
    ("no router port answers from the WAN", check_no_inbound),
    ("LAN reaches WAN, masqueraded", check_masquerade),
    ("Modbus forward from allowed source", check_forward_allowed),
    ("Modbus forward locked to its source", check_forward_locked),
    ("second apply writes nothing", check_noop_apply),
    ("bad config rejected, ruleset untouched", check_bad_config),
    ("table restored after nft flush ruleset", check_flush_restored),
    ("portal link: mutual TLS, status, health", check_portal_link),
    ("portal push applied and confirmed", check_push_applied),
    ("invalid push rejected, policy kept", check_push_rejected),
    ("push that cuts the link rolled back", check_push_rolled_back),
    ("every required outbound flow passes", check_outbound_flows),
    ("filtered 2443 and TLS interception named", check_outbound_blocked_and_intercepted),
]


def run_checks(site: Site, checks: list[tuple[str, Check]] | None = None) -> list[CheckResult]:
    results = []
    for name, check in checks or CHECKS:
        try:
            passed, detail = check(site)
        except Exception as exc:  # a check that crashes is a FAIL with its reason
            passed, detail = False, f"{type(exc).__name__}: {exc}"
        results.append(CheckResult(name, passed, detail))
    return results


def render(results: list[CheckResult]) -> str:
    width = max(len(r.name) for r in results)
    lines = [f"{'RESULT':6}  {'CHECK':{width}}  DETAIL"]
    for r in results:
        lines.append(f"{'PASS' if r.passed else 'FAIL':6}  {r.name:{width}}  {r.detail}")
    passed = sum(r.passed for r in results)
    lines.append(f"{passed} passed, {len(results) - passed} failed")
    return "\n".join(lines)
