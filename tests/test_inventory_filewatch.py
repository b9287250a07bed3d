"""inotify notices a lease file being replaced by rename or rewritten in place."""

from __future__ import annotations

import os
import select
import time
from pathlib import Path

import pytest

from energyhubd.kernel.filewatch import FileWatch


def wait_changed(watch: FileWatch, timeout: float = 5.0) -> bool:
    """Block on the fd (event driven, as the daemon's selector would) and drain."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        ready, _, _ = select.select([watch.fileno()], [], [], left)
        if ready and watch.drain():
            return True


def quiet(watch: FileWatch) -> bool:
    ready, _, _ = select.select([watch.fileno()], [], [], 0.2)
    return not ready or not watch.drain()


@pytest.fixture
def lease_file(tmp_path: Path) -> Path:
    path = tmp_path / "dhcp.leases"
    path.write_bytes(b"")
    return path


def test_rename_replace_is_noticed(lease_file: Path) -> None:
    with FileWatch(str(lease_file)) as watch:
        assert quiet(watch)
        tmp = lease_file.with_name("dhcp.leases.new")
        tmp.write_bytes(b"0 02:00:5e:10:00:01 192.168.254.200 display *\n")
        os.replace(tmp, lease_file)
        assert wait_changed(watch)
        assert quiet(watch)


def test_in_place_rewrite_without_close_is_noticed(lease_file: Path) -> None:
    with FileWatch(str(lease_file)) as watch, open(lease_file, "r+b", buffering=0) as f:
        # Like dnsmasq: the file stays open; truncate and write, never close.
        f.truncate(0)
        f.write(b"0 02:00:5e:10:00:01 192.168.254.200 display *\n")
        assert wait_changed(watch)
        assert quiet(watch)


def test_other_files_in_the_directory_are_ignored(lease_file: Path) -> None:
    with FileWatch(str(lease_file)) as watch:
        (lease_file.parent / "unrelated").write_text("x")
        assert quiet(watch)


def test_created_after_the_watch_and_deleted(tmp_path: Path) -> None:
    path = tmp_path / "later.leases"
    with FileWatch(str(path)) as watch:
        path.write_bytes(b"x\n")
        assert wait_changed(watch)
        path.unlink()
        assert wait_changed(watch)


def test_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(OSError, match="inotify_add_watch"):
        FileWatch(str(tmp_path / "nodir" / "dhcp.leases"))
