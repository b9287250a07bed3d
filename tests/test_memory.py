"""glibc allocator tuning: accepted on glibc, harmless everywhere (run in a child process,
since one_arena changes the allocator of the process that calls it)."""

from __future__ import annotations

import subprocess
import sys

CODE = """
import ctypes, threading
from energyhubd import memory
glibc = hasattr(ctypes.CDLL(None), "gnu_get_libc_version")
accepted = memory.one_arena()
threading.Thread(target=lambda: bytearray(1 << 20)).start()
memory.trim()
print(glibc, accepted)
"""


def test_one_arena_is_accepted_on_glibc_and_trim_is_safe_from_any_thread() -> None:
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    glibc, accepted = out.stdout.split()
    assert accepted == glibc  # glibc takes it; another libc has nothing to tune
