import time, statistics
from typing import Any
from tests.test_outbound_daemon import lab, daemon_factory, _lan_query, wait_for  # noqa: F401
from energyhubd.lab import internet
from energyhubd.lab.internet import tcp_connect_in


def test_measure(lab, daemon_factory):
    port = 20040
    outbound = {**lab.services.outbound_config(), "tunnel": {"mode": "on_demand", "user": "root",
        "key_file": str(lab.services.client_key), "remote_port": port,
        "host_key": lab.services.gateway_host_key, "expiry_hours": 0.001}}
    d = daemon_factory(outbound=outbound)
    up = lambda: tcp_connect_in(lab.services.ns, "127.0.0.1", port, timeout=0.3)[0]
    opens, calls, closes, expiries = [], [], [], []
    for _ in range(5):
        t = time.monotonic(); d.call("tunnel", {"action": "open", "hours": 1}); calls.append(time.monotonic() - t)
        wait_for(up, 20, "up"); opens.append(time.monotonic() - t)
        t = time.monotonic(); d.call("tunnel", {"action": "close"}); closes.append(time.monotonic() - t)
        wait_for(lambda: not up(), 10, "down")
    for _ in range(3):
        r = d.call("tunnel", {"action": "open"}); t = time.monotonic()
        wait_for(lambda: d.call("status")["outbound"]["tunnel"]["state"] == "idle", 20, "exp")
        expiries.append(time.monotonic() - t)
    lab.services.block("dns")
    fb = [_lan_query(lab, n)["seconds"] for n in (internet.BROKER_NAME, internet.S3_NAME)]
    lab.services.clear(); lab.services.block("dns_fallback")
    pr = [_lan_query(lab, n)["seconds"] for n in internet.NTP_NAMES]
    lab.services.clear()
    print("\nMEASURE open-call s", [round(x, 3) for x in calls])
    print("MEASURE open->gateway port s", [round(x, 2) for x in opens])
    print("MEASURE close-call s", [round(x, 3) for x in closes])
    print("MEASURE expiry(3.6 s) observed s", [round(x, 2) for x in expiries])
    print("MEASURE dns via fallback s", fb, "via primary s", pr)
