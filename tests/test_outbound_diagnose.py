"""Every diagnostic row turns from PASS to the right plain-language FAIL, with its code.

A router namespace reaches a customer network (resolver at 198.51.100.1) and, behind it, the
lab internet (DNS, mosquitto, sshd gateway, HTTPS "S3", chronyd). The customer namespace's
switches block one flow at a time or put a TLS-inspecting proxy in the path. The codes that
depend on the router's own routes and firewall are made in a namespace of their own. Every
row any run here returns is checked against the wire contract (``assert_wire_shape``);
``CODES_MADE_HERE`` is what ``test_outbound_reasons`` counts on these runs to make.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from energyhub_lab import internet, netns
from energyhub_lab.internet import MiniLab, diagnose_in
from energyhubd.outbound import reasons
from energyhubd.outbound.diagnose import FLOWS
from tests.conftest import unique

pytestmark = pytest.mark.netns

DNS = [internet.CUSTOMER_RESOLVER]
FALLBACK = [internet.DNS_IP]
ALL_FLOWS = FLOWS


@pytest.fixture
def site(outbound_lab: MiniLab) -> MiniLab:
    return outbound_lab


def assert_wire_shape(row: dict[str, Any]) -> None:
    """A row as ``status``/``diagnose`` answer it: a known code, its params, all strings."""
    assert row["code"] in reasons.CODES, row
    assert row["passed"] == (row["code"] == reasons.OK), row
    assert isinstance(row["params"], dict), row
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in row["params"].items())
    assert sorted(row["params"]) == sorted(reasons.PARAMS[row["code"]]), row
    assert json.loads(json.dumps(row)) == row


def diagnose(
    lab: MiniLab,
    broker_ca_file: str | None = None,
    dns: list[str] = DNS,
    fallback: list[str] = FALLBACK,
    **overrides: Any,
) -> dict[str, list[dict[str, Any]]]:
    config = {**lab.services.outbound_config(), **overrides}
    rows = diagnose_in(lab.router, config, dns, fallback, broker_ca_file=broker_ca_file)
    for row in rows:
        assert_wire_shape(row)
    by_flow: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_flow.setdefault(row["flow"], []).append(row)
    return by_flow


def failing(rows: dict[str, list[dict[str, Any]]]) -> set[str]:
    return {flow for flow, items in rows.items() if not all(r["passed"] for r in items)}


def test_every_flow_passes_on_an_open_network(site: MiniLab) -> None:
    rows = diagnose(site)
    assert set(rows) == ALL_FLOWS
    assert failing(rows) == set()
    assert rows["mqtt_tls"][0]["detail"]["tls_version"] in ("TLSv1.2", "TLSv1.3")
    assert rows["ntp"][0]["detail"]["stratum"] == 3
    assert rows["gateway"][0]["reason"].startswith("TCP 2443 to 203.0.113.20: SSH server answered")
    assert rows["clock"][0]["reason"].startswith("clock synchronised")
    assert {r["code"] for items in rows.values() for r in items} == {"ok"}


@pytest.mark.parametrize(
    ("flow", "how", "broken", "reason"),
    [
        ("dns", "drop", {"dns"}, "DNS server 198.51.100.1: no answer within 2 s (filtered)"),
        ("dns", "reject", {"dns"}, "DNS server 198.51.100.1: UDP 53 unreachable (ICMP"),
        ("dns_fallback", "drop", {"dns_fallback"}, "DNS server 203.0.113.53: no answer within"),
        (
            "ntp",
            "drop",
            {"ntp", "clock"},
            "UDP 123 to NTP server 0.openwrt.pool.ntp.org: no answer",
        ),
        ("mqtt_tls", "drop", {"mqtt_tls"}, "TCP 8883 to data2.ferroamp.se: no answer within 2 s"),
        ("mqtt_tls", "reject", {"mqtt_tls"}, "TCP 8883 to data2.ferroamp.se: connection refused"),
        ("mqtt_plain", "drop", {"mqtt_plain"}, "TCP 1883 to data2.ferroamp.se: no answer"),
        (
            "gateway",
            "drop",
            {"gateway"},
            "TCP 2443 to 203.0.113.20: no answer within 2 s (filtered)",
        ),
        (
            "update_http",
            "drop",
            {"update_http"},
            "TCP 80 to s3.eu-central-1.amazonaws.com: no answer",
        ),
        ("update_https", "drop", {"update_https"}, "TCP 443 to s3.eu-central-1.amazonaws.com: no"),
    ],
)
def test_a_blocked_flow_fails_with_a_reason_it_can_act_on(
    site: MiniLab, flow: str, how: str, broken: set[str], reason: str
) -> None:
    site.services.block(flow, how)
    rows = diagnose(site)
    assert failing(rows) == broken
    first = rows[flow][0]
    assert first["reason"].startswith(reason), first["reason"]
    site.services.clear()
    assert failing(diagnose(site)) == set()


def test_ntp_blocked_means_clock_not_confirmed(site: MiniLab) -> None:
    site.services.block("ntp")
    rows = diagnose(site)
    assert rows["clock"][0]["reason"].startswith("clock not confirmed: no NTP server answered")


@pytest.mark.parametrize(
    ("flow", "consequence"),
    [
        ("update_https", "automatic updates will fail"),
        ("mqtt_tls", "the portal link (MQTT over TLS) will fail"),
    ],
)
def test_tls_interception_is_named_with_the_issuer(
    site: MiniLab, flow: str, consequence: str
) -> None:
    site.services.intercept(flow)
    rows = diagnose(site)
    assert failing(rows) == {flow}
    host = "s3.eu-central-1.amazonaws.com" if flow == "update_https" else "data2.ferroamp.se"
    assert rows[flow][0]["reason"] == (
        f"TLS to {host} is intercepted by a device on the customer network "
        f"(issuer: Contoso Inspection CA (Contoso Firewall)); {consequence}"
    )


def test_private_portal_ca_is_not_interception(site: MiniLab) -> None:
    """The broker's private CA is in portal.ca_file, not in the store S3 is checked against."""
    other_store = str(site.services.dir / "inspect-ca.pem")  # trusts neither lab server
    rows = diagnose(site, broker_ca_file=str(site.services.ca_file), ca_file=other_store)
    assert rows["mqtt_tls"][0]["passed"], rows["mqtt_tls"]
    assert rows["mqtt_tls"][0]["detail"]["trust"] == "portal.ca_file"
    # S3 still uses the outbound store: its lab certificate is not trusted there.
    assert not rows["update_https"][0]["passed"]
    assert rows["update_https"][0]["detail"]["trust"] == "outbound.ca_file"


def test_interception_on_the_broker_path_is_still_named_with_the_portal_trust(
    site: MiniLab,
) -> None:
    site.services.intercept("mqtt_tls")
    other_store = str(site.services.dir / "inspect-ca.pem")
    rows = diagnose(site, broker_ca_file=str(site.services.ca_file), ca_file=other_store)
    row = rows["mqtt_tls"][0]
    assert not row["passed"] and row["detail"]["trust"] == "portal.ca_file"
    assert row["reason"].startswith("TLS to data2.ferroamp.se is intercepted")
    assert "Contoso Inspection CA" in row["reason"]


def test_a_certificate_for_another_name_is_reported(site: MiniLab) -> None:
    rows = diagnose(site, update_host=internet.S3_IP)
    reason = rows["update_https"][0]["reason"]
    assert "presented a certificate for another name" in reason
    assert "EnergyHub Lab Root CA" in reason


def test_something_that_is_not_ssh_on_the_gateway_port(site: MiniLab) -> None:
    rows = diagnose(site, gateway_address=internet.OTHER_IP)
    assert rows["gateway"][0]["reason"].startswith(
        "TCP 2443 to 203.0.113.99: answered with something that is not SSH"
    )


def test_no_dns_at_all_fails_the_named_flows_with_the_cause(site: MiniLab) -> None:
    site.services.block("dns")
    site.services.block("dns_fallback")
    rows = diagnose(site)
    assert "gateway" not in failing(rows)  # an address needs no DNS
    assert rows["mqtt_tls"][0]["reason"].startswith("cannot resolve data2.ferroamp.se: DNS server")


def _check_dns_in(ns: str, server: str, name: str) -> dict[str, Any]:
    code = (
        "import json,sys\n"
        "from energyhubd.outbound.diagnose import check_dns\n"
        "print(json.dumps(check_dns(sys.argv[1], sys.argv[2], 2.0).as_dict()))\n"
    )
    out = netns.ns_run(ns, [sys.executable, "-c", code, server, name])
    result: dict[str, Any] = json.loads(out)
    return result


DNS_CASES = [
    (
        "dns_refused",
        internet.DNS_IP,
        "unknown.example",
        "DNS server 203.0.113.53 refused the query",
        {"host": "unknown.example"},
    ),
    (
        "dns_nxdomain",
        internet.DNS_IP,
        internet.NXDOMAIN_NAME,
        f"DNS server 203.0.113.53 says {internet.NXDOMAIN_NAME} does not exist (NXDOMAIN)",
        {"host": internet.NXDOMAIN_NAME},
    ),
    (
        "port_unreachable",
        internet.GATEWAY_IP,
        "data2.ferroamp.se",
        "DNS server 203.0.113.20: UDP 53 unreachable",
        {},
    ),
]


@pytest.mark.parametrize(("code", "server", "name", "reason", "params"), DNS_CASES)
def test_dns_answers_are_told_apart(
    site: MiniLab, code: str, server: str, name: str, reason: str, params: dict[str, str]
) -> None:
    row = _check_dns_in(site.router, server, name)
    assert_wire_shape(row)
    assert (row["code"], row["params"]) == (code, params), row["reason"]
    assert row["reason"].startswith(reason), row["reason"]


def test_diagnose_cli_exit_status(site: MiniLab) -> None:
    cmd = [sys.executable, "-m", "energyhubd.outbound.diagnose"]
    cmd += ["--outbound", json.dumps(site.services.outbound_config())]
    cmd += ["--dns", internet.CUSTOMER_RESOLVER, "--fallback", internet.DNS_IP]
    ok = subprocess.run(netns.ns_cmd(site.router, cmd), capture_output=True, timeout=60)
    assert ok.returncode == 0
    site.services.block("gateway")
    bad = subprocess.run(netns.ns_cmd(site.router, cmd), capture_output=True, timeout=60)
    assert bad.returncode == 1
    assert json.loads(bad.stdout)["failed_flows"] == ["gateway"]


# -- one run per situation: each flow's code and params --------------------------------------

LAB_ISSUER = "EnergyHub Lab Root CA"
INSPECTOR = "Contoso Inspection CA (Contoso Firewall)"
SITUATIONS: dict[str, tuple[dict[str, Any], dict[str, tuple[str, dict[str, str]]]]] = {
    # name: (what the situation does, {flow: (code, params)} of the first row of that flow)
    "dropped": (
        {"block": [("gateway", "drop"), ("ntp", "drop")]},
        {
            "gateway": ("filtered", {"timeout": "2 s"}),
            "ntp": ("filtered", {"timeout": "2 s"}),
            "clock": ("clock_unconfirmed", {}),
        },
    ),
    "rejected": (
        {"block": [("dns", "reject"), ("mqtt_tls", "reject")]},
        {"dns": ("port_unreachable", {}), "mqtt_tls": ("refused", {})},
    ),
    "no name lookup": (
        {"dns": [], "block": [("dns_fallback", "drop")]},
        {
            "dns": ("other", {}),  # no server at all: nothing to translate
            "dns_fallback": ("filtered", {"timeout": "2 s"}),
            "mqtt_tls": ("unresolved", {"host": internet.BROKER_NAME}),
            "gateway": ("ok", {}),
        },
    ),
    "intercepted": (
        {"intercept": "update_https"},
        {"update_https": ("tls_intercepted", {"host": internet.S3_NAME, "issuer": INSPECTOR})},
    ),
    "wrong servers": (
        {
            "outbound": {
                "update_host": internet.OTHER_IP,
                "gateway_address": internet.S3_IP,
                "gateway_port": 80,  # an HTTP server waits for a request: no SSH greeting
            }
        },
        {
            "update_http": ("no_http", {}),
            "update_https": ("tls_failed", {"host": internet.OTHER_IP}),
            "gateway": ("ssh_no_greeting", {}),
        },
    ),
    "misnamed": (
        {"outbound": {"update_host": internet.S3_IP, "gateway_address": internet.OTHER_IP}},
        {
            "update_https": ("tls_wrong_name", {"host": internet.S3_IP, "issuer": LAB_ISSUER}),
            "gateway": ("not_ssh", {}),
        },
    ),
    "no trust store": (
        {"outbound": {"ca_file": "/nonexistent/energyhub-ca.pem"}},
        {"update_https": ("trust_store", {}), "mqtt_tls": ("trust_store", {})},
    ),
}


@pytest.mark.parametrize("name", sorted(SITUATIONS))
def test_each_situation_gives_each_flow_its_code(site: MiniLab, name: str) -> None:
    how, expected = SITUATIONS[name]
    for flow, verdict in how.get("block", []):
        site.services.block(flow, verdict)
    if "intercept" in how:
        site.services.intercept(how["intercept"])
    rows = diagnose(site, dns=how.get("dns", DNS), **how.get("outbound", {}))
    got = {flow: (rows[flow][0]["code"], rows[flow][0]["params"]) for flow in expected}
    assert got == expected, {flow: rows[flow][0]["reason"] for flow in expected}


# -- the router's own routes and firewall ----------------------------------------------------

NO_ROUTE = "203.0.113.200"  # outside the /25 the router has a route for
UNREACHABLE = "203.0.113.21"  # an "unreachable" route
FIREWALLED = "203.0.113.22"  # on the link, but our own output chain drops it
# A UDP check (DNS) is used: a dropped UDP send fails at once with EPERM, while a dropped TCP
# SYN is retransmitted by the kernel and only times out (it reads as "filtered").


@pytest.fixture(scope="module")
def routes() -> Iterator[str]:
    """A namespace whose routes and firewall refuse three addresses in three ways."""
    ns = unique("ehR")
    netns.add_namespace(ns)
    try:
        # Both ends of the pair stay here: a link with nobody on it (no dummy module in CI).
        netns.ip(ns, "link", "add", "wan", "type", "veth", "peer", "name", "void")
        for link in ("wan", "void"):
            netns.ip(ns, "link", "set", link, "up")
        netns.ip(ns, "addr", "add", "203.0.113.2/25", "dev", "wan")
        netns.ip(ns, "route", "add", "unreachable", f"{UNREACHABLE}/32")
        chain = "{ type filter hook output priority 0; }"
        netns.ns_run(ns, ["nft", "add table inet egress"])
        netns.ns_run(ns, ["nft", f"add chain inet egress output {chain}"])
        netns.ns_run(ns, ["nft", f"add rule inet egress output ip daddr {FIREWALLED} drop"])
        yield ns
    finally:
        netns.delete_namespace(ns)


ROUTE_CASES = [
    ("network_unreachable", NO_ROUTE, "network unreachable (the router has no default route)"),
    ("host_unreachable", UNREACHABLE, "host unreachable (no route, or rejected by a firewall)"),
    ("blocked_here", FIREWALLED, "blocked by this router's own firewall"),
]


@pytest.mark.parametrize(("code", "address", "words"), ROUTE_CASES)
def test_the_router_s_own_routes_and_firewall_are_told_apart(
    routes: str, code: str, address: str, words: str
) -> None:
    script = (
        "import json,sys\n"
        "from energyhubd.outbound.diagnose import check_dns\n"
        "print(json.dumps(check_dns(sys.argv[1], 'data2.ferroamp.se', 2.0).as_dict()))\n"
    )
    row = json.loads(netns.ns_run(routes, [sys.executable, "-c", script, address]))
    assert_wire_shape(row)
    assert (row["code"], row["params"]) == (code, {})
    assert row["reason"] == f"DNS server {address}: {words}"


CODES_MADE_HERE = (
    {"ok"}
    | {code for code, *_ in DNS_CASES}
    | {code for _, (_, expected) in SITUATIONS.items() for code, _ in expected.values()}
    | {code for code, *_ in ROUTE_CASES}
)
