"""State files at start: every bad one is moved aside, the controller starts from what is left;
a push that cannot be stored is rejected with the reason; reports survive a restart."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from energyhubd.portal import confirm as cm
from energyhubd.portal import statecheck
from energyhubd.portal.store import ConfigStore
from tests.test_portal_controller import Harness

WALL = 1_700_000_000.0

GOOD = {
    "last-good.json": b'{"version": 2, "device_id": "eh-test1"}',
    "candidate.json": b'{"version": 3, "device_id": "eh-test1"}',
    "pending.json": b'{"version": 3, "deadline": 1.0}',
    "failed.json": b'{"version": 4, "digest": "ab"}',
    "reported.json": b'{"reported": {"state": "applied"}, "failed": null}',
}

BAD = {
    "empty": b"",
    "blank": b"  \n",
    "half-written": b'{"version": 3, "lan": {"dev',
    "json list": b"[1, 2, 3]",
    "json string": b'"version"',
    "garbage": bytes(range(256)),
    "no version": b'{"lan": {}}',
    "bool version": b'{"version": true, "deadline": true, "digest": 1}',
}


@pytest.mark.parametrize("name", sorted(GOOD))
def test_good_files_pass(name: str) -> None:
    assert statecheck.problem(name, GOOD[name]) is None


@pytest.mark.parametrize("name", sorted(GOOD))
@pytest.mark.parametrize("how", sorted(BAD))
def test_every_bad_form_of_every_file_is_named(name: str, how: str) -> None:
    reason = statecheck.problem(name, BAD[how])
    assert reason, (name, how)


@given(st.binary(max_size=200))
@settings(max_examples=200)
def test_property_checker_never_raises(raw: bytes) -> None:
    for name in statecheck.CHECKS:
        statecheck.problem(name, raw)


@pytest.mark.parametrize("how", sorted(BAD))
def test_quarantine_moves_bad_file_aside_and_keeps_good_ones(tmp_path: Path, how: str) -> None:
    (tmp_path / "last-good.json").write_bytes(BAD[how])
    (tmp_path / "failed.json").write_bytes(GOOD["failed.json"])
    found = ConfigStore(str(tmp_path)).check(WALL)
    assert [q.file for q in found] == ["last-good.json"]
    moved = found[0].moved_to
    assert moved is not None and moved.startswith("last-good.json.corrupt-2023")
    assert (tmp_path / moved).read_bytes() == BAD[how]  # kept for support
    assert not (tmp_path / "last-good.json").exists()
    assert (tmp_path / "failed.json").read_bytes() == GOOD["failed.json"]


def test_second_bad_start_in_the_same_second_keeps_both_copies(tmp_path: Path) -> None:
    for content in (b"", b"[]"):
        (tmp_path / "last-good.json").write_bytes(content)
        ConfigStore(str(tmp_path)).check(WALL)
    kept = sorted(p.read_bytes() for p in tmp_path.iterdir())
    assert kept == [b"", b"[]"]


def _harness_after(tmp_path: Path, files: dict[str, bytes]) -> Harness:
    tmp_path.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    ConfigStore(str(tmp_path)).check(WALL)
    return Harness(tmp_path)


@pytest.mark.parametrize("how", sorted(BAD))
@pytest.mark.parametrize("name", sorted(GOOD))
def test_controller_always_starts_after_any_bad_file(tmp_path: Path, name: str, how: str) -> None:
    files = dict(GOOD)
    files[name] = BAD[how]
    h = _harness_after(tmp_path, files)
    h.ctl.startup(marker_lost=name == "pending.json")
    # A candidate (valid or not) next to a marker always means: roll back to what is left.
    last_good = None if name == "last-good.json" else json.loads(GOOD["last-good.json"])
    assert h.restored == [last_good]
    assert h.reported[-1]["state"] == cm.ROLLED_BACK
    assert h.store.pending() is None
    # ... and the next push is judged and applied normally.
    assert h.push(version=5) == "apply"


def test_garbage_candidate_next_to_pending_marker_rolls_back(tmp_path: Path) -> None:
    h = _harness_after(
        tmp_path,
        {
            "last-good.json": GOOD["last-good.json"],
            "candidate.json": b"\x00\x00\x00",
            "pending.json": GOOD["pending.json"],
        },
    )
    assert h.ctl.startup()
    assert h.restored == [json.loads(GOOD["last-good.json"])]
    assert h.reported[-1]["desired_version"] == 3


def test_lost_marker_still_rolls_back_the_candidate(tmp_path: Path) -> None:
    h = _harness_after(
        tmp_path,
        {"candidate.json": GOOD["candidate.json"], "pending.json": b""},
    )
    assert h.ctl.startup(marker_lost=True)
    assert h.restored == [None]  # no confirmed push: the local configuration
    assert h.reported[-1]["desired_version"] == 3
    assert h.push(version=3, device_id="eh-test1") == "ignore"  # the candidate failed


def test_failed_push_is_not_applied_again_when_failed_json_is_lost(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    assert h.push(version=2, bad=1) == "reject"
    (tmp_path / "failed.json").write_bytes(b"")
    h2 = _harness_after(tmp_path, {})
    h2.ctl.startup()
    assert h2.push(version=2, bad=1) == "ignore"
    assert h2.applied == []


def test_reported_keeps_desired_version_and_updated_after_restart(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.push(version=2, confirm=False)
    before = h.reported[-1]
    assert before["desired_version"] == 2 and before["updated"] is not None
    h2 = Harness(tmp_path)
    h2.ctl.startup()
    assert h2.reported[-1] == before


class FullDisk:
    """Make the store's writes fail like a full flash, until ``room()``."""

    def __init__(self, store: ConfigStore) -> None:
        self.full = True
        self._write = store.write_atomic

        def write(name: str, data: bytes) -> bool:
            if self.full:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return self._write(name, data)

        store.write_atomic = write  # type: ignore[method-assign]


def test_push_that_cannot_be_stored_is_rejected_with_reason_then_retried(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    disk = FullDisk(h.store)
    assert h.push(version=2) == "apply"  # the decision; storing it then fails
    assert h.applied == []  # nothing applied: the running configuration stays
    report: dict[str, Any] = h.reported[-1]
    assert report["state"] == cm.REJECTED and report["desired_version"] == 2
    assert "No space left on device" in report["errors"][0]["reason"]
    assert h.store.pending() is None and h.store.failed() is None
    disk.full = False
    assert h.push(version=2) == "apply"  # the same version, once there is room
    assert h.applied and h.reported[-1]["state"] == cm.PENDING_CONFIRM


def test_confirm_that_cannot_be_stored_rolls_back_and_says_why(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    assert h.push(version=2) == "apply"
    disk = FullDisk(h.store)
    h.ctl.on_round_trip(h.pings[-1])
    report = h.reported[-1]
    assert report["state"] == cm.ROLLED_BACK
    assert "cannot store the confirmed configuration" in report["errors"][0]["reason"]
    assert h.restored == [None]
    disk.full = False
    assert h.push(version=2) == "apply"  # not recorded as the push's failure


def test_state_directory_that_cannot_be_made_is_no_crash(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    store = ConfigStore(str(blocker / "portal"))
    assert store.check(WALL) == [] and store.load_last_good() is None
    with pytest.raises(OSError):
        store.save_candidate({"version": 1}, 1.0)
