"""Portal-link benchmark: push latency and WAN bytes per day, each next to a baseline.

1. Push -> applied -> reported: the portal publishes a desired document and waits for the
   retained ``config/reported`` saying ``pending_confirm`` (applied) and then ``applied``
   (confirmed over a fresh connection). Baseline, same run: a bare MQTT round trip through
   the same broker (publish, receive it back) from the same portal client.
2. WAN bytes per day for status + health at the default intervals (health 300 s, keepalive
   60 s) on a steady site, counted in the customer network (IP bytes both ways, so TCP, TLS
   and MQTT overhead are included). Baseline, same run: one poll of a 5-minute HTTPS polling
   agent (a new TLS connection and a GET to the lab's HTTPS server), times 288 a day.
3. Steady RSS of the daemon with the portal connected, at default intervals, vs the import
   floor: a bare Python in the router's namespace that only imports nftables, pyroute2 and
   paho-mqtt (median of 5).
4. Idle wake-ups with the portal connected at default intervals: voluntary context switches
   of all the daemon's threads over ``--idle`` seconds, per minute, and what is left beyond
   the keepalive itself (a PINGREQ going out and its PINGRESP coming in: 2 per keepalive).
5. RSS growth over ``--growth-pushes`` pushes (each applied and confirmed), per 1,000.

Run as root: ``.venv/bin/python bench/portal.py [--json]`` (``make bench``). Everything runs
in a lab site built for the purpose (namespaces ``ehP<random>-*``), removed afterwards, also
on failure. No assertions: this reports, it does not judge.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import statistics
import sys
import time
from typing import Any

import routerpyc

from energyhub_lab import internet, netns
from energyhub_lab import portal as lab_portal
from energyhub_lab.site import DEVICE_ID, Site
from energyhubd.control.client import call

PYTHON = sys.executable
DAY = 86400
BARE_IMPORTS = "import nftables, pyroute2, paho.mqtt.client, json"
COUNTER_TABLE = "benchcount"

# Runs inside the lab's internet namespace as the portal: paho-mqtt, mutual TLS as "portal".
PORTAL_WORKER = r"""
import json, ssl, sys, threading, time
import paho.mqtt.client as mqtt

args = json.loads(sys.argv[1])
d = args["dir"]
topic = lambda leaf: f"energyhub/{args['device']}/{leaf}"
if hasattr(mqtt, "CallbackAPIVersion"):
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-portal")
else:
    client = mqtt.Client(client_id="bench-portal")
client.tls_set(ca_certs=f"{d}/lab-ca.pem", certfile=f"{d}/portal-client.pem",
               keyfile=f"{d}/portal-client.key")
client.tls_insecure_set(True)  # dialled by address in the lab; the chain is still verified
inbox, cond = [], threading.Condition()

def on_message(_c, _u, msg):
    with cond:
        inbox.append((time.perf_counter(), msg.topic, msg.payload))
        cond.notify_all()

client.on_message = on_message
client.connect(args["broker"], 8883)
client.subscribe([(topic("config/reported"), 1), (topic("bench-echo"), 1)])
client.loop_start()
time.sleep(0.5)

def wait(pred, timeout=60):
    deadline = time.perf_counter() + timeout
    with cond:
        while True:
            for item in inbox:
                if pred(item):
                    inbox.remove(item)
                    return item[0]
            left = deadline - time.perf_counter()
            if left <= 0:
                raise SystemExit(f"timeout waiting; inbox {inbox[-3:]}")
            cond.wait(left)

def reported(state, version):
    def pred(item):
        if not item[1].endswith("config/reported"):
            return False
        doc = json.loads(item[2])
        return doc.get("state") == state and version in (
            doc.get("pending_version"), doc.get("applied_version"))
    return pred

applied, confirmed, bare = [], [], []
for i in range(args["pushes"]):
    version = args["version"] + i
    doc = dict(args["document"], version=version)
    forwards = json.loads(json.dumps(doc["forwards"]))
    forwards[0]["allow_from"] = forwards[0]["allow_from"] + [f"198.51.100.{60 + i % 2}"]
    doc["forwards"] = forwards
    with cond:
        inbox.clear()
    start = time.perf_counter()
    client.publish(topic("config/desired"), json.dumps(doc), qos=1, retain=True)
    applied.append(wait(reported("pending_confirm", version)) - start)
    confirmed.append(wait(reported("applied", version)) - start)
for i in range(args["pushes"]):
    start = time.perf_counter()
    client.publish(topic("bench-echo"), str(i), qos=1)
    echo = lambda item, i=i: item[1].endswith("bench-echo") and item[2] == str(i).encode()
    bare.append(wait(echo) - start)
client.loop_stop()
client.disconnect()
print(json.dumps({"applied": applied, "confirmed": confirmed, "bare": bare}))
"""

POLL_WORKER = r"""
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[2])
with socket.create_connection((sys.argv[1], 443), timeout=5) as raw:
    with ctx.wrap_socket(raw, server_hostname=sys.argv[3]) as tls:
        tls.sendall(b"GET /status HTTP/1.1\r\nHost: " + sys.argv[3].encode()
                    + b"\r\nConnection: close\r\n\r\n")
        while tls.recv(4096):
            pass
"""


def counters(site: Site) -> dict[str, int]:
    """Bytes both ways per flow, counted where the customer's firewall would see them."""
    out = netns.ns_run(site.ns("cust"), ["nft", "-j", "list", "table", "inet", COUNTER_TABLE])
    found: dict[str, int] = {}
    for item in json.loads(out)["nftables"]:
        rule = item.get("rule")
        if not rule:
            continue
        name = rule.get("comment", "")
        for expr in rule["expr"]:
            if "counter" in expr:
                found[name] = found.get(name, 0) + int(expr["counter"]["bytes"])
    return found


def install_counters(site: Site) -> None:
    broker, s3 = internet.BROKER_IP, internet.S3_IP
    text = (
        f"table inet {COUNTER_TABLE} {{\n"
        "  chain forward { type filter hook forward priority 10; policy accept;\n"
        f'    ip daddr {broker} tcp dport 8883 counter comment "mqtt"\n'
        f'    ip saddr {broker} tcp sport 8883 counter comment "mqtt"\n'
        f'    ip daddr {s3} tcp dport 443 counter comment "poll"\n'
        f'    ip saddr {s3} tcp sport 443 counter comment "poll"\n'
        "  }\n}\n"
    )
    path = site.dir / "benchcount.nft"
    path.write_text(text)
    netns.ns_run(site.ns("cust"), ["nft", "-f", str(path)])


def set_portal(site: Site, **settings: Any) -> None:
    """Rewrite the router's local file with new portal timing and reload; wait for the link."""
    document = json.loads(site.config_path.read_text())
    document["portal"] = {**site.portal_settings(), **settings}
    site.write_config(document)
    call(site.socket, "reload", timeout=10)
    site.wait_for(
        lambda: call(site.socket, "status")["portal"].get("connected") is True, 20, "no link"
    )
    time.sleep(1.0)  # let the (re)connect burst (status, reported, health) pass


def measure(site: Site, seconds: float) -> int:
    before = counters(site).get("mqtt", 0)
    time.sleep(seconds)
    return counters(site).get("mqtt", 0) - before


def bench_bytes(site: Site, window: float) -> dict[str, Any]:
    install_counters(site)
    # Keepalive alone: no health for a day, keepalive at its minimum (5 s).
    set_portal(site, health_interval=86400, keepalive=5)
    idle = measure(site, window)
    per_ping = idle / (window / 5)
    # Health alone: health every 10 s (its minimum), keepalive at its maximum (1 h).
    set_portal(site, health_interval=10, keepalive=3600)
    busy = measure(site, window)
    per_health = busy / (window / 10)
    health_payloads = [
        len(json.dumps(v, separators=(",", ":")))
        for _leaf, v in lab_portal.read_messages(site.portal_log, "health")[-5:]
    ]
    # A 5-minute HTTPS poller: one full poll (TCP + TLS handshake + GET), counted the same way.
    polls = []
    for _ in range(5):
        before = counters(site).get("poll", 0)
        netns.ns_run(
            site.router,
            [
                PYTHON,
                "-c",
                POLL_WORKER,
                internet.S3_IP,
                str(site.internet_dir / "lab-ca.pem"),
                internet.S3_NAME,
            ],
        )
        polls.append(counters(site).get("poll", 0) - before)
    per_poll = statistics.median(polls)
    ours = DAY / 300 * per_health + DAY / 60 * per_ping
    return {
        "window_s": window,
        "bytes_per_keepalive": round(per_ping),
        "bytes_per_health": round(per_health),
        "health_payload_bytes": round(statistics.median(health_payloads)),
        "bytes_per_day": round(ours),
        "poll_bytes": round(per_poll),
        "poller_bytes_per_day": round(DAY / 300 * per_poll),
    }


def bench_push(site: Site, pushes: int) -> dict[str, Any]:
    set_portal(site)  # production timing again (keepalive 60 s, health 300 s)
    status = call(site.socket, "status")
    reported = lab_portal.read_messages(site.portal_log, "config/reported")
    asked = [v.get("desired_version") or 0 for _l, v in reported if isinstance(v, dict)]
    version = max([int(status["config"]["version"] or 0), *asked]) + 1
    document = lab_portal.desired_document(site.router_config(), version)
    args = {
        "dir": str(site.internet_dir),
        "device": DEVICE_ID,
        "broker": internet.BROKER_IP,
        "pushes": pushes,
        "version": version,
        "document": document,
    }
    out = netns.ns_run(
        site.inet, [PYTHON, "-c", PORTAL_WORKER, json.dumps(args)], timeout=60 + pushes * 10
    )
    samples: dict[str, list[float]] = json.loads(out)
    return {k: [round(s * 1000, 2) for s in v] for k, v in samples.items()}


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def switches(pid: int) -> int:
    """Voluntary context switches summed over every thread of ``pid``."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/status") as handle:
                for line in handle:
                    if line.startswith("voluntary_ctxt_switches:"):
                        total += int(line.split()[1])
        except OSError:
            continue
    return total


def import_floor(site: Site) -> int:
    """RSS of a Python that only imports the three libraries, in the router's namespace."""
    code = f"{BARE_IMPORTS}\nprint(open('/proc/self/status').read())"
    found = []
    for _ in range(5):
        out = netns.ns_run(site.router, [PYTHON, "-c", code])
        found += [int(line.split()[1]) for line in out.splitlines() if line.startswith("VmRSS:")]
    return int(statistics.median(found))


def bench_steady(site: Site, idle: float) -> dict[str, Any]:
    """Production timing: RSS against the import floor, then idle wake-ups."""
    keepalive = 60.0
    set_portal(site, health_interval=300, keepalive=int(keepalive))  # the defaults
    time.sleep(10)
    pid = site.daemon_pid()
    assert pid is not None
    rss = rss_kib(pid)
    floor = import_floor(site)
    before = switches(pid)
    time.sleep(idle)
    woken = switches(pid) - before
    per_minute = woken * 60.0 / idle
    return {
        "rss_kib": rss,
        "floor_rss_kib": floor,
        "ratio_rss_vs_floor": rss / floor,
        "idle_seconds": idle,
        "wakeups_per_minute": per_minute,
        "keepalive_s": keepalive,
        "beyond_keepalive_per_minute": per_minute - 2 * 60.0 / keepalive,
    }


def bench_push_growth(site: Site, pushes: int, warm: int = 100) -> dict[str, Any]:
    """RSS before and after ``pushes`` more pushes, after ``warm`` untimed ones.

    Each push adds about three events to the daemon's bounded event history (200 events):
    until it is full that is a fixed cost, not growth, so the warm-up fills it first.
    """
    pid = site.daemon_pid()
    assert pid is not None
    bench_push(site, warm)
    before = rss_kib(pid)
    started = time.monotonic()
    bench_push(site, pushes)
    seconds = time.monotonic() - started
    after = rss_kib(pid)
    return {
        "pushes": pushes,
        "warm_pushes": warm,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "growth_mib_per_1000": (after - before) / 1024 * 1000 / pushes,
        "s_per_push": seconds / pushes,
    }


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median": round(statistics.median(ordered), 2),
        "p90": round(ordered[int(0.9 * (len(ordered) - 1))], 2),
    }


def render(result: dict[str, Any]) -> str:
    push, b = result["push_ms"], result["bytes"]
    bare = push["bare"]["median"]
    lines = [
        f"push -> reported pending_confirm (applied): median {push['applied']['median']} ms, "
        f"p90 {push['applied']['p90']} ms  ({push['applied']['median'] / bare:.1f}x a bare MQTT "
        f"round trip of {bare} ms)",
        f"push -> reported applied (confirmed over a new connection): median "
        f"{push['confirmed']['median']} ms, p90 {push['confirmed']['p90']} ms "
        f"({push['confirmed']['median'] / bare:.1f}x the bare round trip)",
        f"WAN bytes per health report {b['bytes_per_health']} (payload "
        f"{b['health_payload_bytes']}), per keepalive exchange {b['bytes_per_keepalive']}",
        f"status + health at default intervals: {b['bytes_per_day'] / 1024:.0f} KiB/day; "
        f"a 5-minute HTTPS poller: {b['poller_bytes_per_day'] / 1024:.0f} KiB/day "
        f"({b['poll_bytes']} B per poll) -> ratio "
        f"{b['bytes_per_day'] / b['poller_bytes_per_day']:.2f}",
    ]
    steady = result.get("steady")
    if steady:
        lines += [
            f"steady RSS, portal connected: {steady['rss_kib'] / 1024:.1f} MiB vs import floor "
            f"{steady['floor_rss_kib'] / 1024:.1f} MiB (nftables+pyroute2+paho) -> "
            f"{steady['ratio_rss_vs_floor']:.2f}x",
            f"idle wake-ups, portal connected (keepalive {steady['keepalive_s']:.0f} s, "
            f"{steady['idle_seconds']:.0f} s window): {steady['wakeups_per_minute']:.1f} /min, "
            f"{steady['beyond_keepalive_per_minute']:.1f} /min beyond the keepalive",
        ]
    growth = result.get("push_growth")
    if growth:
        lines.append(
            f"RSS growth over {growth['pushes']} pushes: {growth['growth_mib_per_1000']:+.2f} "
            f"MiB per 1,000 (from {growth['rss_before_kib'] / 1024:.1f} MiB; "
            f"{growth['s_per_push']:.2f} s per push)"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument("--pushes", type=int, default=20, help="pushes to time (20)")
    parser.add_argument("--window", type=float, default=30.0, help="byte-count window, s (30)")
    parser.add_argument("--idle", type=float, default=300.0, help="wake-up window, s (300)")
    parser.add_argument(
        "--growth-pushes", type=int, default=1000, help="pushes for RSS growth (1000)"
    )
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench/portal.py needs root (it creates network namespaces)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    site = Site(prefix=f"ehP{secrets.token_hex(2)}")
    progress = (lambda m: print(m, file=sys.stderr)) if not args.json else (lambda m: None)
    compiled = routerpyc.compile_packages()
    progress(f"byte-compiled, as the router package ships them: {', '.join(compiled)}")
    started = time.monotonic()
    try:
        progress("lab site up")
        site.up(lambda m: None)
        progress(f"bytes: two {args.window:.0f} s windows and 5 HTTPS polls")
        byte_counts = bench_bytes(site, args.window)
        progress(f"steady: RSS and {args.idle:.0f} s of idle wake-ups")
        steady = bench_steady(site, args.idle)
        progress(f"push latency: {args.pushes} pushes")
        samples = bench_push(site, args.pushes)
        growth = None
        if args.growth_pushes:
            progress(f"RSS growth: {args.growth_pushes} pushes")
            growth = bench_push_growth(site, args.growth_pushes)
    finally:
        site.down()
    result = {
        "push_ms": {k: summary(v) for k, v in samples.items()},
        "bytes": byte_counts,
        "steady": steady,
        "push_growth": growth,
        "wall_seconds": round(time.monotonic() - started, 1),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(render(result))
        print(f"(benchmark wall time {result['wall_seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
