"""``frames.build_together`` (one Spark job: the micro-batch's way) gives the same rows as each
frame built on its own and as ``transform.run_counts``, on generated messy events: ids that
collide across events and frames, NULL and blank keys, bots, skipped events, several dates and
hours, equal event times (the latest-event tie broken by ``event_id``)."""

from __future__ import annotations

from typing import Any

from etl_api import frames, transform
from etl_api.extract import RAW_FIELDS
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pyspark.sql import DataFrame, SparkSession

from tests.unit.etl.test_transform import CHROME_WIN, FB_BOT, IPHONE, PENDANT, V

IDS = st.sampled_from([None, "", " ", "1", "1.0", "2", "US", "12", "null"])
URLS = st.sampled_from([None, "", PENDANT, "https://www.glamira.de/glamira-ring-anna.html", "https://www.google.com/", "not a url"])
TIMES = st.sampled_from([None, "2020-06-04T10:00:00.000Z", "2020-06-04T10:00:00.000Z", "2020-06-05 9:05:11", "1999-01-01T00:00:00Z", "x"])


@st.composite
def raw_event(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "event_id": draw(st.sampled_from(["a", "b", "c", "d", "e", "f"])) + str(draw(st.integers(0, 3))),
        "collection": draw(st.sampled_from([V, V, V, "view_listing_page", None])),
        "product_id": draw(IDS),
        "store_id": draw(IDS),
        "device_id": draw(IDS),
        "user_agent": draw(st.sampled_from([None, "", CHROME_WIN, IPHONE, FB_BOT])),
        "referrer_url": draw(URLS),
        "current_url": draw(URLS),
        "event_time": draw(TIMES),
        "time_stamp": draw(st.sampled_from([None, "1591232400", "1591232400.5", "soon"])),
        "event_date": draw(st.sampled_from([None, "2020-06-04", "2020-06-05", "2099-01-01"])),
        "ingested_at": "2020-06-06T00:00:00+00:00",
        "ingest_hour": draw(st.sampled_from(["2020-06-05T23", "2020-06-06T00", None])),
    }


def _classified(spark: SparkSession, events: list[dict[str, Any]]) -> DataFrame:
    raw = spark.createDataFrame([tuple(e.get(f) for f in RAW_FIELDS) for e in events], transform.RAW_SCHEMA)
    return transform.classify_events(transform.enrich_events(transform.clean_events(raw)), (V,), exclude_bots=True)


def _sorted(rows: list[Any]) -> list[tuple[Any, ...]]:
    return sorted((tuple(r) for r in rows), key=repr)


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.lists(raw_event(), min_size=0, max_size=60))
@example([])
def test_one_job_gives_every_frame_and_the_counts_as_separate_jobs(spark: SparkSession, events: list[dict[str, Any]]) -> None:
    classified = _classified(spark, events).cache()
    try:
        together = frames.build_together(classified)
        views = transform.valid_views(classified)
        for name in frames.NAMES:
            separate = frames.build(views, name)
            if together[name]:
                assert list(together[name][0].asDict()) == separate.columns, name
            assert _sorted(together[name]) == _sorted(separate.collect()), name
        counts = transform.run_counts(classified).select(transform.LEDGER_HOUR, transform.LEDGER_DATE, "skip_reason", "n")
        assert _sorted(together[frames.COUNTS]) == _sorted(counts.collect())
        assert sum(r["n"] for r in together[frames.COUNTS]) == len(events)
    finally:
        classified.unpersist()
