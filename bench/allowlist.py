"""energyhubd benchmark: what the egress allowlist's S3 prefixes cost in memory.

A synthetic AWS ``ip-ranges.json`` of full size (12,500 IPv4 entries, ``energyhub_lab.awsranges``;
nothing is downloaded) is parsed the way the daemon does, and the daemon's long-lived copies
are kept alive: the collapsed prefixes (``ipranges.parse_ip_ranges``), the egress plan built
from them (``egress.plan_for``) and the nft sets compiled from it (``egress.egress_sets``, which
the daemon keeps as part of its applied ruleset). Each measurement runs in a fresh process:

1. **KiB per prefix**: RSS with a file whose S3 eu-central-1 part has 4,000 prefixes minus RSS
   with one that has 400, divided by 3,600 (the same file size, so the decode costs cancel).
   The same with the Python heap (``tracemalloc``) instead of RSS, which allocator reuse
   cannot blur. Floor: the same prefixes kept as two ints each (network, length) in a list.
2. **A refused file**: RSS after parsing a full-size file that is refused (no S3 prefix in the
   region) minus RSS before, i.e. what a refused download leaves behind.

``python bench/allowlist.py [--json]``; no root needed. Part of ``make bench``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import Any

TARGET_KIB = 0.5
SMALL, LARGE = 400, 4000

WORKER = r"""
import gc, json, sys, tracemalloc
from energyhub_lab.awsranges import synthetic_ip_ranges
from energyhubd.config.load import parse_document
from energyhubd.outbound import ipranges
from energyhubd.policy import egress

def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])

mode, count, traced = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "traced"
config = parse_document({}, "defaults")
data = synthetic_ip_ranges(entries=12_500, s3_region=count)
# Warm-up: every module, code path and cache once, with a small file.
warm = ipranges.parse_ip_ranges(synthetic_ip_ranges(entries=200, s3_region=5))
egress.egress_sets(egress.plan_for(config, egress.EgressInputs(s3_prefixes=tuple(warm))))
del warm
gc.collect()
if traced:
    tracemalloc.start()
    rss = lambda: tracemalloc.get_traced_memory()[0] // 1024
before = rss()
if mode == "refused":
    try:
        ipranges.parse_ip_ranges(data, region="nowhere-1")
    except ipranges.IpRangesError:
        pass
    kept = None
elif mode == "floor":
    kept = [(int(n.network_address), n.prefixlen) for n in ipranges.parse_ip_ranges(data)]
    kept = [x for pair in kept for x in pair]
else:
    prefixes = tuple(ipranges.parse_ip_ranges(data))
    plan = egress.plan_for(config, egress.EgressInputs(s3_prefixes=prefixes))
    kept = (prefixes, plan, egress.egress_sets(plan))
del data
gc.collect()
print(json.dumps({"before": before, "after": rss()}))
"""


def measure(mode: str, count: int, traced: bool) -> dict[str, int]:
    out = subprocess.run(
        [sys.executable, "-c", WORKER, mode, str(count), "traced" if traced else "rss"],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout
    result: dict[str, int] = json.loads(out.splitlines()[-1])
    return result


def run(repeats: int) -> dict[str, Any]:
    def kept(mode: str, count: int, traced: bool = False) -> float:
        samples = []
        for _ in range(1 if traced else repeats):
            m = measure(mode, count, traced)
            samples.append(m["after"] - m["before"])
        samples.sort()
        return float(samples[len(samples) // 2])

    def per_prefix(mode: str, traced: bool = False) -> float:
        return (kept(mode, LARGE, traced) - kept(mode, SMALL, traced)) / (LARGE - SMALL)

    return {
        "prefixes": [SMALL, LARGE],
        "kib_per_prefix": per_prefix("daemon"),
        "floor_kib_per_prefix": per_prefix("floor"),
        "traced_kib_per_prefix": per_prefix("daemon", traced=True),
        "traced_floor_kib_per_prefix": per_prefix("floor", traced=True),
        "refused_file_kept_kib": kept("refused", 0),
        "refused_file_traced_kib": kept("refused", 0, traced=True),
    }


def render(r: dict[str, Any]) -> str:
    floor = r["floor_kib_per_prefix"]
    ratio = f"{r['kib_per_prefix'] / floor:.1f}x" if floor > 0 else "-"
    traced, traced_floor = r["traced_kib_per_prefix"], r["traced_floor_kib_per_prefix"]
    return "\n".join(
        [
            f"allowlist RSS per S3 prefix ({r['prefixes'][0]} vs {r['prefixes'][1]} "
            f"prefixes in a 12,500-entry file): {r['kib_per_prefix']:.2f} KiB "
            f"(target <= {TARGET_KIB} KiB); floor, two ints per prefix: {floor:.2f} KiB "
            f"-> {ratio}",
            f"allowlist Python heap per S3 prefix (tracemalloc): {traced:.2f} KiB; floor "
            f"{traced_floor:.2f} KiB -> {traced / traced_floor:.1f}x",
            f"kept after a refused full-size file: {r['refused_file_kept_kib']:.0f} KiB RSS, "
            f"{r['refused_file_traced_kib']:.0f} KiB Python heap",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--repeats", type=int, default=3, help="processes per figure (3)")
    args = parser.parse_args(argv)
    result = run(args.repeats)
    print(json.dumps(result, indent=2) if args.json else render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
