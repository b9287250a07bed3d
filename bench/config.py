"""Configuration-check benchmark: the allow_from overlap check at its bounds.

Measures ``parse_document`` of a document at the allow_from bounds (16 forwards of 256 single
addresses, 4,096 entries, the most a configuration may hold), of the same document with the
entries written as overlapping prefixes (every entry rejected: the error path), and of the
same number of forwards with ``allow_any_source`` (no entries). The floor, measured in the same
run on the same data, is what any check must pay: building the 4,096 ``IPv4Network`` objects.
Beside it, the check the loader used before (every entry against every earlier one; quadratic)
on the same document (per forward, as it ran) and on the 4,096 entries as one list (what a
single forward could hold before the bound).

No root, no namespaces: ``.venv/bin/python bench/config.py [--json]`` (``make bench``).
It reports; it does not judge.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import time
from collections.abc import Callable
from typing import Any

from energyhubd.config.errors import ConfigError
from energyhubd.config.load import (
    MAX_ALLOW_FROM_PER_CONFIG,
    MAX_ALLOW_FROM_PER_FORWARD,
    parse_document,
)


def document(sources: Callable[[int, int], list[str]]) -> dict[str, Any]:
    forwards = []
    for i in range(MAX_ALLOW_FROM_PER_CONFIG // MAX_ALLOW_FROM_PER_FORWARD):
        forwards.append(
            {
                "name": f"f{i}",
                "port": 1000 + i,
                "target": "display",
                "allow_from": sources(i, MAX_ALLOW_FROM_PER_FORWARD),
            }
        )
    return {"forwards": forwards}


def hosts(i: int, n: int) -> list[str]:
    base = int(ipaddress.IPv4Address("198.18.0.0")) + i * n
    return [str(ipaddress.IPv4Address(base + k)) for k in range(n)]


def nested(i: int, n: int) -> list[str]:
    """Prefixes that all contain each other: every entry after the first is an overlap."""
    return [f"10.0.0.0/{8 + k % 25}" for k in range(n)]


def pairwise(nets: list[ipaddress.IPv4Network]) -> int:
    """The check as it was: every entry against every earlier one."""
    clashes = 0
    seen: list[ipaddress.IPv4Network] = []
    for net in nets:
        if any(other.overlaps(net) for other in seen):
            clashes += 1
            continue
        seen.append(net)
    return clashes


def best_of(reps: int, fn: Callable[[], object]) -> float:
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def parse_or_errors(doc: dict[str, Any]) -> object:
    try:
        return parse_document(doc)
    except ConfigError as exc:
        return exc.errors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    bounded = document(hosts)
    overlapping = {"forwards": [dict(f, allow_from=nested(0, 256)) for f in bounded["forwards"]]}
    open_doc = {
        "forwards": [
            {"name": f["name"], "port": f["port"], "target": "display", "allow_any_source": True}
            for f in bounded["forwards"]
        ]
    }
    text = json.dumps(bounded)
    nets = [ipaddress.IPv4Network(a) for f in bounded["forwards"] for a in f["allow_from"]]
    result = {
        "entries": len(nets),
        "document_bytes": len(text),
        "parse_bounded_s": best_of(args.reps, lambda: parse_document(bounded)),
        "parse_overlapping_s": best_of(args.reps, lambda: parse_or_errors(overlapping)),
        "parse_no_entries_s": best_of(args.reps, lambda: parse_document(open_doc)),
        "json_loads_s": best_of(args.reps, lambda: json.loads(text)),
        "floor_networks_s": best_of(
            args.reps,
            lambda: [
                ipaddress.IPv4Network(a) for f in bounded["forwards"] for a in f["allow_from"]
            ],
        ),
        "old_check_per_forward_s": best_of(
            1,
            lambda: [
                pairwise([ipaddress.IPv4Network(a) for a in f["allow_from"]])
                for f in bounded["forwards"]
            ],
        ),
        "old_check_one_list_s": best_of(1, lambda: pairwise(nets)),
    }
    result["parse_over_floor"] = result["parse_bounded_s"] / result["floor_networks_s"]
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(
        f"config check at the allow_from bounds ({result['entries']} entries, "
        f"{result['document_bytes']} bytes of JSON), best of {args.reps}:"
    )
    for key in (
        "parse_bounded_s",
        "parse_overlapping_s",
        "parse_no_entries_s",
        "json_loads_s",
        "floor_networks_s",
        "old_check_per_forward_s",
        "old_check_one_list_s",
    ):
        print(f"  {key:<24} {result[key] * 1000:9.1f} ms")
    print(f"  parse / floor = {result['parse_over_floor']:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
