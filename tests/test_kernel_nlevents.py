"""Reading nftables notifications: which table, which committer (pure; bytes built here)."""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st

from energyhubd.kernel.nlevents import NftChange, nft_changes

NEWTABLE, NEWRULE, NEWGEN = 0, 6, 15


def attr(kind: int, payload: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)


def message(kind: int, port: int, family: int, *attrs: bytes) -> bytes:
    body = struct.pack("=BBH", family, 0, 0) + b"".join(attrs)
    header = struct.pack("=IHHII", 16 + len(body), (10 << 8) | kind, 0, 1, port)
    return header + body


def test_each_object_message_names_its_table_and_committer() -> None:
    datagram = (
        message(NEWTABLE, 4242, 1, attr(1, b"energyhub\0"))
        + message(NEWRULE, 4242, 1, attr(1, b"fw4\0"), attr(2, b"input\0"))
        + message(NEWGEN, 4242, 0, attr(1, struct.pack(">I", 7)))
    )
    assert nft_changes(datagram) == [
        NftChange(4242, 1, "energyhub"),
        NftChange(4242, 1, "fw4"),
    ]


def test_a_message_without_a_table_name_or_cut_short_reads_as_unknown() -> None:
    no_name = message(NEWRULE, 7, 1, attr(2, b"input\0"))
    assert nft_changes(no_name) == [NftChange(7, 1, None)]
    cut = message(NEWTABLE, 9, 1, attr(1, b"energyhub\0"))[:-6]
    assert nft_changes(cut) == [NftChange(9, 0, None)]


@given(st.binary(max_size=256))
def test_any_bytes_are_read_without_an_exception(data: bytes) -> None:
    for change in nft_changes(data):
        assert change.table is None or isinstance(change.table, str)
