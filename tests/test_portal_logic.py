"""Pure parts of the portal link: settings, outbox, backoff, push decisions, confirm, store."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from energyhubd.backoff import Backoff
from energyhubd.config.errors import ConfigError, FieldError
from energyhubd.config.sections.portal import PortalSettings, parse_portal_section
from energyhubd.portal import confirm as cm
from energyhubd.portal.outbox import Outbox, OutMessage
from energyhubd.portal.push import (
    APPLY,
    EMPTY,
    IGNORE,
    NOOP,
    REJECT,
    Seen,
    decide,
    digest_of,
    nesting_depth,
)
from energyhubd.portal.store import ConfigStore

pytestmark = pytest.mark.feed

HAVE_LOADER = importlib.util.find_spec("energyhubd.config.load") is not None


# ---- settings ---------------------------------------------------------------------------


def test_settings_defaults_are_production_tls() -> None:
    s, errors = parse_portal_section(None)
    assert errors == []
    assert (s.host, s.port, s.tls, s.server_name, s.mqtt_version) == (
        "data2.ferroamp.se",
        8883,
        True,
        "data2.ferroamp.se",
        "5",
    )
    assert s.ca_file.startswith("/etc/energyhubd/portal/")


def test_settings_unknown_and_bad_values_named_with_full_path() -> None:
    _, errors = parse_portal_section(
        {"colour": 1, "port": 0, "keepalive": True, "ca_file": "rel.pem", "mqtt_version": "4"},
        "portal",
    )
    paths = {e.path: e.reason for e in errors}
    assert paths["portal.colour"] == "unknown key"
    assert paths["portal.port"] == "0 is out of range 1..65535"
    assert "integer" in paths["portal.keepalive"]
    assert "absolute" in paths["portal.ca_file"]
    assert "3.1.1" in paths["portal.mqtt_version"]


def test_plain_mqtt_needs_explicit_allow_plain_and_defaults_to_1883() -> None:
    _, errors = parse_portal_section({"tls": False})
    assert [e.path for e in errors] == ["portal.tls"]
    s, errors = parse_portal_section({"tls": False, "allow_plain": True})
    assert errors == [] and s.port == 1883 and not s.tls


def test_server_name_defaults_to_host_and_mqtt_311_selectable() -> None:
    s, errors = parse_portal_section({"host": "broker.lab.test", "mqtt_version": "3.1.1"})
    assert errors == [] and s.server_name == "broker.lab.test" and s.mqtt_version == "3.1.1"


def test_settings_not_an_object() -> None:
    s, errors = parse_portal_section([1], "portal")
    assert (
        errors == [FieldError("portal", "must be an object, not a list")] and s == PortalSettings()
    )


def test_backoff_initial_above_max_refused() -> None:
    _, errors = parse_portal_section({"backoff_initial": 30, "backoff_max": 5})
    assert [e.path for e in errors] == ["portal.backoff_initial"]


# ---- outbox -------------------------------------------------------------------------------


def _msg(i: int) -> OutMessage:
    return OutMessage("t", str(i).encode())


def test_outbox_drops_oldest_and_counts() -> None:
    box = Outbox(3)
    for i in range(5):
        box.put(_msg(i))
    assert [box.pop() for _ in range(3)] == [_msg(2), _msg(3), _msg(4)]
    assert box.take_dropped() == 2 and box.take_dropped() == 0


def test_outbox_requeue_goes_to_front_in_order_and_respects_bound() -> None:
    box = Outbox(3)
    box.put(_msg(3))
    box.requeue([_msg(1), _msg(2)])
    assert [box.pop() for _ in range(3)] == [_msg(1), _msg(2), _msg(3)]
    box.put(_msg(9))
    box.requeue([_msg(5), _msg(6), _msg(7)])
    assert len(box) == 3 and box.dropped == 1 and box.pop() == _msg(6)


# ---- backoff ------------------------------------------------------------------------------


def test_backoff_is_capped() -> None:
    b = Backoff(1.0, 60.0, rand=lambda: 1.0, jitter="full")
    delays = [b.next_delay() for _ in range(100)]
    assert delays[:7] == [1, 2, 4, 8, 16, 32, 60]
    assert max(delays) == 60.0


def test_backoff_full_jitter_from_floor_to_base() -> None:
    values = iter([0.0, 0.5, 0.999])
    b = Backoff(4.0, 60.0, rand=lambda: next(values), jitter="full")
    assert b.next_delay() == 0.5  # base 4, random 0 -> the floor only
    assert b.next_delay() == 4.25  # base 8, random .5 -> 0.5 + 3.75
    assert 15.9 < b.next_delay() < 16.0  # base 16


@given(st.floats(0.0, 1.0, exclude_max=True), st.integers(0, 80), st.floats(0.1, 300))
def test_property_backoff_delay_within_floor_and_cap(
    r: float, attempts: int, initial: float
) -> None:
    b = Backoff(initial, max(initial, 120.0), rand=lambda: r, jitter="full")
    b.attempt = attempts
    base = b.base()
    delay = b.next_delay()
    assert min(0.5, base) <= delay <= base <= b.cap


def test_first_retry_of_a_fleet_is_spread_over_the_initial_window() -> None:
    """1,000 sites losing the broker at once: no second holds more than 10 % of them."""
    import random

    rng = random.Random(7)
    seconds = [
        int(Backoff(20.0, 120.0, rand=rng.random, jitter="full").next_delay()) for _ in range(1000)
    ]
    assert max(seconds.count(s) for s in set(seconds)) <= 100


def test_backoff_reset_after_success() -> None:
    b = Backoff(1.0, 60.0, rand=lambda: 1.0, jitter="full")
    for _ in range(10):
        b.next_delay()
    assert b.next_delay() == 60.0
    b.reset()
    assert b.next_delay() == 1.0


# ---- push decisions -----------------------------------------------------------------------


def fake_validate(doc: dict[str, Any]) -> object:
    """Stand-in with the same contract as parse_document: raises ConfigError with paths."""
    errors = [FieldError(k, "unknown key") for k in doc if k not in {"version", "lan", "schema"}]
    lan = doc.get("lan", {})
    if not isinstance(lan, dict):
        errors.append(FieldError("lan", "must be an object"))
    if errors:
        raise ConfigError(errors)
    return {"validated": doc}


def _push(doc: object) -> bytes:
    return json.dumps(doc).encode()


def _decide(payload: bytes, applied: Seen | None = None, **kw: Any) -> Any:
    return decide(payload, applied=applied, validate=fake_validate, **kw)


def test_push_valid_applies_and_strips_confirm() -> None:
    d = _decide(_push({"version": 3, "lan": {}, "confirm": False}), Seen(2, "x"))
    assert d.action == APPLY and d.version == 3 and d.confirm is False
    assert d.document == {"version": 3, "lan": {}}
    assert d.config == {"validated": {"version": 3, "lan": {}}}


def test_push_invalid_rejected_with_field_errors() -> None:
    d = _decide(_push({"version": 3, "lan": 5, "wan2": {}}))
    assert d.action == REJECT
    assert {str(e) for e in d.errors} == {"wan2: unknown key", "lan: must be an object"}


def test_push_replay_of_older_version_ignored() -> None:
    d = _decide(_push({"version": 2}), Seen(5, "x"))
    assert d.action == IGNORE and "replay" in d.reason


def test_push_same_version_same_content_is_noop_regardless_of_key_order() -> None:
    doc = {"version": 5, "lan": {}, "schema": 1}
    applied = Seen(5, digest_of(doc))
    payload = b'{"schema":1,  "lan":{}, "version":5, "confirm": true}'
    assert _decide(payload, applied).action == NOOP


def test_push_same_version_different_content_rejected() -> None:
    applied = Seen(5, digest_of({"version": 5}))
    d = _decide(_push({"version": 5, "lan": {}}), applied)
    assert d.action == REJECT and d.errors[0].path == "version"


def test_push_version_that_already_failed_is_not_retried() -> None:
    doc = {"version": 6, "lan": {}}
    d = decide(_push(doc), applied=Seen(5, "a"), failed=Seen(6, digest_of(doc)))
    assert d.action == IGNORE and "already failed" in d.reason


def test_push_oversized_rejected_before_parsing() -> None:
    payload = b'{"version": 1, "pad": "' + b"x" * 70000 + b'"}'
    d = _decide(payload, max_bytes=65536)
    assert d.action == REJECT and "limit is 65536" in d.errors[0].reason


def test_push_deeply_nested_rejected_without_recursion_error() -> None:
    payload = b'{"version": 1, "lan": ' + b"[" * 100000 + b"]" * 100000 + b"}"
    d = _decide(payload, max_bytes=1_000_000, max_depth=32)
    assert d.action == REJECT and "deeper than 32" in d.errors[0].reason


def test_depth_scanner_ignores_brackets_inside_strings() -> None:
    assert nesting_depth('{"a": "[[[[{{{{\\"[[["}', 10) == 1


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        (b"<html>502 Bad Gateway</html>", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b"null", "JSON object"),
        (b'{"version": 1, "version": 2}', "duplicate key"),
        (b'{"version": NaN}', "not valid JSON"),
        (b"\xff\xfe{}", "not UTF-8"),
    ],
)
def test_push_not_a_json_object_rejected(payload: bytes, needle: str) -> None:
    d = _decide(payload)
    assert d.action == REJECT and needle in d.errors[0].reason


@pytest.mark.parametrize(
    ("doc", "path"),
    [({"lan": {}}, "version"), ({"version": -1}, "version"), ({"version": True}, "version")],
)
def test_push_needs_integer_version(doc: dict[str, Any], path: str) -> None:
    d = _decide(_push(doc))
    assert d.action == REJECT and d.errors[0].path == path


def test_push_confirm_must_be_bool() -> None:
    d = _decide(_push({"version": 1, "confirm": "yes"}))
    assert d.action == REJECT and d.errors[0].path == "confirm"


def test_push_validator_crash_is_a_reject_not_a_crash() -> None:
    def broken(_doc: dict[str, Any]) -> object:
        raise KeyError("bug")

    d = decide(_push({"version": 1}), applied=None, validate=broken)
    assert d.action == REJECT and "internally" in d.errors[0].reason


def test_push_for_another_device_rejected() -> None:
    d = decide(
        _push({"version": 1, "device_id": "eh-other"}),
        applied=None,
        device_id="eh-me",
        validate=lambda doc: doc,
    )
    assert d.action == REJECT and d.errors[0].path == "device_id"


@pytest.mark.skipif(not HAVE_LOADER, reason="energyhubd.config.load not written yet")
def test_push_through_real_parse_document() -> None:
    good = decide(_push({"version": 4, "device_id": "eh-1"}), applied=None, device_id="eh-1")
    assert good.action == APPLY
    bad = decide(_push({"version": 4, "lan": {"colour": 1}}), applied=None)
    assert bad.action == REJECT and any(e.path == "lan.colour" for e in bad.errors)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=30,
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    doc=st.dictionaries(
        st.sampled_from(["version", "confirm", "lan", "wan", "schema", "x"]), json_values
    ),
    applied=st.none() | st.builds(Seen, st.integers(0, 5), st.text(max_size=4)),
)
def test_property_random_documents_never_crash(doc: dict[str, Any], applied: Seen | None) -> None:
    d = decide(_push(doc), applied=applied, validate=fake_validate)
    assert d.action in {APPLY, IGNORE, NOOP, REJECT, EMPTY}
    assert (d.action == EMPTY) == (doc == {})
    if d.action == REJECT:
        assert d.errors


@settings(max_examples=300)
@given(payload=st.binary(max_size=200))
def test_property_random_bytes_never_crash(payload: bytes) -> None:
    action = _decide(payload, max_bytes=100).action
    assert action in {APPLY, REJECT, EMPTY}
    if action == EMPTY:
        assert not payload.strip() or payload.strip() == b"{}"


@pytest.mark.parametrize("payload", [b"", b"  \n", b"{}"])
def test_push_empty_document_means_no_desired_state_not_a_reject(payload: bytes) -> None:
    d = _decide(payload)
    assert d.action == EMPTY and not d.errors


def test_push_epoch_resets_versions_and_lower_epoch_is_ignored_with_reason() -> None:
    applied = Seen(1000, "x", epoch=1)
    higher = decide(_push({"version": 1, "epoch": 2}), applied=applied, validate=fake_validate)
    assert higher.action == APPLY and higher.epoch == 2
    assert higher.document == {"version": 1}  # epoch is push-level, not configuration
    lower = decide(_push({"version": 5000, "epoch": 0}), applied=applied, validate=fake_validate)
    assert lower.action == IGNORE and "epoch 0 is older than the applied epoch 1" in lower.reason
    older = decide(_push({"version": 999, "epoch": 1}), applied=applied, validate=fake_validate)
    assert older.action == IGNORE and "older than applied 1000" in older.reason


@pytest.mark.parametrize("epoch", [-1, True, "1", 1.5])
def test_push_epoch_must_be_a_non_negative_integer(epoch: object) -> None:
    d = _decide(_push({"version": 1, "epoch": epoch}))
    assert d.action == REJECT and d.errors[0].path == "epoch"


def test_confirm_machine_reports_ignored_push_with_reason() -> None:
    m = cm.ConfirmMachine(applied_version=7, epoch=1)
    actions = m.ignored_push(3, 1, "version 3 is older than applied 7 (replay)", 5.0)
    assert [a.kind for a in actions] == [cm.REPORT]
    doc = m.reported()
    assert doc["state"] == cm.APPLIED and doc["epoch"] == 1
    assert doc["ignored"] == {"epoch": 1, "reason": "version 3 is older than applied 7 (replay)",
                              "version": 3}  # fmt: skip
    m.no_desired(6.0)
    assert "ignored" not in m.reported() and m.reported()["desired_version"] is None


def test_confirm_machine_live_or_fresh_round_trip() -> None:
    m = cm.ConfirmMachine()
    assert m.applied(1, True, 0.0, 0.0, fresh=False)[0].fresh is False
    m2 = cm.ConfirmMachine()
    assert m2.applied(1, True, 0.0, 0.0)[0].fresh is True


# ---- confirm state machine -------------------------------------------------------------


def kinds(actions: list[cm.Action]) -> list[str]:
    return [a.kind for a in actions]


def test_confirm_round_trip_in_window_confirms() -> None:
    m = cm.ConfirmMachine(window=90, applied_version=1)
    actions = m.applied(2, confirm=True, now=100, wall=1000)
    assert kinds(actions) == [cm.CHECK_LINK, cm.REPORT] and m.state == cm.PENDING_CONFIRM
    assert m.tick(150, 1050) == []
    assert kinds(m.link_round_trip_ok(160, 1060, token=actions[0].token)) == [
        cm.CONFIRM,
        cm.REPORT,
    ]
    assert m.state == cm.APPLIED and m.applied_version == 2


def test_confirm_window_expiry_rolls_back() -> None:
    m = cm.ConfirmMachine(window=90, applied_version=1)
    m.applied(2, confirm=True, now=100, wall=1000)
    assert kinds(m.tick(191, 1091)) == [cm.ROLLBACK, cm.REPORT]
    assert m.state == cm.ROLLED_BACK and m.applied_version == 1
    rep = m.reported()
    assert rep["applied_version"] == 1 and rep["desired_version"] == 2
    assert rep["errors"] and "rolled back" in rep["errors"][0]["reason"]
    assert m.link_round_trip_ok(192, 1092) == []  # too late


def test_stale_round_trip_token_does_not_confirm() -> None:
    m = cm.ConfirmMachine(window=90)
    first = m.applied(2, confirm=True, now=0, wall=0)[0].token
    m.tick(100, 100)
    m.applied(3, confirm=True, now=200, wall=200)
    assert m.link_round_trip_ok(201, 201, token=first) == []
    assert m.state == cm.PENDING_CONFIRM


def test_unchecked_apply_confirms_immediately() -> None:
    m = cm.ConfirmMachine(window=90, applied_version=1)
    assert kinds(m.applied(2, confirm=False, now=0, wall=0)) == [cm.CONFIRM, cm.REPORT]
    assert m.state == cm.APPLIED and m.applied_version == 2


def test_rejected_push_reported_with_field_errors() -> None:
    m = cm.ConfirmMachine(applied_version=1)
    m.rejected(2, [FieldError("lan.address", "bad")], wall=5)
    rep = m.reported()
    assert rep["state"] == cm.REJECTED and rep["applied_version"] == 1
    assert rep["errors"] == [{"field": "lan.address", "reason": "bad"}]
    json.dumps(rep)


def test_reported_while_pending_has_deadline() -> None:
    m = cm.ConfirmMachine(window=90)
    m.applied(2, confirm=True, now=0, wall=1000)
    rep = m.reported(wall_deadline=1090)
    assert rep["state"] == cm.PENDING_CONFIRM and rep["confirm_deadline"] == 1090
    assert kinds(m.link_up()) == [cm.CHECK_LINK]


# ---- store --------------------------------------------------------------------------------


def test_store_crash_during_confirm_window_means_rollback(tmp_path: Path) -> None:
    store = ConfigStore(str(tmp_path))
    store.save_last_good({"version": 1})
    store.save_candidate({"version": 2, "lan": {}}, deadline=1234.5)
    # "kill -9": the object is simply gone; a fresh start reads the flash.
    del store
    fresh = ConfigStore(str(tmp_path))
    marker = fresh.pending()
    assert marker is not None and (marker.version, marker.deadline) == (2, 1234.5)
    assert fresh.load_last_good() == {"version": 1}
    fresh.discard_candidate()
    assert ConfigStore(str(tmp_path)).pending() is None
    assert ConfigStore(str(tmp_path)).load_last_good() == {"version": 1}


def test_store_confirm_promotes_candidate(tmp_path: Path) -> None:
    store = ConfigStore(str(tmp_path))
    store.save_candidate({"version": 2}, deadline=1.0)
    assert store.confirm()
    fresh = ConfigStore(str(tmp_path))
    assert fresh.pending() is None and fresh.load_last_good() == {"version": 2}
    assert sorted(os.listdir(tmp_path)) == ["last-good.json"]


def test_store_writes_nothing_when_unchanged(tmp_path: Path) -> None:
    store = ConfigStore(str(tmp_path))
    assert store.save_last_good({"version": 1, "a": [1, 2]})
    path = tmp_path / "last-good.json"
    before = path.stat()
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))  # make any rewrite visible
    assert not store.save_last_good({"a": [1, 2], "version": 1})
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, 1_000_000_000)


def test_store_write_is_atomic_replace_and_leaves_no_temp_files(tmp_path: Path) -> None:
    store = ConfigStore(str(tmp_path))
    store.save_last_good({"version": 1})
    inode = (tmp_path / "last-good.json").stat().st_ino
    store.save_last_good({"version": 2})
    assert (tmp_path / "last-good.json").stat().st_ino != inode  # renamed over, not rewritten
    assert sorted(os.listdir(tmp_path)) == ["last-good.json"]


def test_store_corrupt_marker_still_means_rollback(tmp_path: Path) -> None:
    (tmp_path / "pending.json").write_text("{trunc")
    assert ConfigStore(str(tmp_path)).pending() is not None


def test_store_remembers_failed_version(tmp_path: Path) -> None:
    ConfigStore(str(tmp_path)).record_failed(7, "abc")
    assert ConfigStore(str(tmp_path)).failed() == (7, "abc")


STORE_CHILD = """
import sys
from energyhubd.portal.store import ConfigStore
store = ConfigStore(sys.argv[1])
i = 0
while True:
    i += 1
    store.save_candidate({"version": i, "pad": "x" * (1000 + i % 700)}, deadline=float(i))
    if i == 3:
        print("RUNNING", flush=True)
    if i % 2:
        store.confirm()
    else:
        store.discard_candidate()
"""


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.13, 0.3])
def test_store_kill_9_mid_write_never_leaves_torn_or_inconsistent_files(
    tmp_path: Path, delay: float
) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", STORE_CHILD, str(tmp_path)], stdout=subprocess.PIPE
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == b"RUNNING\n"
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(5)
        if child.stdout is not None:
            child.stdout.close()
    fresh = ConfigStore(str(tmp_path))
    last_good = fresh.load_last_good()  # raises StoreError on a torn file
    assert last_good is not None and last_good["version"] % 2 == 1  # only confirmed ones
    marker = fresh.pending()
    if marker is not None:
        # The candidate is always on disk before its marker.
        candidate = fresh.load_candidate()
        assert candidate is not None and candidate["version"] == marker.version
        assert marker.version >= 0


@given(
    applied=st.tuples(st.integers(0, 3), st.integers(0, 5)),
    pushed=st.tuples(st.integers(0, 3), st.integers(0, 5)),
)
def test_property_epoch_then_version_order(
    applied: tuple[int, int], pushed: tuple[int, int]
) -> None:
    """(epoch, version) is compared in that order: lower is ignored with a reason, higher is
    applied, equal with other content is a conflict."""
    seen = Seen(applied[1], "other-content", epoch=applied[0])
    doc = {"version": pushed[1], "epoch": pushed[0]}
    d = decide(_push(doc), applied=seen, validate=fake_validate)
    if pushed < applied:
        assert d.action == IGNORE and d.reason
    elif pushed > applied:
        assert d.action == APPLY and d.epoch == pushed[0]
    else:
        assert d.action == REJECT and d.errors[0].path == "version"
