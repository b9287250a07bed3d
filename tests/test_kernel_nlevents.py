"""Reading nftables notifications: which table, which committer (pure; bytes built here)."""

from __future__ import annotations

import struct

import pytest
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


def test_the_table_owner_keeps_only_others_changes_to_its_own_table(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Our table touched by an unknown port: /proc is asked once more (libnftables may have
    opened or reopened its socket); a port it names is ours, any other is someone else's,
    and when /proc names nothing every change to our table is someone else's."""
    from energyhubd.kernel import table as table_module

    asked: list[int] = []

    def own_ports(protocol: int) -> set[int]:
        asked.append(protocol)
        return {4242}

    monkeypatch.setattr(table_module, "own_ports", own_ports)
    owner = table_module.Table()
    assert not owner.touched_by_others(NftChange(7, 1, "fw4"))  # another table: never asked
    assert not owner.touched_by_others(NftChange(7, 2, "energyhub"))  # ip, not inet
    assert asked == []
    assert not owner.touched_by_others(NftChange(4242, 1, "energyhub"))  # learned: ours
    assert not owner.touched_by_others(NftChange(4242, 1, None))  # known port, no re-read
    assert asked == [12]
    assert owner.touched_by_others(NftChange(99, 1, "energyhub"))
    assert owner.touched_by_others(NftChange(99, 1, None))  # unreadable: re-checked
    monkeypatch.setattr(table_module, "own_ports", lambda protocol: set())
    blind = table_module.Table()
    assert blind.touched_by_others(NftChange(4242, 1, "energyhub"))
