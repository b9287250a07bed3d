"""A synthetic AWS ``ip-ranges.json`` of realistic size and shape, for tests and benchmarks.

Nothing is downloaded: the real file (about 12,000 IPv4 and 3,000 IPv6 entries, a few hundred
of them S3 in eu-central-1) is imitated with the same fields, a spread of services and regions,
overlapping prefixes under several services, and prefix lengths from /12 to /32. Deterministic
for a given seed.
"""

from __future__ import annotations

import ipaddress
import json
import random

SERVICES = ("AMAZON", "EC2", "S3", "CLOUDFRONT", "ROUTE53_HEALTHCHECKS", "DYNAMODB", "API_GATEWAY")
REGIONS = (
    "eu-central-1",
    "eu-west-1",
    "eu-north-1",
    "us-east-1",
    "us-west-2",
    "ap-southeast-1",
    "sa-east-1",
    "GLOBAL",
)
FIRST_OCTETS = (3, 13, 15, 16, 18, 35, 43, 44, 52, 54, 99, 130, 150, 176)


def synthetic_ip_ranges(
    entries: int = 12_500, s3_region: int = 400, region: str = "eu-central-1", seed: int = 1
) -> bytes:
    """``entries`` IPv4 entries, ``s3_region`` of them S3 in ``region`` on distinct /24s."""
    rng = random.Random(seed)
    prefixes: list[dict[str, str]] = []
    # The S3 entries of the region: distinct, non-adjacent /24s so they do not collapse much.
    for n in range(s3_region):
        net = ipaddress.IPv4Network(((52 << 24) + (64 << 16) + n * 512, 24))
        prefixes.append(_entry(str(net), region, "S3"))
    while len(prefixes) < entries:
        length = rng.choice((12, 14, 15, 16, 18, 20, 21, 22, 23, 24, 24, 24, 25, 26, 27, 28, 32))
        address = (rng.choice(FIRST_OCTETS) << 24) | rng.getrandbits(24)
        net = ipaddress.IPv4Network((address, length), strict=False)
        service = rng.choice(SERVICES)
        where = rng.choice(REGIONS)
        if service == "S3" and where == region:
            where = "eu-west-1"
        prefixes.append(_entry(str(net), where, service))
        # AWS publishes many prefixes twice: under their service and under AMAZON.
        if rng.random() < 0.3 and len(prefixes) < entries:
            prefixes.append(_entry(str(net), where, "AMAZON"))
    rng.shuffle(prefixes)
    ipv6 = [
        {
            "ipv6_prefix": f"2a05:d0{n % 100:02d}:{n:x}::/48",
            "region": rng.choice(REGIONS),
            "service": rng.choice(SERVICES),
            "network_border_group": "eu-central-1",
        }
        for n in range(entries // 4)
    ]
    document = {
        "syncToken": "1764028800",
        "createDate": "2026-11-25-00-00-00",
        "prefixes": prefixes,
        "ipv6_prefixes": ipv6,
    }
    return json.dumps(document, indent=2).encode()


def _entry(prefix: str, region: str, service: str) -> dict[str, str]:
    return {
        "ip_prefix": prefix,
        "region": region,
        "service": service,
        "network_border_group": region,
    }
