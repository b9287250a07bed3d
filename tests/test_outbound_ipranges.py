"""AWS ip-ranges.json -> collapsed S3 eu-central-1 prefixes; broken files keep the old set."""

from __future__ import annotations

import gc
import ipaddress
import json
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from energyhub_lab.awsranges import synthetic_ip_ranges
from energyhubd.outbound.ipranges import (
    MAX_PREFIXES,
    IpRangesError,
    load_ip_ranges,
    parse_ip_ranges,
)

SAMPLE = Path(__file__).with_name("outbound_ip_ranges_sample.json")


def doc(prefixes: list[dict[str, Any]]) -> bytes:
    return json.dumps(
        {"syncToken": "1", "createDate": "2026-11-25-00-00-00", "prefixes": prefixes}
    ).encode()


def s3(prefix: str, region: str = "eu-central-1") -> dict[str, str]:
    return {"ip_prefix": prefix, "region": region, "service": "S3"}


def test_sample_gives_only_s3_eu_central_1_collapsed() -> None:
    nets = load_ip_ranges(str(SAMPLE))
    assert [str(n) for n in nets] == ["198.18.4.0/24", "203.0.113.0/24"]


def test_overlapping_prefixes_are_collapsed_and_disjoint() -> None:
    nets = parse_ip_ranges(
        doc([s3("198.51.100.0/24"), s3("198.51.100.128/25"), s3("198.51.100.7/32")])
    )
    assert nets == [ipaddress.IPv4Network("198.51.100.0/24")]
    nets = parse_ip_ranges(doc([s3("192.0.2.0/25"), s3("192.0.2.128/25"), s3("198.51.100.0/24")]))
    assert [str(n) for n in nets] == ["192.0.2.0/24", "198.51.100.0/24"]
    for a in nets:
        for b in nets:
            assert a is b or not a.overlaps(b)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"[]", "top level is not an object"),
        (json.dumps({"prefixes": []}).encode(), "syncToken"),
        (json.dumps({"syncToken": "1", "createDate": "x"}).encode(), "no 'prefixes' list"),
        (doc([]), "no IPv4 prefix for S3 in eu-central-1"),
        (doc([s3("192.0.2.0/24", region="us-east-1")]), "no IPv4 prefix"),
        (doc([s3("192.0.2.1/24")]), "prefixes[0].ip_prefix"),
        (doc([s3("0.0.0.0/0")]), "implausibly large"),
        (doc([s3("127.0.0.0/8")]), "not a public range"),
        (doc(["192.0.2.0/24"]), "prefixes[0] is not an object"),  # type: ignore[list-item]
        (doc([{"ip_prefix": 5, "region": "eu-central-1", "service": "S3"}]), "not a string"),
        (b"\xff\xfe", "not valid JSON"),
    ],
)
def test_broken_or_suspicious_files_raise_a_clear_error(data: bytes, message: str) -> None:
    with pytest.raises(IpRangesError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_ip_ranges(data)


def test_missing_file_is_an_ip_ranges_error(tmp_path: Path) -> None:
    with pytest.raises(IpRangesError, match="cannot read"):
        load_ip_ranges(str(tmp_path / "nope.json"))


def test_a_full_size_aws_file_is_accepted() -> None:
    data = synthetic_ip_ranges(entries=12_500, s3_region=400)
    assert len(json.loads(data)["prefixes"]) == 12_500
    nets = parse_ip_ranges(data)
    assert len(nets) == 400
    assert all(n.prefixlen == 24 for n in nets)


def test_too_many_prefixes_names_the_limit() -> None:
    data = synthetic_ip_ranges(entries=MAX_PREFIXES + 200, s3_region=MAX_PREFIXES + 1)
    with pytest.raises(IpRangesError, match=rf"more than the allowlist's limit of {MAX_PREFIXES}"):
        parse_ip_ranges(data)
    assert len(parse_ip_ranges(synthetic_ip_ranges(MAX_PREFIXES + 200, MAX_PREFIXES))) == (
        MAX_PREFIXES
    )


def test_a_refused_file_leaves_no_objects_behind() -> None:
    """Entries are dropped while decoding: a refused parse keeps nothing it allocated."""
    refused = synthetic_ip_ranges(entries=12_500, s3_region=0)
    with pytest.raises(IpRangesError):
        parse_ip_ranges(refused)  # warm-up: interned strings, caches
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        with pytest.raises(IpRangesError, match="no IPv4 prefix"):
            parse_ip_ranges(refused)
        gc.collect()
        kept, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert kept - before < 16 * 1024
    # The decoded text is the peak; the twelve thousand entries never are all alive at once.
    assert peak - before < 3 * len(refused)


def test_kept_prefixes_do_not_cache_derived_addresses() -> None:
    """collapse_addresses (run again by the egress compiler) must not grow what is kept."""
    nets = parse_ip_ranges(synthetic_ip_ranges(entries=500, s3_region=50))
    assert list(ipaddress.collapse_addresses(nets)) == nets
    for net in nets:
        assert set(vars(net)) == {"network_address", "netmask", "_prefixlen"}
        assert net.broadcast_address == ipaddress.IPv4Network(str(net)).broadcast_address
        assert net.hostmask == ipaddress.IPv4Network(str(net)).hostmask
