"""Fleet benchmark on a 2-node RabbitMQ cluster: devices on node 1, the portal on node 2.

RabbitMQ's MQTT plugin keeps retained messages per node and (3.10, Debian 12) speaks only
MQTT 3.1.1. This runs ``bench/fleetcommon.py``'s sites (the project's own ``PortalLink`` and
``PushController`` with a stub apply, mutual TLS with one certificate each, default settings:
MQTT 5 asked first) against node 1 of a cluster started by ``energyhub_lab.rabbit``, with
its portal process (the reference ``PortalStandIn`` answering ``config/get``, over MQTT
3.1.1) on node 2, and shows:

1. that a retained ``config/desired`` published on node 2 is NOT seen by a subscriber on node 1
   (it is on node 2), while a real link on node 1 gets the same document through
   ``config/get`` (the reason the design asks the portal);
2. connect-all, and whether every link fell back to MQTT 3.1.1;
3. push to all (WAN change: fresh-connection confirm; LAN change: live confirm) -> every site
   applied and confirmed;
4. node 1 restarted while the portal's desired state changes (the live push reaches nobody,
   the retained copy sits on node 2): every site resynchronised through ``config/get``;
5. memory: per link in this process, per MQTT connection in node 1's Erlang VM.

Floors in the same run: ``--sites`` sequential TLS handshakes with node 1 (connect-all), an
idle thread in poll (memory per link). No assertions: it reports. Skips with a message (exit
0) when rabbitmq-server is not installed or cannot start.

Run: ``.venv/bin/python bench/fleet_cluster.py [--sites 200] [--json]`` (``make bench``).
Loopback only; everything under a temporary directory (in /dev/shm when present), removed
afterwards, also on failure or SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections import Counter
from typing import Any

import paho.mqtt.client as mqtt
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

from energyhub_lab.portal import topic
from energyhub_lab.rabbit import RabbitCluster, RabbitUnavailable, Tls, seen_before_marker

FALLBACK = "trying MQTT 3.1.1"


class NodeEndpoint:
    """What ``Fleet`` needs of a broker (``port``, ``stop``, ``start``), for one cluster node."""

    def __init__(self, cluster: RabbitCluster, index: int) -> None:
        self.cluster = cluster
        self.index = index
        self.port = cluster.nodes[index].mqtt_port
        self.stopped_at = self.launched_at = 0.0

    def stop(self, *_args: Any, **_kwargs: Any) -> None:
        self.stopped_at = time.monotonic()
        self.cluster.stop_node(self.index)

    def start(self) -> None:
        # Only launched: sites may connect as soon as its listener opens, and ``outage``
        # counts the reconnects after this returns. The boot time is what the first site
        # back shows.
        self.cluster.start_node(self.index, wait=False)
        self.launched_at = time.monotonic()


def portal_client(pki: Pki, port: int) -> Any:
    """A plain client with the portal's identity in this process, for the retained probe."""
    kwargs: dict[str, Any] = {"client_id": "bench-portal-probe", "protocol": mqtt.MQTTv311}
    api = getattr(mqtt, "CallbackAPIVersion", None)
    if api is not None:
        kwargs["callback_api_version"] = api.VERSION2
    client = mqtt.Client(**kwargs)
    client.tls_set_context(pki.context("portal"))
    client.connect("localhost", port, 30)
    client.loop_start()
    return client


def retained_across_nodes(
    cluster: RabbitCluster, pki: Pki, name: str, payload: bytes
) -> dict[str, Any]:
    """The portal (node 2) publishes ``name``'s desired document retained; a subscriber with
    that device's certificate looks on node 1 and on node 2."""
    desired = topic(name, "config/desired")
    client = portal_client(pki, cluster.nodes[1].mqtt_port)
    try:
        client.publish(desired, payload, qos=1, retain=True).wait_for_publish(30)

        def marker(data: bytes) -> None:
            client.publish(desired, data, qos=1).wait_for_publish(30)

        seen = {}
        for index in (0, 1):
            port = cluster.nodes[index].mqtt_port
            got = seen_before_marker(port, pki.context(name), f"{name}-probe{index}", desired,
                                     marker)  # fmt: skip
            seen[index] = sum(1 for body, retained in got if retained and body == payload)
    finally:
        client.disconnect()
        client.loop_stop()
    return {"retained_seen_on_node1": seen[0], "retained_seen_on_node2": seen[1]}


def run(n: int) -> dict[str, Any]:
    out: dict[str, Any] = {"sites": n}
    cluster: RabbitCluster | None = None
    fleets: list[Fleet] = []
    portal: PortalProcess | None = None
    with work_dir("eh-fleet-rmq-") as work:
        try:
            log(f"certificates for {n + 1} sites ...")
            pki = Pki(work, n + 1, "eh-")
            probe = f"eh-{n:05d}"  # one more identity, for the retained-message probe
            cluster = RabbitCluster(work / "rabbit", Tls(pki.ca, pki.server_cert, pki.server_key),
                                    [f"eh-{i:05d}" for i in range(n + 1)])  # fmt: skip
            t0 = time.monotonic()
            cluster.start()
            out["cluster_start_s"] = round(time.monotonic() - t0, 1)
            out["broker"] = cluster.ctl(cluster.nodes[0], "version").strip()
            log(f"2-node RabbitMQ {out['broker']} cluster up in {out['cluster_start_s']} s")
            node1 = NodeEndpoint(cluster, 0)
            # MQTT 3.1.1: RabbitMQ 3.10 refuses MQTT 5 and the stand-in has no fallback.
            portal = PortalProcess(pki, cluster.nodes[1].mqtt_port, protocol="3.1.1")
            floor_tls, out_floors = floors(pki, node1.port, n, handshakes=min(n, 200))
            out.update(out_floors)

            # 1. retained on node 2 vs config/get from node 1 (before the fleet: few
            # descriptors, so the probe's paho clients may wait with select()).
            doc = json.dumps({"version": 1, "device_id": probe, "lan": {"lease": "12h"}}).encode()
            portal.set({probe: doc}, push=False)
            out["retained"] = retained_across_nodes(cluster, pki, probe, doc)
            single = Fleet(1, pki, node1, work / "probe", first=n)
            fleets.append(single)
            t0 = time.monotonic()
            single.start()
            got = wait(lambda: 1 in single.sites[0].confirmed, 120)
            out["retained"]["config_get_on_node1_confirmed"] = got
            out["retained"]["config_get_on_node1_s"] = round(time.monotonic() - t0, 1)
            single.stop()
            fleets.remove(single)
            log(f"retained desired from node 2: {out['retained']}")

            # 2. connect-all with the default settings (MQTT 5 first).
            answered0 = portal.stats()["answered"]
            rss0, broker0 = rss_kib(), cluster.nodes[0].rss_kib()
            sites = Fleet(n, pki, node1, work / "sites")
            fleets.append(sites)
            out.update(sites.connect_all(floor_tls))
            firsts = [s.connects[0] for s in sites.sites if s.connects]
            out["connect_all_busiest_second_share"] = round(busiest_share(firsts, n), 4)
            out["protocols"] = dict(Counter(s.link.protocol for s in sites.sites))
            out["fell_back"] = sum(any(FALLBACK in st.reason for st in s.states)
                                   for s in sites.sites)  # fmt: skip
            wait(lambda: portal.stats()["answered"] - answered0 >= n, 120)
            out["desired_requests_answered"] = portal.stats()["answered"] - answered0
            out["memory_per_link_kib"] = round((rss_kib() - rss0) / n, 1)
            out["broker_kib_per_connection"] = round((cluster.nodes[0].rss_kib() - broker0) / n, 1)
            log(f"connect-all {out['connect_all_s']} s, protocols {out['protocols']}, "
                f"fell back {out['fell_back']}/{n}")  # fmt: skip

            # 3. push to all, published by the portal on node 2.
            wait(sites.all_held, HOLD + 120)
            wan = {"wan": {"proto": "dhcp", "mtu": 1500}}
            out["push_wan"] = sites.push(portal, 1, wan)
            log(f"push (fresh confirm): {out['push_wan']}")
            out["push_lan"] = sites.push(portal, 2, {**wan, "lan": {"lease": "12h"}})
            log(f"push (live confirm): {out['push_lan']}")

            # 4. restart node 1 while the desired state changes: the live push reaches no
            # device and its retained copy stays on node 2; only config/get can deliver
            # version 3.
            wait(sites.all_held, HOLD + 120)
            answered0 = portal.stats()["answered"]

            def change_desired() -> None:
                sites.push(portal, 3, {**wan, "lan": {"lease": "6h"}}, timeout=0)

            restart = sites.outage(node1, 1.0, change_desired)
            cluster.await_node(0)
            t_down, t_launch = node1.stopped_at, node1.launched_at
            first = min(t for s in sites.sites for t in s.connects if t >= t_launch)
            restart["node_stopped_s"] = round(t_launch - t_down, 1)  # stop + the 1 s outage
            restart["first_back_s"] = round(first - t_launch, 1)  # ~ node 1's boot to MQTT
            restart.update(sites.synchronised(3, t_down))
            restart["answers_after_restart"] = portal.stats()["answered"] - answered0
            out["restart_node1"] = restart
            log(f"node 1 restart: {restart}")
        finally:
            for each in fleets:
                with contextlib.suppress(Exception):
                    each.stop()
            if portal is not None:
                portal.close()
            if cluster is not None:
                cluster.close()
    return out


def report(r: dict[str, Any]) -> str:
    n = r["sites"]
    out = [f"fleet on a 2-node RabbitMQ cluster ({r['broker']}, MQTT plugin): {n} portal links "
           "on node 1, the portal stand-in on node 2, mutual TLS"]  # fmt: skip
    ret = r["retained"]
    out.append(f"  retained config/desired published on node 2: seen by a subscriber on node 1 "
               f"{ret['retained_seen_on_node1']} time(s), on node 2 "
               f"{ret['retained_seen_on_node2']}; a link on node 1 confirmed it through "
               f"config/get: {ret['config_get_on_node1_confirmed']} "
               f"({ret['config_get_on_node1_s']} s)")  # fmt: skip
    protocols = ", ".join(f"MQTT {k}: {v}" for k, v in sorted(r["protocols"].items()))
    out.append(f"  {connect_all_text(r)}, busiest second "
               f"{r['connect_all_busiest_second_share']:.1%}; {protocols}; "
               f"{r['fell_back']}/{n} fell back from MQTT 5 after the broker closed the "
               "connection")  # fmt: skip
    out.append(f"  {memory_text(r)}; node 1 grew {r['broker_kib_per_connection']} KiB "
               "per MQTT connection")  # fmt: skip
    for key, label in (("push_wan", "push from node 2, WAN change (fresh confirm)"),
                       ("push_lan", "push from node 2, LAN change (live confirm)")):  # fmt: skip
        out.append(f"  {push_text(label, r[key], n)}")
    s = r["restart_node1"]
    out.append(f"  node 1 restart (stopped {s['node_stopped_s']} s, first site back "
               f"{s['first_back_s']} s after the relaunch) with the desired state changed "
               f"meanwhile: {n - s['unsynchronised']}/{n} synchronised through config/get "
               f"(unsynchronised {s['unsynchronised']}; {s['answers_after_restart']} answers "
               f"from node 2), p50 {s['p50_s']} s, last {s['max_s']} s after the stop; all "
               f"back within {s['back_within_s']} s of the relaunch, busiest second "
               f"{s['busiest_second_share']:.1%}")  # fmt: skip
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    exit_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=200)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    try:
        result = run(args.sites)
    except RabbitUnavailable as exc:
        print(f"fleet on a RabbitMQ cluster: skipped, rabbitmq-server cannot start: {exc}")
        return 0
    print(json.dumps(result, indent=1) if args.json else report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
