"""Source resets (issue 15), the pure parts: the offsets value format old and new, ids per
source epoch, and the classification of a stored position against the remote log."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import orjson
import pytest
from bridge.incidents import (
    ABOVE_END,
    BELOW_START,
    POLICIES,
    SourceIncident,
    classify_position,
    reset_record,
    resume_position,
)
from bridge.offsets import StoredOffset, offset_key, offset_value, parse_offset_record, parse_offset_state, parse_offset_value
from bridge.records import copy_record
from bridge.settings import BridgeSettings
from bridge.transform import normalize

from shared.event import event_id_from_coordinates

AT = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
NO_ID = orjson.dumps({"collection": "view_home_page", "time_stamp": 1_700_000_000})
WITH_ID = orjson.dumps({"_id": "5ed8cb2bc671fc36b74653ad", "collection": "view_home_page", "time_stamp": 1_700_000_000})


# ------------------------------------------------------------------ offsets value format


def test_an_old_value_reads_as_epoch_0_without_reset_or_incident() -> None:
    assert parse_offset_value(b'{"next_offset":1234}') == StoredOffset(1234, 0, None, None)
    assert parse_offset_record(b"product_views/2", b'{"next_offset":5}') == ("product_views", 2, 5)
    assert parse_offset_state(b"product_views/2", b'{"next_offset":5}') == ("product_views", 2, StoredOffset(5))
    assert parse_offset_state(b"product_views/2", None) == ("product_views", 2, None)
    assert parse_offset_state(b"no-partition", b"{}") is None


def test_epoch_0_writes_exactly_the_old_value() -> None:
    assert offset_value(1234) == b'{"next_offset":1234}'
    assert offset_value(1234, source_epoch=0) == b'{"next_offset":1234}'


def test_new_values_round_trip_and_old_readers_still_find_next_offset() -> None:
    reset = {"policy": "resume_from_earliest", "old_position": 334, "new_position": 0, "at": "2026-12-02T10:00:00.000Z"}
    incident = {"kind": ABOVE_END, "stored": 334, "log_start": 0, "log_end": 170, "at": "2026-12-02T10:00:00.000Z"}
    value = offset_value(17, source_epoch=2, reset=reset)
    assert orjson.loads(value) == {"next_offset": 17, "source_epoch": 2, "reset": reset}
    assert parse_offset_value(value) == StoredOffset(17, 2, reset, None)
    held = offset_value(334, source_epoch=1, incident=incident)
    assert parse_offset_value(held) == StoredOffset(334, 1, None, incident)
    # What the old parser did (int(orjson.loads(value)["next_offset"])) still works on new values.
    assert int(orjson.loads(held)["next_offset"]) == 334
    assert parse_offset_record(offset_key("t", 0), value) == ("t", 0, 17)


# ------------------------------------------------------------------ ids per source epoch


def test_epoch_0_id_is_exactly_the_old_hash() -> None:
    old = hashlib.sha256(b"product_views/3/42").hexdigest()[:32]
    assert event_id_from_coordinates("product_views", 3, 42) == old
    assert event_id_from_coordinates("product_views", 3, 42, 0) == old
    assert event_id_from_coordinates("product_views", 3, 42, source_epoch=0) == old


def test_later_epochs_give_different_stable_ids() -> None:
    ids = {event_id_from_coordinates("product_views", p, o, e) for p in range(3) for o in range(200) for e in range(4)}
    assert len(ids) == 3 * 200 * 4
    assert event_id_from_coordinates("t", 0, 5, 1) == event_id_from_coordinates("t", 0, 5, 1)
    assert event_id_from_coordinates("t", 0, 5, 1) == hashlib.sha256(b"t/0/5/1").hexdigest()[:32]


def test_the_epoch_reaches_events_without_id_only() -> None:
    kw = {"topic": "pv", "partition": 1, "offset": 9, "bridged_at": AT}
    assert normalize(NO_ID, None, **kw)["event_id"] == event_id_from_coordinates("pv", 1, 9)
    assert normalize(NO_ID, None, **kw, source_epoch=1)["event_id"] == event_id_from_coordinates("pv", 1, 9, 1)
    assert normalize(WITH_ID, None, **kw, source_epoch=3)["event_id"] == "5ed8cb2bc671fc36b74653ad"
    epoch0, epoch2 = copy_record(NO_ID, None, **kw), copy_record(NO_ID, None, **kw, source_epoch=2)
    assert isinstance(epoch0, tuple) and isinstance(epoch2, tuple)
    assert orjson.loads(epoch0[1])["event_id"] == event_id_from_coordinates("pv", 1, 9)
    assert orjson.loads(epoch2[1])["event_id"] == event_id_from_coordinates("pv", 1, 9, 2)
    # Nothing else changes with the epoch.
    a, b = orjson.loads(epoch0[1]), orjson.loads(epoch2[1])
    del a["event_id"], b["event_id"]
    assert a == b
    assert copy_record(WITH_ID, None, **kw, source_epoch=2) == copy_record(WITH_ID, None, **kw)


# ------------------------------------------------------------------ the incident classification


@pytest.mark.parametrize(
    ("position", "start", "end", "kind"),
    [
        (0, 0, 0, None),  # empty log, nothing copied
        (500, 0, 500, None),  # caught up
        (200, 100, 500, None),  # behind, still in the log
        (100, 100, 500, None),  # exactly at the log start
        (1000, 0, 500, ABOVE_END),  # topic deleted and recreated with fewer records
        (334, 0, 0, ABOVE_END),  # recreated, still empty
        (501, 0, 500, ABOVE_END),
        (99, 100, 500, BELOW_START),  # retention passed the position
        (0, 100, 100, BELOW_START),  # everything deleted by retention, never copied
    ],
)
def test_classify_position(position: int, start: int, end: int, kind: str | None) -> None:
    assert classify_position(position, start, end) == kind


def test_resume_positions_and_the_reset_record() -> None:
    assert resume_position("resume_from_earliest", 7, 90) == 7
    assert resume_position("resume_from_latest", 7, 90) == 90
    with pytest.raises(ValueError):
        resume_position("fail", 7, 90)
    incident = SourceIncident("pv", 2, ABOVE_END, 334, 0, 170, "2026-12-02T10:00:00.000Z", source_epoch=1)
    assert reset_record(incident, "resume_from_earliest", 0, "2026-12-02T10:01:00.000Z") == {
        "policy": "resume_from_earliest",
        "kind": ABOVE_END,
        "old_position": 334,
        "new_position": 0,
        "log_start": 0,
        "log_end": 170,
        "old_epoch": 1,
        "new_epoch": 2,
        "at": "2026-12-02T10:01:00.000Z",
    }


def test_the_incident_reason_names_partition_and_offsets() -> None:
    incident = SourceIncident("pv", 2, ABOVE_END, 334, 0, 170, "2026-12-02T10:00:00.000Z")
    reason = incident.reason()
    assert "pv/2" in reason and "stored position 334" in reason and "log start 0" in reason and "log end 170" in reason
    assert incident.as_dict() == {"kind": ABOVE_END, "stored": 334, "log_start": 0, "log_end": 170, "at": "2026-12-02T10:00:00.000Z"}
    mid = SourceIncident("pv", 0, BELOW_START, 10, 50, 80, "x", fetch_offset=40)
    assert "fetch position 40" in mid.reason() and mid.as_dict()["fetch_offset"] == 40


def test_the_policy_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert BridgeSettings().source_reset_policy == "fail"
    for policy in POLICIES:
        monkeypatch.setenv("BRIDGE_SOURCE_RESET_POLICY", policy)
        assert BridgeSettings().source_reset_policy == policy
    monkeypatch.setenv("BRIDGE_SOURCE_RESET_POLICY", "skip")
    with pytest.raises(ValueError):
        BridgeSettings()
