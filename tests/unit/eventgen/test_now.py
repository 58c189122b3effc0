"""``--now``: every valid record's event time is the clock at the moment it is pulled; the bridge
reads exactly that time back; bad records and everything but the times are unchanged."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from bridge.transform import normalize
from eventgen import generate
from eventgen.cli import main
from eventgen.now import stamp_now
from eventgen.stores import STORES

NOW = 1_796_000_000.25  # 2026-11-30T...; a fixed "wall clock"


def test_valid_records_carry_the_clock_and_the_bridge_reads_it_back() -> None:
    ticks = itertools.count()
    clock = lambda: NOW + next(ticks)  # noqa: E731 - one second per pulled record
    original = list(generate(300, seed=11, bad_fraction=0.1, seed_shape_fraction=0.3))
    stamped = list(stamp_now(iter(original), clock))
    assert [r.kind for r in stamped] == [r.kind for r in original]
    assert [r.key for r in stamped] == [r.key for r in original]
    bridged_at = datetime.fromtimestamp(NOW + 400, UTC)
    for i, (before, after) in enumerate(zip(original, stamped, strict=True)):
        now = NOW + i
        if not before.valid:
            assert after == before
            continue
        event = orjson.loads(after.value)
        old = dict(before.event or {})
        store_offset = timedelta(hours=STORES[str(event["store_id"])].utc_offset)
        local = datetime.fromtimestamp(int(now), UTC) + store_offset
        if before.kind == "glamira":
            assert event["time_stamp"] == int(now)
            assert int(event["_id"][:8], 16) == int(now) and event["_id"][8:] == old["_id"][8:]
            assert after.event_id == event["_id"]
            padded = local.strftime("%Y-%m-%d %H:%M:%S")
            assert event["local_time"] in (padded, padded[:11] + padded[12:]) if padded[11] == "0" else event["local_time"] == padded
            changed = {"time_stamp", "local_time", "_id"}
        else:
            assert event["timestamp"] == datetime.fromtimestamp(int(now), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            assert event["local_time"] == local.strftime("%Y-%m-%dT%H:%M:%S") + ".250000"
            changed = {"timestamp", "local_time"}
        assert {k: v for k, v in event.items() if k not in changed} == {k: v for k, v in old.items() if k not in changed}
        normalized = normalize(after.value, after.key, topic="t", partition=0, offset=i, bridged_at=bridged_at)
        assert normalized["event_time"] == datetime.fromtimestamp(int(now), UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def test_the_cli_option_is_recorded_in_the_summary(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--dry-run", "--count", "50", "--now", "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["args"]["now"] is True and summary["total"] == 50
