"""allow_from overlaps: the O(n log n) sweep finds exactly what comparing every pair finds, and
the size bounds are named in the error with the field path."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from energyhubd.config.errors import ConfigError
from energyhubd.config.load import (
    MAX_ALLOW_FROM_PER_CONFIG,
    MAX_ALLOW_FROM_PER_FORWARD,
    parse_document,
)
from energyhubd.config.overlap import first_overlaps

Net = ipaddress.IPv4Network


def naive(nets: list[tuple[int, Net]]) -> dict[int, int]:
    """The reference: every pair compared; entry i against the earliest j < i it overlaps."""
    found: dict[int, int] = {}
    for i, net in nets:
        earlier = [j for j, other in nets if j < i and other.overlaps(net)]
        if earlier:
            found[i] = min(earlier)
    return found


# Addresses from a small space (10.0.0.0/12 in /24 steps) so that nesting, duplicates and
# neighbours are common.
networks = st.builds(
    lambda low, plen: ipaddress.IPv4Interface(((10 << 24) | (low << 8), plen)).network,
    st.integers(0, 2**12 - 1),
    st.integers(8, 24),
)


@settings(max_examples=500, deadline=None)
@given(st.lists(networks, max_size=40))
def test_sweep_finds_exactly_the_pairwise_overlaps(items: list[Net]) -> None:
    nets = list(enumerate(items))
    assert first_overlaps(nets) == naive(nets)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 60), networks), max_size=30, unique_by=lambda t: t[0]))
def test_indexes_need_not_be_contiguous_or_ordered(pairs: list[tuple[int, Net]]) -> None:
    assert first_overlaps(pairs) == naive(pairs)


def test_nested_duplicate_and_neighbour_cases() -> None:
    items = [
        Net("10.0.0.0/25"),
        Net("10.0.0.0/24"),  # contains [0]
        Net("10.0.0.128/25"),  # inside [1] only
        Net("10.0.0.0/25"),  # duplicates [0]
        Net("10.0.1.0/24"),  # neighbour of [1], no overlap
        Net("0.0.0.0/0"),  # overlaps everything
    ]
    assert first_overlaps(list(enumerate(items))) == {1: 0, 2: 1, 3: 0, 5: 0}


def forward(i: int, sources: list[str]) -> dict[str, Any]:
    return {"name": f"f{i}", "port": 1000 + i, "target": "display", "allow_from": sources}


def hosts(count: int, start: int = 0) -> list[str]:
    base = int(ipaddress.IPv4Address("198.18.0.0"))
    return [str(ipaddress.IPv4Address(base + start + k)) for k in range(count)]


def errors_of(document: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_document(document)
    return [str(e) for e in caught.value.errors]


def test_errors_stay_in_list_order_with_the_earliest_clash() -> None:
    doc = {"forwards": [forward(0, ["198.51.100.0/24", "bad", "198.51.100.9", "198.51.100.0/24"])]}
    assert errors_of(doc) == [
        "forwards[0].allow_from[1]: 'bad' is not an IPv4 address or prefix",
        "forwards[0].allow_from[2]: 198.51.100.9 overlaps forwards[0].allow_from[0] "
        "(198.51.100.0/24)",
        "forwards[0].allow_from[3]: 198.51.100.0/24 duplicates forwards[0].allow_from[0] "
        "(198.51.100.0/24)",
    ]


def test_bound_per_forward_is_named_with_the_path() -> None:
    ok = parse_document({"forwards": [forward(0, hosts(MAX_ALLOW_FROM_PER_FORWARD))]})
    assert len(ok.forwards[0].allow_from) == MAX_ALLOW_FROM_PER_FORWARD
    doc = {"forwards": [forward(0, hosts(MAX_ALLOW_FROM_PER_FORWARD + 1))]}
    assert errors_of(doc) == [
        f"forwards[0].allow_from: {MAX_ALLOW_FROM_PER_FORWARD + 1} entries; "
        f"at most {MAX_ALLOW_FROM_PER_FORWARD} per forward"
    ]


def test_bound_per_configuration_is_named_with_the_path() -> None:
    per = MAX_ALLOW_FROM_PER_FORWARD
    full = MAX_ALLOW_FROM_PER_CONFIG // per
    fwds = [forward(i, hosts(per, i * per)) for i in range(full)]
    assert len(parse_document({"forwards": fwds}).forwards) == full
    fwds.append(forward(full, hosts(1, full * per)))
    assert errors_of({"forwards": fwds}) == [
        f"forwards[{full}].allow_from: the configuration would have "
        f"{MAX_ALLOW_FROM_PER_CONFIG + 1} allow_from entries; "
        f"at most {MAX_ALLOW_FROM_PER_CONFIG} per configuration"
    ]
