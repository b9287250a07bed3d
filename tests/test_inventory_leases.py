"""The lease parser survives anything in the file and never loses a valid lease."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from energyhubd.inventory.leases import (
    MAX_BYTES,
    MAX_LINES,
    Lease,
    parse_leases,
    read_lease_file,
)
from energyhubd.inventory.sanitize import safe_text

HOST_CHARS = st.characters(
    min_codepoint=33, max_codepoint=0x2FFF, blacklist_categories=("Cs", "Zs", "Zl", "Zp", "Cc")
)


@st.composite
def valid_lines(draw: st.DrawFn) -> tuple[bytes, Lease]:
    expiry = draw(st.one_of(st.just(0), st.integers(1, 2**40)))
    mac_octets = draw(st.lists(st.integers(0, 255), min_size=6, max_size=6))
    upper = draw(st.booleans())
    mac = ":".join(f"{o:02X}" if upper else f"{o:02x}" for o in mac_octets)
    ip_octets = draw(st.lists(st.integers(0, 255), min_size=4, max_size=4))
    ip = ".".join(str(o) for o in ip_octets)
    host = draw(st.one_of(st.just("*"), st.text(HOST_CHARS, min_size=1, max_size=40)))
    client_id = draw(st.one_of(st.just("*"), st.just("01:" + mac.lower())))
    line = f"{expiry} {mac} {ip} {host} {client_id}".encode()
    lease = Lease(expiry, mac.lower(), ip, None if host == "*" else safe_text(host), None)
    return line, lease


# Junk never contains a newline (the joiner adds those) and is never itself a valid lease.
junk_lines = st.one_of(
    st.binary(max_size=120).map(lambda b: b.replace(b"\n", b" ")),
    st.just(b"duid 00:01:00:01:2c:3d:4e:5f:52:54:00:12:34:56"),
    st.just(b"1700000000 305419896 fd00::10 unit6 00:01:00:01"),
    st.just(b"1700000000 02:00:5e:10:00:01 192.168.254.256 x *"),
    st.just(b"1700000000 02:00:5e:10:00:01 192.168.254.7 only-four"),
    st.just(b"-1 02:00:5e:10:00:01 192.168.254.7 host *"),
    st.just(b"\x00\x00\x00"),
    st.just(b"\xff\xfe\xfd 02:00:5e:10:00:01"),
)


def key(lease: Lease) -> tuple[int, str, str, str | None]:
    return (lease.expiry, lease.mac, lease.ip, lease.hostname)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4096))
def test_random_bytes_never_raise(data: bytes) -> None:
    snap = parse_leases(data)
    for lease in snap.leases:
        assert lease.mac.count(":") == 5
        assert "\n" not in (lease.hostname or "")


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(valid_lines(), junk_lines), max_size=60), st.booleans())
def test_valid_lines_survive_any_junk(items: list[object], final_newline: bool) -> None:
    lines = [i[0] if isinstance(i, tuple) else i for i in items]
    expected = [i[1] for i in items if isinstance(i, tuple)]
    data = b"\n".join(lines) + (b"\n" if final_newline else b"")  # type: ignore[arg-type]
    snap = parse_leases(data)
    got = [key(lease) for lease in snap.leases]
    # A junk line may happen to be a valid lease (random bytes rarely do): tolerate extras,
    # but every generated lease must come back, in order.
    it = iter(got)
    assert all(any(g == key(e) for g in it) for e in expected)
    by_key = {key(lease): lease for lease in snap.leases}
    for e in expected:
        assert by_key[key(e)].hostname is not None or e.hostname is None


@settings(max_examples=200)
@given(st.lists(valid_lines(), min_size=1, max_size=20), st.data())
def test_truncation_at_any_offset(items: list[tuple[bytes, Lease]], data: st.DataObject) -> None:
    whole = b"".join(line + b"\n" for line, _ in items)
    cut = data.draw(st.integers(0, len(whole)))
    snap = parse_leases(whole[:cut])
    complete = whole[:cut].count(b"\n")
    got = [key(lease) for lease in snap.leases]
    # Every line that still ends in a newline is returned.
    assert got[:complete] == [key(lease) for _, lease in items[:complete]]
    # At most the cut line in addition, and only if it is still a five-field lease.
    assert len(got) <= complete + 1
    if len(got) == complete + 1:
        assert snap.unterminated_tail
        tail_fields = whole[:cut].rsplit(b"\n", 1)[-1].split()
        assert len(tail_fields) == 5


def test_complete_unterminated_last_line_is_kept() -> None:
    data = (
        b"0 02:00:5e:10:00:01 192.168.254.200 display *\n"
        b"1700000000 02:00:5e:10:00:11 192.168.254.201 energyhub-1 01:02"
    )
    snap = parse_leases(data)
    assert [lease.ip for lease in snap.leases] == ["192.168.254.200", "192.168.254.201"]
    assert snap.unterminated_tail
    cut = data[: data.rindex(b" ")]  # the client id field is missing entirely
    snap = parse_leases(cut)
    assert [lease.ip for lease in snap.leases] == ["192.168.254.200"]
    assert snap.rejected_count == 1 and "newline" in snap.rejected[0].reason


def test_fields_and_reasons() -> None:
    data = (
        b"1700000000 02:00:5E:10:00:01 192.168.254.200 display 01:02:00:5e:10:00:01\n"
        b"0 02:00:5e:10:00:02 192.168.254.201 * *\r\n"
        b"\n"
        b"duid 00:01:00:01:2c:3d:4e:5f:52:54:00:12:34:56\n"
        b"1700000000 305419896 fd00::10 unit6 00:01\n"
        b"1700000000 02:00:5e:10:00:03 192.168.254.007 lead *\n"
        b"1700000000 zz:00:5e:10:00:03 192.168.254.9 badmac *\n"
    )
    snap = parse_leases(data)
    first, second = snap.leases
    assert first == Lease(
        1700000000, "02:00:5e:10:00:01", "192.168.254.200", "display", "01:02:00:5e:10:00:01"
    )
    assert second.expiry == 0 and second.hostname is None and second.client_id is None
    assert snap.skipped == 2
    assert snap.rejected_count == 2
    assert [r.lineno for r in snap.rejected] == [6, 7]
    assert "IPv4" in snap.rejected[0].reason and "MAC" in snap.rejected[1].reason


def test_huge_file_is_capped_without_losing_the_start() -> None:
    line = b"1700000000 02:00:5e:10:00:01 192.168.254.200 display *\n"
    data = line * (MAX_LINES + 500)
    snap = parse_leases(data)
    assert snap.capped and len(snap.leases) == MAX_LINES
    huge = line * 3 + b"x" * (MAX_BYTES * 3)
    snap = parse_leases(huge)
    assert snap.capped and len(snap.leases) == 3 and snap.rejected_count == 0


def test_hostile_hostname_is_sanitised() -> None:
    data = b"0 02:00:5e:10:00:01 192.168.254.210 $(reboot);`id`\xff\x1b[31m *\n"
    (lease,) = parse_leases(data).leases
    assert lease.hostname is not None
    for bad in ("$", "(", ";", "`", "\x1b", "\udcff"):
        assert bad not in lease.hostname
    assert "\\xff" in lease.hostname and "reboot" in lease.hostname


def test_read_missing_file(tmp_path: Path) -> None:
    snap = read_lease_file(str(tmp_path / "nope"))
    assert snap.missing and snap.leases == () and snap.error is None


def test_read_fifo_and_directory_do_not_hang(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert read_lease_file(str(fifo)).error is not None
    assert read_lease_file(str(tmp_path)).error is not None


def test_read_while_file_is_replaced(tmp_path: Path) -> None:
    """A writer replacing the file by rename never makes a reader see a mix or lose leases."""
    path = tmp_path / "dhcp.leases"
    contents = [
        b"".join(
            b"0 02:00:5e:10:00:%02x 192.168.254.%d unit%d *\n" % (i, 200 + i, i) for i in range(n)
        )
        for n in (5, 40)
    ]
    path.write_bytes(contents[0])
    stop = threading.Event()

    def writer() -> None:
        n = 0
        while not stop.is_set():
            tmp = tmp_path / "dhcp.leases.tmp"
            tmp.write_bytes(contents[n % 2])
            os.replace(tmp, path)
            n += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for _ in range(300):
            snap = read_lease_file(str(path))
            assert snap.error is None and not snap.missing
            assert len(snap.leases) in (5, 40)
            assert snap.rejected_count == 0
    finally:
        stop.set()
        thread.join()


def test_read_while_file_is_rewritten_in_place(tmp_path: Path) -> None:
    """dnsmasq truncates and rewrites in place; a torn read is retried or flagged unstable."""
    path = tmp_path / "dhcp.leases"
    body = b"".join(
        b"0 02:00:5e:10:00:%02x 192.168.254.%d unit%d *\n" % (i, 200 + i, i) for i in range(40)
    )
    path.write_bytes(body)
    stop = threading.Event()

    def writer() -> None:
        with open(path, "r+b", buffering=0) as f:
            while not stop.is_set():
                f.seek(0)
                f.truncate()
                for start in range(0, len(body), 512):
                    f.write(body[start : start + 512])

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for _ in range(300):
            snap = read_lease_file(str(path))
            assert snap.error is None
            # Every lease we return is one the writer wrote; never a corrupt one.
            for lease in snap.leases:
                assert lease.ip.startswith("192.168.254.2") and lease.hostname
                assert lease.hostname == f"unit{int(lease.mac[-2:], 16)}"
            if snap.stable:
                assert len(snap.leases) in range(0, 41)
    finally:
        stop.set()
        thread.join()


def test_parse_cache_gives_the_same_snapshot_and_stays_bounded() -> None:
    cache: dict[bytes, Lease] = {}
    lines = [f"{1700000000 + n} 02:ee:00:00:00:{n:02x} 10.1.0.{n} host{n} *\n" for n in range(50)]
    for round_ in range(200):
        lines[round_ % 50] = (
            f"{1800000000 + round_} 02:ee:00:00:00:{round_ % 50:02x} 10.1.0.9 x *\n"
        )
        data = ("".join(lines) + "bad line\n").encode()
        cached = parse_leases(data, cache)
        assert cached == parse_leases(data)
        assert len(cache) <= 2 * 50 + 64
    unchanged = parse_leases(data, cache)
    assert all(a is b for a, b in zip(unchanged.leases, cached.leases, strict=True))


def test_vendor_classes_are_reread_when_the_hook_replaces_a_file(tmp_path: Path) -> None:
    from energyhubd.inventory.monitor import VendorClasses

    mac = "02:ee:00:00:00:01"
    vendor = VendorClasses(tmp_path / "vendor-class")
    assert vendor.read() == {}
    (tmp_path / "vendor-class").mkdir()
    for n, text in enumerate(["udhcp-1.35", "ferroamp-eh", "other"]):
        tmp = tmp_path / "vendor-class" / f".{mac}.tmp"
        tmp.write_text(text)
        os.replace(tmp, tmp_path / "vendor-class" / mac)  # as the hook does
        assert vendor.read() == {mac: text}, n
