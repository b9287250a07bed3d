"""Event-driven notice that a file changed, via inotify on its directory (ctypes, no polling).

The directory is watched, not the file, because the file may be replaced by a rename (a new
inode the old watch would never see) or may not exist yet. dnsmasq keeps its lease file open
and rewrites it in place (truncate + write, no close), so IN_MODIFY matters as much as
IN_CLOSE_WRITE and IN_MOVED_TO.

A writer produces several events per rewrite; the caller should let the file settle briefly
(e.g. read it 100-200 ms after the last notification) before reading, and must read it again
after every later notification.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct

IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

_FILE_EVENTS = IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE | IN_DELETE
_WATCH_MASK = _FILE_EVENTS | IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR
_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len

_libc = ctypes.CDLL(None, use_errno=True)
_libc.inotify_init1.argtypes = [ctypes.c_int]
_libc.inotify_init1.restype = ctypes.c_int
_libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
_libc.inotify_add_watch.restype = ctypes.c_int


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


class FileWatch:
    """Watch one file path. ``fileno()`` becomes readable on changes; ``drain()`` says if any.

    Raises OSError when the directory cannot be watched (it must exist).
    """

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        self.directory, name = os.path.split(self.path)
        self._name = os.fsencode(name)
        self._fd = _check(_libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC), "inotify_init1")
        try:
            self._wd = _check(
                _libc.inotify_add_watch(self._fd, os.fsencode(self.directory), _WATCH_MASK),
                f"inotify_add_watch {self.directory}",
            )
        except OSError:
            os.close(self._fd)
            raise
        self.directory_lost = False

    def fileno(self) -> int:
        return self._fd

    def drain(self) -> bool:
        """Read every pending event without blocking; True if the watched file may have changed.

        A queue overflow counts as a change (we cannot know). If the directory itself is
        deleted or moved, ``directory_lost`` becomes True and this reports a change once.
        """
        changed = False
        while True:
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                return changed
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                raise
            if not data:
                return changed
            offset = 0
            while offset + _HEADER.size <= len(data):
                _wd, mask, _cookie, length = _HEADER.unpack_from(data, offset)
                raw_name = data[offset + _HEADER.size : offset + _HEADER.size + length]
                offset += _HEADER.size + length
                name = raw_name.split(b"\0", 1)[0]
                if mask & IN_Q_OVERFLOW:
                    changed = True
                elif mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED):
                    self.directory_lost = True
                    changed = True
                elif name == self._name and mask & (_FILE_EVENTS | IN_ATTRIB):
                    changed = True

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> FileWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
