"""glibc's allocator, tuned for a small daemon that mostly sleeps (musl needs nothing).

Two glibc habits keep memory in the RSS that the daemon does not use:

- every thread that allocates gets its own malloc arena; the portal link's thread (TLS
  buffers, MQTT packets) kept about 0.5 MiB in one while the main heap had room to spare.
  The daemon's threads rarely allocate at the same moment, so one arena costs no waiting
  worth measuring (``one_arena``, before the first thread starts);
- freed pages inside the heap stay resident until ``malloc_trim``; start-up, a reload or a
  push, a diagnostics round and a parsed ``ip-ranges.json`` each leave such pages behind
  (``trim`` after them: 0.3 MiB after start-up on a lab site).

On musl (the router's libc) neither symbol is used: its allocator has no per-thread arenas
and returns freed pages itself. Not thread-safe in the sense that ``one_arena`` must run
before threads exist; ``trim`` may be called from any thread.
"""

from __future__ import annotations

import ctypes
from typing import Any

M_ARENA_MAX = -8  # from glibc's malloc.h

try:
    _LIBC: Any = ctypes.CDLL(None)
except OSError:  # pragma: no cover - a Python without a dynamic C library
    _LIBC = None


def _glibc(symbol: str) -> Any:
    if _LIBC is None or not hasattr(_LIBC, "gnu_get_libc_version"):
        return None
    return getattr(_LIBC, symbol, None)


def one_arena() -> bool:
    """Let every thread share the main arena; True when glibc accepted it."""
    mallopt = _glibc("mallopt")
    return bool(mallopt(M_ARENA_MAX, 1)) if mallopt is not None else False


def trim() -> None:
    """Hand freed heap pages back to the kernel (glibc keeps them otherwise)."""
    malloc_trim = _glibc("malloc_trim")
    if malloc_trim is not None:
        malloc_trim(0)
