"""The status snapshot as a pure function of the parts' facts (no daemon, no I/O)."""

from __future__ import annotations

from typing import Any

import pytest

from energyhubd.config.load import parse_document
from energyhubd.control.render import render_status
from energyhubd.control.snapshot import Parts, build_snapshot

NOW = 1_795_613_000.0
DIRECTORY = "/etc/energyhub/state/portal"
BAD = [
    {
        "file": "last-good.json",
        "reason": "empty file",
        "moved_to": "last-good.json.corrupt-20261126T105710Z",
        "directory": DIRECTORY,
    },
    {"file": "failed.json", "reason": "a JSON list, not an object", "moved_to": None,
     "directory": DIRECTORY},
]  # fmt: skip
LINK = {
    "enabled": True,
    "broker": "data2.ferroamp.se:8883",
    "connected": False,
    "connected_since": None,
    "last_reason": "starting",
}


def parts(
    portal: dict[str, Any] | None,
    state_files: list[dict[str, Any]],
    doc: dict[str, Any] | None = None,
) -> Parts:
    return Parts(
        version="0.1.0",
        pid=1234,
        started=NOW - 60,
        source="/etc/config/energyhub",
        config=parse_document({"platform": "linux", **(doc or {})}),
        config_error=None,
        policy_state="applied",
        policy_warnings=[],
        table={"digest": "8df102125ee9ebc1"},
        portal=portal,
        state_files=state_files,
        wan={},
        dhcp_server={},
        inventory=None,
        devices=None,
        outbound={},
        events=[],
        targets={},
    )


@pytest.mark.parametrize(
    ("portal", "doc"),
    [
        (LINK, {}),  # the link that runs now (maybe not the one whose check found them)
        (None, {"portal": {"enabled": False}}),  # a reload switched the portal off
    ],
    ids=["link running", "link stopped"],
)
def test_bad_state_files_are_shown_whatever_the_link_does(
    portal: dict[str, Any] | None, doc: dict[str, Any]
) -> None:
    status = build_snapshot(parts(portal, BAD, doc), NOW)
    assert status["portal"]["state_files"] == BAD
    assert status["portal"]["enabled"] is (portal is not None)
    text = render_status(status)
    assert (
        f"state     {DIRECTORY}/last-good.json was bad at start (empty file); moved to "
        "last-good.json.corrupt-20261126T105710Z; started from the local configuration"
    ) in text
    assert (
        f"state     {DIRECTORY}/failed.json was bad at start (a JSON list, not an object); "
        "ignored; started without it"
    ) in text


def test_the_link_facts_cannot_hide_or_forge_the_lines() -> None:
    """The lines come from their owner only, not from whatever the runner reports."""
    stale = {**LINK, "state_files": [{"file": "stale"}]}
    assert build_snapshot(parts(stale, BAD), NOW)["portal"]["state_files"] == BAD
    assert build_snapshot(parts(stale, []), NOW)["portal"]["state_files"] == []


def test_no_bad_file_no_line() -> None:
    status = build_snapshot(parts(LINK, []), NOW)
    assert status["portal"]["state_files"] == []
    assert "was bad at start" not in render_status(status)


def test_the_snapshot_does_not_share_the_owners_lists() -> None:
    lines = [dict(line) for line in BAD]
    status = build_snapshot(parts(LINK, lines), NOW)
    lines[0]["file"] = "changed"
    lines.append({"file": "late"})
    assert status["portal"]["state_files"] == BAD
