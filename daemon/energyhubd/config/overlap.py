"""Find overlapping IPv4 prefixes in O(n log n).

Two prefixes overlap exactly when one contains the other (prefixes nest or are disjoint). So
sorted by (first address, widest first), every prefix comes right after the chain of
prefixes that contain it, and all prefixes it contains follow it contiguously. One sweep with
a stack of the open containers finds, for every entry, the earliest-listed entry among its
containers and among the entries it contains; the earliest of those two that is listed before
it is the entry it is reported against.

The answer is the same as comparing every pair (``tests/test_config_overlap.py`` checks that
with hypothesis): entry ``i`` is reported iff some entry ``j < i`` overlaps it, against the
smallest such ``j``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

_NONE = 1 << 62  # larger than any index


def first_overlaps(nets: Sequence[tuple[int, ipaddress.IPv4Network]]) -> dict[int, int]:
    """``{i: j}`` for every listed ``(i, net)`` that overlaps an earlier-listed entry ``j``
    (the smallest such ``j``). Indexes are the caller's (list positions), in any order."""
    # Widest first among prefixes that start at the same address, so a container always
    # comes before what it contains; equal prefixes keep their list order.
    spans = sorted(
        (int(net.network_address), -int(net.broadcast_address), index) for index, net in nets
    )
    outer = [_NONE] * len(spans)  # earliest index among the containers of spans[k]
    inner = [_NONE] * len(spans)  # earliest index among what spans[k] contains
    stack: list[int] = []  # positions of the open containers, outermost first
    for k, (first, _neg_last, _index) in enumerate(spans):
        while stack and -spans[stack[-1]][1] < first:
            _close(stack, spans, inner)
        if stack:
            top = stack[-1]
            outer[k] = min(outer[top], spans[top][2])
        stack.append(k)
    while stack:
        _close(stack, spans, inner)
    found: dict[int, int] = {}
    for k, (_first, _neg_last, index) in enumerate(spans):
        earliest = min(outer[k], inner[k])
        if earliest < index:
            found[index] = earliest
    return found


def _close(stack: list[int], spans: list[tuple[int, int, int]], inner: list[int]) -> None:
    """Pop the innermost open container; it and all it contains are inside its parent."""
    done = stack.pop()
    if stack:
        parent = stack[-1]
        inner[parent] = min(inner[parent], inner[done], spans[done][2])
