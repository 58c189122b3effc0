"""Read planning (equality filters only), document flattening and the client-side window."""

from __future__ import annotations

from datetime import UTC, date, datetime

from etl_api.extract import (
    RAW_FIELDS,
    ReadTask,
    document_to_row,
    hours_between,
    keep_document,
    parse_utc,
    plan_all_tasks,
    plan_date_tasks,
    plan_window_tasks,
    task_queries,
)


def test_hours_between_covers_both_ends() -> None:
    low = datetime(2026, 11, 27, 22, 59, 59, tzinfo=UTC)
    high = datetime(2026, 11, 28, 1, 0, 0, tzinfo=UTC)
    assert hours_between(low, high) == ["2026-11-27T22", "2026-11-27T23", "2026-11-28T00", "2026-11-28T01"]


def test_window_tasks_are_equality_filters_per_hour_part_and_type() -> None:
    low = datetime(2026, 11, 27, 10, 30, tzinfo=UTC)
    high = datetime(2026, 11, 27, 11, 5, tzinfo=UTC)
    tasks = plan_window_tasks(low, high, ("view_product_detail",))
    assert len(tasks) == 2 * 16
    assert tasks[0] == ReadTask(
        {"ingest_hour": "2026-11-27T10", "part": 0, "collection": "view_product_detail"}, low.isoformat(), high.isoformat()
    )
    assert {t.filter["part"] for t in tasks} == set(range(16))
    # every filter value is a plain scalar: equality only
    assert all(isinstance(v, str | int) for t in tasks for v in t.filter.values())


def test_part_slices_when_fewer_read_parts() -> None:
    high = datetime(2026, 11, 27, 11, tzinfo=UTC)
    tasks = plan_date_tasks([date(2020, 6, 2), date(2020, 6, 1), date(2020, 6, 1)], high, ("a", "b"), read_parts=4)
    assert len(tasks) == 2 * 2 * 4
    assert tasks[0] == ReadTask({"event_date": "2020-06-01", "collection": "a"}, None, high.isoformat(), (0, 1, 2, 3))
    assert plan_all_tasks(high, ("a",), read_parts=1) == [ReadTask({"collection": "a"}, None, high.isoformat(), ())]


def test_a_slice_is_read_with_one_equality_query_per_part() -> None:
    high = datetime(2026, 11, 27, 11, tzinfo=UTC)
    tasks = plan_all_tasks(high, ("a",), read_parts=4)
    assert [task_queries(t) for t in tasks[:2]] == [
        [{"collection": "a", "part": 0}, {"collection": "a", "part": 1}, {"collection": "a", "part": 2}, {"collection": "a", "part": 3}],
        [{"collection": "a", "part": 4}, {"collection": "a", "part": 5}, {"collection": "a", "part": 6}, {"collection": "a", "part": 7}],
    ]
    assert sorted(q["part"] for t in tasks for q in task_queries(t)) == list(range(16))
    one = plan_window_tasks(datetime(2026, 11, 27, 10, tzinfo=UTC), datetime(2026, 11, 27, 10, 5, tzinfo=UTC), ("a",))[3]
    assert task_queries(one) == [{"ingest_hour": "2026-11-27T10", "part": 3, "collection": "a"}]
    assert task_queries(plan_all_tasks(high, ("a",), read_parts=1)[0]) == [{"collection": "a"}]


def test_document_to_row_flattens_messy_values() -> None:
    doc = {
        "_id": "5ed8cb2bc671fc36b74653ad",
        "collection": "view_product_detail",
        "product_id": 110474.0,
        "store_id": 12,
        "device_id": "d-1",
        "user_agent": "UA",
        "referrer_url": "",
        "current_url": {"weird": True},
        "time_stamp": 1589733273,
        "option": [{"option_label": "alloy"}],
        "email_address": "someone@example.org",
        "local_time": "2020-06-04 9:05:11",
        "event_date": "2020-06-04",
        "ingested_at": "2026-11-27T20:00:00.000Z",
        "ingest_hour": "2026-11-27T20",
    }
    row = dict(zip(RAW_FIELDS, document_to_row(doc), strict=True))
    assert row == {
        "event_id": "5ed8cb2bc671fc36b74653ad",
        "collection": "view_product_detail",
        "product_id": "110474",
        "store_id": "12",
        "device_id": "d-1",
        "user_agent": "UA",
        "referrer_url": "",
        "current_url": None,  # not a text: the unknown member, never a member named '{"weird": true}'
        "event_time": None,
        "time_stamp": "1589733273",
        "timestamp": None,
        "local_time": "2020-06-04 9:05:11",
        "event_date": "2020-06-04",
        "ingested_at": "2026-11-27T20:00:00.000Z",
        "ingest_hour": "2026-11-27T20",
    }
    assert "email_address" not in RAW_FIELDS and "ip" not in RAW_FIELDS


def test_member_fields_that_are_not_ids_or_texts_are_the_unknown_member() -> None:
    doc = {"_id": "e", "product_id": True, "store_id": {"id": 1}, "device_id": 7.5, "user_agent": 3, "referrer_url": ["x"]}
    row = dict(zip(RAW_FIELDS, document_to_row(doc), strict=True))
    assert [row[f] for f in ("product_id", "store_id", "device_id", "user_agent", "referrer_url", "current_url")] == [None] * 6
    ids = dict(zip(RAW_FIELDS, document_to_row({"_id": "e", "product_id": 12, "store_id": 12.0, "device_id": "d"}), strict=True))
    assert (ids["product_id"], ids["store_id"], ids["device_id"]) == ("12", "12", "d")


def test_keep_document_window_is_exclusive_low_inclusive_high() -> None:
    after, until = parse_utc("2026-11-27T20:00:00.000Z"), parse_utc("2026-11-27T21:00:00+00:00")
    task = ReadTask({}, after.isoformat(), until.isoformat(), (1,))
    base = {"part": 1}
    assert not keep_document({**base, "ingested_at": "2026-11-27T20:00:00.000Z"}, task, after, until)
    assert keep_document({**base, "ingested_at": "2026-11-27T20:00:00.001Z"}, task, after, until)
    assert keep_document({**base, "ingested_at": "2026-11-27T21:00:00.000Z"}, task, after, until)
    assert not keep_document({**base, "ingested_at": "2026-11-27T21:00:00.001Z"}, task, after, until)
    assert not keep_document({"part": 2, "ingested_at": "2026-11-27T20:30:00.000Z"}, task, after, until)
    assert not keep_document({**base}, task, after, until)  # never stamped by the sink
    assert not keep_document({**base, "ingested_at": "yesterday"}, task, after, until)


def test_window_tasks_carry_only_the_coverage_past_the_watermark() -> None:
    low = datetime(2026, 11, 27, 10, 30, tzinfo=UTC)
    high = datetime(2026, 11, 27, 11, 5, tzinfo=UTC)
    covered = {
        date(2020, 6, 1): datetime(2026, 11, 27, 10, 45, tzinfo=UTC),  # a range run after the watermark
        date(2020, 6, 2): low,  # covered up to the watermark: nothing to add
        date(2020, 6, 3): datetime(2026, 11, 27, 9, tzinfo=UTC),  # older than the watermark
    }
    tasks = plan_window_tasks(low, high, ("a",), read_parts=1, covered=covered)
    assert len(tasks) == 2
    assert all(t.covered_until == {"2020-06-01": "2026-11-27T10:45:00+00:00"} for t in tasks)
    assert plan_window_tasks(low, high, ("a",), read_parts=1)[0].covered_until == {}
    assert plan_window_tasks(low, high, ("a",), read_parts=1, covered={}) == plan_window_tasks(low, high, ("a",), read_parts=1)


def test_keep_document_skips_events_a_range_run_already_counted() -> None:
    after, until = parse_utc("2026-11-27T20:00:00.000Z"), parse_utc("2026-11-27T21:00:00.000Z")
    task = ReadTask({}, after.isoformat(), until.isoformat(), covered_until={"2020-06-01": "2026-11-27T20:30:00+00:00"})
    covered = {d: parse_utc(at) for d, at in task.covered_until.items()}
    d1 = {"event_date": "2020-06-01"}
    assert not keep_document({**d1, "ingested_at": "2026-11-27T20:10:00.000Z"}, task, after, until, covered)
    assert not keep_document({**d1, "ingested_at": "2026-11-27T20:30:00.000Z"}, task, after, until, covered)  # inclusive
    assert keep_document({**d1, "ingested_at": "2026-11-27T20:30:00.001Z"}, task, after, until, covered)
    assert not keep_document({**d1, "ingested_at": "2026-11-27T21:00:00.001Z"}, task, after, until, covered)  # window still applies
    # other dates: only the window
    assert keep_document({"event_date": "2020-06-02", "ingested_at": "2026-11-27T20:10:00.000Z"}, task, after, until, covered)
    assert keep_document({"ingested_at": "2026-11-27T20:10:00.000Z"}, task, after, until, covered)
    # without the parsed map the document is judged by the window only
    assert keep_document({**d1, "ingested_at": "2026-11-27T20:10:00.000Z"}, task, after, until)
