"""The event stream: bounded history, ordered delivery, one safe log line per event."""

from __future__ import annotations

import logging

import pytest

from energyhubd.inventory.events import Event, EventStream


def test_history_is_bounded_and_numbered() -> None:
    stream = EventStream(history=5)
    for i in range(12):
        stream.publish(Event("device_joined", float(i), "info", {"i": i}))
    history = stream.history()
    assert [e["seq"] for e in history] == [8, 9, 10, 11, 12]
    assert stream.history(limit=2)[0]["data"] == {"i": 10}
    assert stream.history(kind="other") == []


def test_subscribers_get_events_in_order_and_a_broken_one_does_not_stop_others() -> None:
    stream = EventStream()
    seen: list[int] = []

    def broken(event: Event) -> None:
        raise RuntimeError("boom")

    stream.subscribe(broken)
    unsubscribe = stream.subscribe(lambda e: seen.append(e.seq))
    stream.publish(Event("a", 1.0))
    stream.publish(Event("b", 2.0, "warning"))
    unsubscribe()
    stream.publish(Event("c", 3.0))
    assert seen == [1, 2]


def test_log_line_escapes_untrusted_strings(caplog: pytest.LogCaptureFixture) -> None:
    stream = EventStream()
    with caplog.at_level(logging.INFO, logger="energyhubd.events"):
        stream.publish(
            Event("unknown_device", 1.0, "warning", {"hostname": "x\nFAKE: root login\x1b[0m"})
        )
    (record,) = caplog.records
    line = record.getMessage()
    assert "\n" not in line and "\x1b" not in line
    assert "unknown_device" in line and record.levelno == logging.WARNING


def test_bad_severity_is_refused() -> None:
    with pytest.raises(ValueError):
        Event("x", 0.0, "fatal")
