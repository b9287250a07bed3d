"""A minimal SNTP client packet (RFC 4330) and the kernel's "clock synchronised" flag.

The diagnostics only need: did a server answer, its stratum, and our clock's offset. The
parser rejects anything that is not a plausible server reply with ``NtpFormatError``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import struct
from dataclasses import dataclass

NTP_EPOCH_OFFSET = 2208988800  # seconds from 1900-01-01 to 1970-01-01
MODE_CLIENT = 3
MODE_SERVER = 4
VERSION = 4
PACKET_LEN = 48


class NtpFormatError(ValueError):
    """The bytes are not an NTP server reply."""


@dataclass(frozen=True)
class NtpReply:
    leap: int
    version: int
    mode: int
    stratum: int
    origin: float  # our transmit time, echoed (unix seconds)
    receive: float  # server's receive time (unix seconds)
    transmit: float  # server's transmit time (unix seconds)

    @property
    def unsynchronised(self) -> bool:
        """Leap indicator 3 or stratum 0 (kiss-o'-death) means "do not use this server"."""
        return self.leap == 3 or self.stratum == 0


def to_ntp(unix: float) -> int:
    """Unix seconds -> 64-bit NTP timestamp."""
    value = unix + NTP_EPOCH_OFFSET
    seconds = int(value)
    fraction = int((value - seconds) * (1 << 32)) & 0xFFFFFFFF
    return ((seconds & 0xFFFFFFFF) << 32) | fraction


def from_ntp(value: int) -> float:
    return (value >> 32) - NTP_EPOCH_OFFSET + (value & 0xFFFFFFFF) / (1 << 32)


def build_request(transmit_unix: float) -> bytes:
    """A client request whose transmit timestamp the server echoes as "origin"."""
    first = (0 << 6) | (VERSION << 3) | MODE_CLIENT
    return struct.pack("!B", first) + b"\0" * 39 + struct.pack("!Q", to_ntp(transmit_unix))


def parse_reply(data: bytes) -> NtpReply:
    if len(data) < PACKET_LEN:
        raise NtpFormatError(f"{len(data)} bytes, an NTP packet has at least {PACKET_LEN}")
    first, stratum = data[0], data[1]
    leap, version, mode = first >> 6, (first >> 3) & 7, first & 7
    if mode != MODE_SERVER:
        raise NtpFormatError(f"mode {mode} is not a server reply")
    if not 1 <= version <= 4:
        raise NtpFormatError(f"unknown NTP version {version}")
    origin, receive, transmit = struct.unpack("!QQQ", data[24:48])
    if transmit == 0:
        raise NtpFormatError("server sent no transmit time")
    return NtpReply(
        leap, version, mode, stratum, from_ntp(origin), from_ntp(receive), from_ntp(transmit)
    )


def build_reply(request: bytes, now_unix: float, stratum: int = 2) -> bytes:
    """What a server would send (used by the codec round-trip test)."""
    if len(request) < PACKET_LEN:
        raise NtpFormatError("short request")
    first = (0 << 6) | (VERSION << 3) | MODE_SERVER
    head = struct.pack("!BBbb", first, stratum, 6, -20) + b"\0" * 12
    reference = struct.pack("!Q", to_ntp(now_unix))
    stamps = struct.pack("!QQ", to_ntp(now_unix), to_ntp(now_unix))
    return head + reference + request[40:48] + stamps


def offset_and_delay(reply: NtpReply, t1: float, t4: float) -> tuple[float, float]:
    """Clock offset (server minus us) and round-trip delay, in seconds (RFC 4330 s. 5)."""
    t2, t3 = reply.receive, reply.transmit
    return ((t2 - t1) + (t3 - t4)) / 2, (t4 - t1) - (t3 - t2)


class _Timex(ctypes.Structure):
    # struct timex from <sys/timex.h> (x86_64/aarch64/mips: long-sized fields, 11 ints pad).
    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time_sec", ctypes.c_long),
        ("time_usec", ctypes.c_long),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        ("_pad", ctypes.c_int * 11),
    ]


TIME_ERROR = 5


@functools.lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL:
    """Loaded once: ``find_library`` runs ``ldconfig -p`` (a child process) on every call."""
    return ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)


def kernel_clock_synchronised() -> bool | None:
    """What the kernel says (adjtimex, read-only): True/False, or None when unknown.

    An NTP daemon that disciplines the clock clears STA_UNSYNC; ``adjtimex`` then returns a
    state other than TIME_ERROR. modes=0 only reads, it never changes the clock.
    """
    try:
        libc = _libc()
        tx = _Timex()
        state = libc.adjtimex(ctypes.byref(tx))
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    return bool(state != TIME_ERROR)
