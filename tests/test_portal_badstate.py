"""The bad state files' one owner: each finding is told once (event, log, status line) and
stays told for as long as the owner lives, whatever portal runners come and go."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from energyhubd.inventory.events import EventStream
from energyhubd.portal.badstate import BadStateFiles
from energyhubd.portal.statecheck import CHECKS, Quarantined
from energyhubd.portal.store import ConfigStore

WALL = 1_700_000_000.0
MOVED = Quarantined("last-good.json", "empty file", "last-good.json.corrupt-20231114T221320Z")
STUCK = Quarantined("pending.json", "empty file", None)  # read-only flash: not even renamed


def owner() -> tuple[BadStateFiles, EventStream]:
    events = EventStream()
    return BadStateFiles(events, wall=lambda: WALL), events


def test_each_finding_is_one_event_and_one_status_line() -> None:
    bad, events = owner()
    bad.record("/state/portal", [MOVED, STUCK])
    line = {**MOVED.as_dict(), "directory": "/state/portal"}
    assert bad.status()[0] == line
    assert [e["data"]["file"] for e in events.history("state_file_corrupt")] == [
        "last-good.json",
        "pending.json",
    ]
    assert events.history()[0] == {
        "seq": 1,
        "kind": "state_file_corrupt",
        "time": WALL,
        "severity": "error",
        "data": line,
    }


def test_a_file_that_could_not_be_moved_is_not_told_again_by_the_next_check() -> None:
    """Every portal restart checks the directory again; a file it could not move is found
    again, and that is the same finding."""
    bad, events = owner()
    bad.record("/state/portal", [MOVED, STUCK])
    bad.record("/state/portal", [STUCK])
    bad.record("/state/portal", [])
    assert [line["file"] for line in bad.status()] == ["last-good.json", "pending.json"]
    assert len(events.history("state_file_corrupt")) == 2


def test_findings_in_another_directory_are_new() -> None:
    """A reload that moves ``state_dir`` checks a directory no runner checked before."""
    bad, events = owner()
    bad.record("/a/portal", [STUCK])
    bad.record("/b/portal", [STUCK])
    assert [line["directory"] for line in bad.status()] == ["/a/portal", "/b/portal"]
    assert len(events.history("state_file_corrupt")) == 2


def test_status_is_a_copy_the_snapshot_may_keep() -> None:
    bad, _ = owner()
    bad.record("/state/portal", [MOVED])
    first = bad.status()
    first[0]["file"] = "changed"
    first.clear()
    assert bad.status()[0]["file"] == "last-good.json"


def test_what_a_real_check_moved_is_kept_across_a_second_store(tmp_path: Path) -> None:
    """Two stores over one directory, as two portal runners in a row: the second check finds
    nothing (the file is moved), the first one's line stays."""
    directory = tmp_path / "portal"
    directory.mkdir()
    (directory / "last-good.json").write_bytes(b"")
    bad, events = owner()
    first = ConfigStore(str(directory))
    bad.record(first.state_dir, first.check(WALL))
    second = ConfigStore(str(directory))
    bad.record(second.state_dir, second.check(WALL + 60))
    [line] = bad.status()
    assert line["file"] == "last-good.json" and line["directory"] == str(directory)
    assert (directory / line["moved_to"]).read_bytes() == b""
    assert len(events.history("state_file_corrupt")) == 1


findings = st.lists(
    st.builds(
        Quarantined,
        st.sampled_from(sorted(CHECKS)),
        st.sampled_from(["empty file", "not valid JSON"]),
        st.one_of(st.none(), st.sampled_from(["a.corrupt-1", "a.corrupt-2", "b.corrupt-1"])),
    ),
    max_size=6,
)


@given(st.lists(findings, max_size=4), st.sampled_from(["/a", "/b"]))
@settings(max_examples=200)
def test_property_one_event_per_status_line_however_often_checked(
    rounds: list[list[Quarantined]], directory: str
) -> None:
    bad, events = owner()
    for found in rounds:
        bad.record(directory, found)
    lines = bad.status()
    assert len(lines) == len(events.history("state_file_corrupt"))
    keys = [(line["file"], line["moved_to"]) for line in lines]
    assert len(keys) == len(set(keys))
    every = {(q.file, q.moved_to) for found in rounds for q in found}
    assert set(keys) == every
