"""Implausible event times (issue 14): skipped with ``implausible_event_time``, never counted, never
a dimension member's latest evidence, and their dates are not touched dates."""

from __future__ import annotations

from datetime import date

from etl_api import transform
from etl_api.reading import count_by_date
from pyspark.sql import SparkSession

from tests.unit.etl.test_transform import CHROME_WIN, V, raw, rows_of

FR = "https://www.glamira.fr/glamira-pendant-viktor.html"
DE = "https://www.glamira.de/glamira-pendant-viktor.html"
INGESTED = "2020-06-04T12:00:00.000Z"


def event(event_id: str, event_time: str, current_url: str = FR, ingested_at: str | None = INGESTED, **kw: str) -> dict[str, str | None]:
    return {
        "event_id": event_id,
        "collection": V,
        "product_id": "110474",
        "store_id": "12",
        "device_id": "d1",
        "user_agent": CHROME_WIN,
        "current_url": current_url,
        "event_time": event_time,
        "event_date": event_time[:10],
        "ingested_at": ingested_at,
        **kw,
    }


EVENTS = [
    event("ok", "2020-06-04T10:00:00.000Z"),
    # a day ahead of its ingestion is the limit (86 400 s): still plausible
    event("edge", "2020-06-05T12:00:00.000Z", ingested_at=INGESTED),
    event("ahead", "2020-06-05T12:00:00.001Z", ingested_at=INGESTED),
    # the 2099 event of the same store, on another site: must not decide the store's country
    event("future", "2099-01-01T00:00:00.000Z", current_url=DE),
    event("old", "1999-12-31T23:59:59.999Z", current_url=DE),
    # no ingested_at (not from the sink): only the floor applies
    event("unstamped", "2030-01-01T00:00:00.000Z", ingested_at=None),
    # the sink's other ISO form (+00:00, from a BSON date) parses too
    event("ahead2", "2020-06-06T00:00:00.000Z", ingested_at="2020-06-04T12:00:00+00:00"),
]


def test_implausible_times_are_skipped_with_their_reason(spark: SparkSession) -> None:
    classified = transform.classify_events(transform.enrich_events(transform.clean_events(raw(spark, *EVENTS))), (V,))
    assert rows_of(classified, "event_id", "skip_reason") == sorted(
        [
            ("ok", None),
            ("edge", None),
            ("ahead", "implausible_event_time"),
            ("future", "implausible_event_time"),
            ("old", "implausible_event_time"),
            ("unstamped", None),
            ("ahead2", "implausible_event_time"),
        ],
        key=repr,
    )
    counts = {r["skip_reason"]: r["n"] for r in transform.skip_counts(classified).collect()}
    assert counts == {None: 3, "implausible_event_time": 4}


def test_the_settings_move_the_window(spark: SparkSession) -> None:
    cleaned = transform.enrich_events(transform.clean_events(raw(spark, *EVENTS)))
    # floor 2021: everything before it is implausible; tolerance 2 days: "ahead" and "ahead2" pass
    floor_2021 = 1609459200000
    classified = transform.classify_events(cleaned, (V,), time_floor_ms=floor_2021, max_ahead_ms=2 * 86_400_000)
    skipped = {r["event_id"] for r in classified.where("skip_reason IS NOT NULL").collect()}
    assert skipped == {"ok", "edge", "ahead", "ahead2", "future", "old"}  # "unstamped" (2030, no ingested_at) stays


def test_a_2099_event_does_not_decide_the_stores_country(spark: SparkSession) -> None:
    classified = transform.classify_events(transform.enrich_events(transform.clean_events(raw(spark, *EVENTS))), (V,))
    views = transform.valid_views(classified)
    stores = rows_of(transform.build_dim_country(views), "store_id", "site_domain", "country_name", "attributes_source")
    # the latest *valid* event is "unstamped" (2030, fr): the 2099 glamira.de event is not evidence
    assert stores == [("12", "glamira.fr", "France", "001893456000000:unstamped")]
    # without the check the 2099 event would have won (the test would be void otherwise)
    unchecked = transform.classify_events(
        transform.enrich_events(transform.clean_events(raw(spark, *EVENTS))), (V,), time_floor_ms=0, max_ahead_ms=10**15
    )
    assert rows_of(transform.build_dim_country(transform.valid_views(unchecked)), "store_id", "country_name") == [("12", "Germany")]
    facts = transform.build_facts(views).collect()
    assert sum(r["view_count"] for r in facts) == 3
    assert {r["event_date"] for r in facts} == {date(2020, 6, 4), date(2020, 6, 5), date(2030, 1, 1)}


def test_dates_with_only_implausible_events_are_not_touched(spark: SparkSession) -> None:
    cleaned = transform.clean_events(raw(spark, *EVENTS))
    rows, dates = count_by_date(cleaned, transform.implausible_event_time())
    assert rows == len(EVENTS)
    assert dates == [date(2020, 6, 4), date(2020, 6, 5), date(2030, 1, 1)]  # not 1999-12-31, 2020-06-06, 2099-01-01
    assert count_by_date(cleaned)[1] == sorted({date.fromisoformat(e["event_date"] or "") for e in EVENTS})
