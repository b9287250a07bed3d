"""Parse dnsmasq's lease file without trusting it.

Format (one lease per line, fields separated by spaces)::

    <expiry-epoch> <mac> <ipv4> <hostname|*> <client-id|*>

then possibly a ``duid <hex>`` line and IPv6 leases (``<expiry> <iaid> <ipv6> <host> <id>``),
which are skipped. Expiry ``0`` means an infinite lease.

The content is untrusted bytes: a client chose the host name, the file may hold invalid UTF-8
or NULs, be cut short, be huge, or be rewritten while we read it (dnsmasq keeps the file open
and rewrites it in place: truncate, then write). The parser never raises on content; it
returns the valid leases plus the rejected lines with reasons.

Rules:

* At most ``MAX_BYTES`` (1 MiB) are read and at most ``MAX_LINES`` (10000) lines are looked at;
  the snapshot says ``capped=True`` when there was more. 10000 lines is 200 times the LAN pool.
* A final line without a newline (the file was cut or is being written) is accepted only if
  it is a complete, valid five-field line. Only its last field, the client id, can then be
  short, and the inventory does not rely on the client id. ``unterminated_tail`` reports it.
  When the byte cap cut the file, the piece after the last newline is dropped as cut.
* Lines are split on ASCII whitespace; a trailing ``\\r`` is tolerated; blank lines are
  skipped silently.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import re
import stat
from dataclasses import dataclass

from .sanitize import optional_field, safe_text

MAX_BYTES = 1 << 20
MAX_LINES = 10_000
MAX_REJECTS_KEPT = 20
MAX_EXPIRY = 2**63 - 1
_MAC_RE = re.compile(rb"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$")
_DIGITS_RE = re.compile(rb"^[0-9]{1,19}$")
_IPV4_RE = re.compile(rb"^[0-9]{1,3}(\.[0-9]{1,3}){3}$")
READ_ATTEMPTS = 3


@dataclass(frozen=True)
class Lease:
    """One IPv4 lease. ``hostname``/``client_id`` are already sanitised display text."""

    expiry: int  # epoch seconds; 0 = never expires
    mac: str  # lower-case aa:bb:cc:dd:ee:ff
    ip: str
    hostname: str | None
    client_id: str | None

    def active(self, now: float) -> bool:
        return self.expiry == 0 or self.expiry > now

    def as_dict(self) -> dict[str, object]:
        return {
            "expiry": self.expiry,
            "mac": self.mac,
            "ip": self.ip,
            "hostname": self.hostname,
            "client_id": self.client_id,
        }


@dataclass(frozen=True)
class RejectedLine:
    lineno: int  # 1-based
    reason: str
    text: str  # sanitised, short: enough to find the line, never the raw bytes


@dataclass(frozen=True)
class LeaseSnapshot:
    """What one read of the lease file found.

    ``missing``: the file does not exist (= no leases). ``error``: it could not be read (the
    registry ignores such a snapshot instead of declaring every device gone). ``stable`` is
    False when the file kept changing during every read attempt.
    """

    leases: tuple[Lease, ...] = ()
    rejected: tuple[RejectedLine, ...] = ()
    rejected_count: int = 0
    skipped: int = 0  # duid and IPv6 lines
    capped: bool = False
    unterminated_tail: bool = False
    missing: bool = False
    error: str | None = None
    stable: bool = True

    def summary(self) -> dict[str, object]:
        return {
            "leases": len(self.leases),
            "rejected": self.rejected_count,
            "rejected_examples": [
                {"line": r.lineno, "reason": r.reason, "text": r.text} for r in self.rejected
            ],
            "skipped": self.skipped,
            "capped": self.capped,
            "unterminated_tail": self.unterminated_tail,
            "missing": self.missing,
            "error": self.error,
            "stable": self.stable,
        }


class _Skip(Exception):
    """A line that is fine but not an IPv4 lease (duid, IPv6)."""


class _Reject(Exception):
    """A line that is not a lease; the message is the reason."""


def _parse_ipv4(raw: bytes) -> str:
    if not _IPV4_RE.match(raw):
        raise _Reject("bad IPv4 address")
    try:
        return str(ipaddress.IPv4Address(raw.decode("ascii")))
    except ValueError as exc:  # octet > 255 or leading zeros
        raise _Reject("bad IPv4 address") from exc


def parse_line(line: bytes) -> Lease:
    """Parse one line (without its newline); raises ``_Reject``/``_Skip`` (module-private)."""
    if b"\0" in line:
        raise _Reject("contains NUL")
    fields = line.split()
    if fields and fields[0] == b"duid":
        raise _Skip()
    if len(fields) != 5:
        raise _Reject(f"expected 5 fields, found {len(fields)}")
    expiry_raw, mac_raw, ip_raw, host_raw, id_raw = fields
    if not _DIGITS_RE.match(expiry_raw):
        raise _Reject("expiry is not a number")
    expiry = int(expiry_raw)
    if expiry > MAX_EXPIRY:
        raise _Reject("expiry out of range")
    if b":" in ip_raw:
        try:
            ipaddress.IPv6Address(ip_raw.decode("ascii"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise _Reject("bad IP address") from exc
        raise _Skip()
    if not _MAC_RE.match(mac_raw):
        raise _Reject("not an Ethernet MAC address")
    ip = _parse_ipv4(ip_raw)
    return Lease(
        expiry=expiry,
        mac=mac_raw.decode("ascii").lower(),
        ip=ip,
        hostname=optional_field(host_raw),
        client_id=optional_field(id_raw, max_len=255),
    )


def parse_leases(data: bytes, cache: dict[bytes, Lease] | None = None) -> LeaseSnapshot:
    """Parse lease-file bytes (see the module doc for the rules); never raises on content.

    ``cache`` (line -> Lease, owned by the caller) lets a re-read parse only the lines that
    changed: a DHCP event rewrites the whole file but changes one line. Lines no longer in
    the file are dropped once the cache holds twice as many lines as the file has leases.
    """
    capped = len(data) > MAX_BYTES
    view = data[:MAX_BYTES] if capped else data
    lines = view.split(b"\n")
    tail = lines.pop()  # after the last newline: b"" when the file ends with one
    unterminated = False
    if tail:
        if capped:
            tail = b""  # cut by our own cap: certainly incomplete
        else:
            unterminated = True
            lines.append(tail)
    if len(lines) > MAX_LINES:
        capped = True
        del lines[MAX_LINES:]
        unterminated = False
    leases: list[Lease] = []
    rejected: list[RejectedLine] = []
    rejected_count = 0
    skipped = 0
    last = len(lines)
    known = cache if cache is not None else {}
    get, keep = known.get, leases.append
    for lineno, line in enumerate(lines, start=1):
        lease = get(line)
        if lease is not None:
            keep(lease)
            continue
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line.strip():
            continue
        try:
            lease = parse_line(line)
            keep(lease)
            known[lines[lineno - 1]] = lease
        except _Skip:
            skipped += 1
        except _Reject as exc:
            reason = str(exc)
            if unterminated and lineno == last:
                reason += " (last line has no newline: cut short?)"
            rejected_count += 1
            if len(rejected) < MAX_REJECTS_KEPT:
                rejected.append(RejectedLine(lineno, reason, safe_text(line, 80)))
    if cache is not None and len(cache) > 2 * len(leases) + 64:
        # Lines of leases long gone: start over from this file's lines (now and then only).
        current = set(lines)
        for line in [line for line in cache if line not in current]:
            del cache[line]
    return LeaseSnapshot(
        leases=tuple(leases),
        rejected=tuple(rejected),
        rejected_count=rejected_count,
        skipped=skipped,
        capped=capped,
        unterminated_tail=unterminated,
    )


def _identity(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _read_once(path: str) -> tuple[bytes, bool]:
    """Read up to MAX_BYTES+1 bytes; returns (data, unchanged-during-read)."""
    # O_NONBLOCK: a FIFO planted at the path must not hang the daemon's event loop.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    try:
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        chunks: list[bytes] = []
        remaining = MAX_BYTES + 1
        while remaining > 0:
            chunk = os.read(fd, min(remaining, 65536))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        after = os.fstat(fd)
    finally:
        os.close(fd)
    try:
        current = os.stat(path)
    except FileNotFoundError:
        current = None  # removed after we read it: what we read was complete at the time
    data = b"".join(chunks)
    unchanged = _identity(before) == _identity(after) and (
        current is None or (current.st_dev, current.st_ino) == (after.st_dev, after.st_ino)
    )
    if len(data) <= MAX_BYTES and len(data) != after.st_size:
        unchanged = False
    return data, unchanged


def read_lease_file(path: str, cache: dict[bytes, Lease] | None = None) -> LeaseSnapshot:
    """Read and parse ``path``. A missing file is an empty, ``missing`` snapshot.

    If the file changes while it is read (rewritten in place or replaced by a rename), the
    read is retried up to ``READ_ATTEMPTS`` times; if it never settles the last result is
    returned with ``stable=False`` (the registry ignores it). Every write produces another
    change notification (see ``FileWatch``), so the writer's last write is always read.
    dnsmasq truncates before it writes: let notifications settle ~100-200 ms before reading
    so the empty moment between the two is not mistaken for "no leases". ``cache``: see
    ``parse_leases``.
    """
    snapshot: LeaseSnapshot | None = None
    for _ in range(READ_ATTEMPTS):
        try:
            data, unchanged = _read_once(path)
        except FileNotFoundError:
            return LeaseSnapshot(missing=True)
        except OSError as exc:
            return LeaseSnapshot(error=f"cannot read lease file: {exc.strerror or exc}")
        snapshot = parse_leases(data, cache)
        if unchanged:
            return snapshot
    assert snapshot is not None
    return LeaseSnapshot(
        leases=snapshot.leases,
        rejected=snapshot.rejected,
        rejected_count=snapshot.rejected_count,
        skipped=snapshot.skipped,
        capped=snapshot.capped,
        unterminated_tail=snapshot.unterminated_tail,
        stable=False,
    )
