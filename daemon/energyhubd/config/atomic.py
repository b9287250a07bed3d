"""Atomic, flash-friendly file writes.

A file is written to a temporary sibling, fsynced and renamed over the target, so a crash
leaves either the old or the new content, never half. Unchanged content is not rewritten:
routers keep their state on flash, which wears with every write.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def write_if_changed(path: str | os.PathLike[str], text: str | bytes, mode: int = 0o644) -> bool:
    """Atomically replace ``path`` with ``text`` unless it already holds it. True if written."""
    target = Path(path)
    data = text.encode() if isinstance(text, str) else text
    try:
        if target.read_bytes() == data:
            if (target.stat().st_mode & 0o777) != mode:
                target.chmod(mode)
            return False
    except OSError:
        pass
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return True
