"""Fleet benchmark: N of the project's own portal links against one local mosquitto.

Every site is a real ``PortalLink`` (its own thread, mutual TLS with its own certificate, the
directional ACL) plus a real ``PushController`` with a stub apply; the portal side is the lab's
reference ``PortalStandIn`` (answers ``config/get``). All in this process, on loopback.

Scenarios, in order (each waits until every connection has held ``backoff_reset_after``):

1. connect-all: every link started at once (worst case: a region's power returns);
2. broker outage of 1 s, then 10 s (events published by every site while it is down):
   busiest second of reconnects as a share of the fleet; events lost;
3. push to all (a WAN change: confirmed over a fresh connection): push -> confirmed p50/p99,
   busiest second of the confirm reconnects; then a LAN-only push (confirmed live);
4. broker restart with an EMPTY store (no retained desired anywhere) while the portal's
   desired state changed: every site must end with reported = desired through ``config/get``;
5. memory per link.

Baselines, same run: the 1 s outage and the push repeated by a smaller fleet with the old
settings (first retry 0.5-1 s, backoff reset at CONNACK, immediate fresh reconnect); N
sequential TLS handshakes as the floor of connect-all; an idle thread blocked in ``poll`` as
the floor of memory per link. No assertions: this reports, it does not judge.

The sites, the portal process and the floors are ``bench/fleetcommon.py``'s (shared with
``bench/fleet_cluster.py``); the broker and the scenarios are here.

Run: ``.venv/bin/python bench/fleet.py [--sites 1000] [--json]`` (``make bench``). Uses only
loopback and a temporary directory (in /dev/shm when present), removed afterwards.
"""

from __future__ import annotations

import argparse
import json
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from fleetcommon import (
    HOLD,
    Fleet,
    Pki,
    PortalProcess,
    busiest_share,
    connect_all_text,
    exit_on_sigterm,
    floors,
    log,
    memory_text,
    push_text,
    rss_kib,
    wait,
    work_dir,
)

from energyhubd.portal.topics import mosquitto_acl

OLD = {"backoff_initial": 1.0, "backoff_max": 60.0, "backoff_reset_after": 1.0,
       "fresh_confirm_delay": 0.0}  # fmt: skip


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Broker:
    """One mosquitto on loopback: mutual TLS, the certificate's name as the user, the
    directional ACL, a persistent store that ``stop(wipe=True)`` empties."""

    def __init__(self, pki: Pki, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        acl = workdir / "acl"
        acl.write_text(mosquitto_acl("portal"))
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(
            f"per_listener_settings false\nallow_anonymous false\nuser root\n"
            f"persistence true\npersistence_location {workdir}/\nlog_dest none\n"
            f"acl_file {acl}\nmax_queued_messages 1000000\nmax_inflight_messages 0\n"
            f"message_size_limit 1048576\n"
            f"listener {self.port} 127.0.0.1\ncafile {pki.ca}\ncertfile {pki.server_cert}\n"
            f"keyfile {pki.server_key}\nrequire_certificate true\n"
            "use_identity_as_username true\n"
        )

    def start(self) -> None:
        def limits() -> None:
            hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

        self.proc = subprocess.Popen(
            ["mosquitto", "-c", str(self.conf)], preexec_fn=limits,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError("mosquitto did not start")

    def stop(self, sig: int = signal.SIGTERM, wipe: bool = False) -> None:
        if self.proc is not None:
            self.proc.send_signal(sig)
            self.proc.wait(30)
            self.proc = None
        if wipe:
            for db in self.workdir.glob("*.db"):
                db.unlink()


def run(n: int, baseline_n: int) -> dict[str, Any]:
    out: dict[str, Any] = {"sites": n}
    broker: Broker | None = None
    fleet: Fleet | None = None
    portal: PortalProcess | None = None
    with work_dir("eh-fleet-") as work:
        try:
            log(f"certificates for {n + baseline_n} sites ...")
            pki = Pki(work, n + baseline_n, "eh-")
            (work / "broker").mkdir()
            broker = Broker(pki, work / "broker")
            broker.start()
            portal = PortalProcess(pki, broker.port)
            floor_tls, out_floors = floors(pki, broker.port, n)
            out.update(out_floors)

            rss0 = rss_kib()
            fleet = Fleet(n, pki, broker, work / "sites")
            out.update(fleet.connect_all(floor_tls))
            # Every site asked for its desired state and got the answer "none".
            portal_ = portal
            wait(lambda: portal_.stats()["answered"] >= n, 120, 1.0)
            out["desired_requests_answered"] = portal_.stats()["answered"]
            out["memory_per_link_kib"] = round((rss_kib() - rss0) / n, 1)
            log(f"connect-all {out['connect_all_s']} s; "
                f"memory {out['memory_per_link_kib']} KiB/link")  # fmt: skip

            wait(fleet.all_held, HOLD + 60)
            out["outage_1s"] = fleet.outage(broker, 1.0)
            log(f"1 s outage: {out['outage_1s']}")

            wait(fleet.all_held, HOLD + 120)
            per_site = 3

            def publish_events() -> None:
                for site in fleet.sites:  # type: ignore[union-attr]
                    for i in range(per_site):
                        site.link.publish_event("sample", {"i": i})

            out["outage_10s"] = fleet.outage(broker, 10.0, publish_events)
            expected = n * per_site
            wait(lambda: portal_.stats()["events"] >= expected, 120, 1.0)
            out["events_published"] = expected
            out["events_lost"] = expected - portal_.stats()["events"]
            log(f"10 s outage: {out['outage_10s']}; events lost {out['events_lost']}")

            wait(fleet.all_held, HOLD + 120)
            out["push_wan"] = fleet.push(portal, 1, {"wan": {"proto": "dhcp", "mtu": 1500}})
            log(f"push (fresh confirm): {out['push_wan']}")
            lan = {"wan": {"proto": "dhcp", "mtu": 1500}, "lan": {"lease": "12h"}}
            out["push_lan"] = fleet.push(portal, 2, lan)
            log(f"push (live confirm): {out['push_lan']}")

            # Broker restart with an empty store while the desired state changes: nothing
            # retained anywhere, every site must get version 3 by asking the portal.
            wait(fleet.all_held, HOLD + 120)
            broker.stop(signal.SIGKILL, wipe=True)
            docs = fleet.desired(3, {"wan": {"proto": "dhcp", "mtu": 1500}, "lan": {"lease": "6h"}})
            portal.set(docs, push=False)  # the portal's state changes; nothing is published
            t_up = time.monotonic()
            broker.start()
            out["restart_resync"] = {
                **fleet.synchronised(3, t_up),
                "busiest_second_share": round(busiest_share(fleet.connects_since(t_up), n), 4),
            }
            log(f"restart with empty store: {out['restart_resync']}")
            fleet.stop()
            fleet = None

            if baseline_n:
                log(f"baseline: {baseline_n} sites with the old settings ...")
                # Its own certificates: numbered after the main fleet's.
                old = Fleet(baseline_n, pki, broker, work / "old", first=n, **OLD)
                fleet = old
                old.start()
                wait(old.all_connected, 300)
                time.sleep(2)
                out["baseline_outage_1s"] = old.outage(broker, 1.0)
                wait(old.all_connected, 120)
                time.sleep(2)
                out["baseline_push_wan"] = old.push(portal, 11, {"wan": {"mtu": 1400}})
                log(f"baseline: {out['baseline_outage_1s']}; {out['baseline_push_wan']}")
        finally:
            if fleet is not None:
                fleet.stop()
            if portal is not None:
                portal.close()
            if broker is not None:
                broker.stop(signal.SIGKILL)
    return out


def report(r: dict[str, Any]) -> str:
    n = r["sites"]
    out = [f"fleet benchmark: {n} portal links, one mosquitto on loopback, mutual TLS"]
    out.append(f"  {connect_all_text(r)}")
    out.append(f"  {memory_text(r)}")
    for key, label in (("outage_1s", "1 s"), ("outage_10s", "10 s")):
        o = r[key]
        line = f"  {label} broker outage: busiest second {o['busiest_second_share']:.1%}"
        line += f" of the fleet ({o['busiest_second_sites']} sites)"
        line += f", all back within {o['back_within_s']} s"
        old = r.get("baseline_" + key)
        if old:
            line += f" (old settings, same run: {old['busiest_second_share']:.1%})"
        out.append(line)
    out.append(f"  events lost over the 10 s outage: {r['events_lost']} of {r['events_published']}")
    for key, label in (("push_wan", "push, WAN change (fresh confirm)"),
                       ("push_lan", "push, LAN change (live confirm)")):  # fmt: skip
        line = f"  {push_text(label, r[key], n)}"
        old = r.get("baseline_" + key)
        if old:
            line += f" (old settings: {old['busiest_second_reconnects_share']:.1%}"
            line += f", p50 {old['p50_s']} s)"
        out.append(line)
    s = r["restart_resync"]
    out.append(f"  broker restart, empty store: {n - s['unsynchronised']}/{n} synchronised "
               f"(unsynchronised {s['unsynchronised']}), p50 {s['p50_s']} s, last {s['max_s']} s"
               f", busiest second {s['busiest_second_share']:.1%}")  # fmt: skip
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    exit_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=1000)
    parser.add_argument("--baseline-sites", type=int, default=None,
                        help="sites of the old-settings baseline (default: a quarter)")  # fmt: skip
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    baseline = args.baseline_sites if args.baseline_sites is not None else args.sites // 4
    result = run(args.sites, baseline)
    print(json.dumps(result, indent=1) if args.json else report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
