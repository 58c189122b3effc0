# ruff: noqa: E501
"""The Spark transforms on small DataFrames, with exact expected rows (messy inputs included)."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from etl_api import transform
from etl_api.extract import RAW_FIELDS
from pyspark.sql import DataFrame, SparkSession

CHROME_WIN = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/83.0.4103.61 Safari/537.36"
IPHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 13_3 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/13.0.5 Mobile/15E148 Safari/604.1"
FB_BOT = "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)"
PENDANT = "https://www.glamira.fr/glamira-pendant-viktor.html?alloy=yellow-375"


def raw(spark: SparkSession, *rows: dict[str, Any]) -> DataFrame:
    return spark.createDataFrame([tuple(r.get(f) for f in RAW_FIELDS) for r in rows], transform.RAW_SCHEMA)


def rows_of(df: DataFrame, *cols: str) -> list[tuple[Any, ...]]:
    return sorted((tuple(r) for r in df.select(*cols).collect()), key=repr)


V = "view_product_detail"
MESSY = [
    # the bridge's normal shape
    {"event_id": "e1", "collection": V, "product_id": "110474", "store_id": "12", "device_id": "d1", "user_agent": CHROME_WIN,
     "referrer_url": "https://www.google.com/", "current_url": PENDANT, "event_time": "2020-06-04T12:21:27.123Z", "event_date": "2020-06-04"},
    # ids through a float, padded strings, empty referrer, unpadded hour, no sink date
    {"event_id": "e2", "collection": V, "product_id": " 110474.0 ", "store_id": "12 ", "device_id": "", "user_agent": IPHONE,
     "referrer_url": "", "current_url": PENDANT, "event_time": "2020-06-04 9:05:11", "event_date": None},
    # Glamira unix seconds only; "null" texts
    {"event_id": "e3", "collection": V, "product_id": "95923", "store_id": "null", "device_id": "d2", "user_agent": IPHONE,
     "referrer_url": "https://l.facebook.com/l.php?u=x", "current_url": None, "time_stamp": "1591232400", "event_date": "2020-06-04"},
    # the seed's shape: ISO timestamp with Z, ISO-code store
    {"event_id": "e4", "collection": V, "product_id": "P001", "store_id": "US", "device_id": "d3", "timestamp": "2020-06-03T23:59:59Z",
     "local_time": "2020-06-03T23:59:59.000001"},
    # bot, missing product, no time at all, not a product view
    {"event_id": "e5", "collection": V, "product_id": "110474", "store_id": "12", "device_id": "d9", "user_agent": FB_BOT,
     "event_time": "2020-06-04T10:00:00.000Z", "event_date": "2020-06-04"},
    {"event_id": "e6", "collection": V, "product_id": "", "store_id": "12", "event_time": "2020-06-04T10:00:00.000Z", "event_date": "2020-06-04"},
    {"event_id": "e7", "collection": V, "product_id": "1", "store_id": "12", "event_time": "not a time", "time_stamp": "soon"},
    {"event_id": "e8", "collection": "view_listing_page", "product_id": None, "store_id": "12", "event_time": "2020-06-04T10:00:00.000Z"},
]  # fmt: skip


@pytest.fixture(scope="module")
def classified(spark: SparkSession) -> DataFrame:
    cleaned = transform.clean_events(raw(spark, *MESSY))
    return transform.classify_events(transform.enrich_events(cleaned), ("view_product_detail",), exclude_bots=True).cache()


def test_clean_events_normalizes_ids_times_and_dates(spark: SparkSession) -> None:
    cleaned = transform.clean_events(raw(spark, *MESSY))
    assert rows_of(cleaned, "event_id", "product_id", "store_id", "device_id", "referrer_url", "ts_ms", "event_date") == [
        ("e1", "110474", "12", "d1", "https://www.google.com/", 1591273287123, date(2020, 6, 4)),
        ("e2", "110474", "12", None, None, 1591261511000, date(2020, 6, 4)),
        ("e3", "95923", None, "d2", "https://l.facebook.com/l.php?u=x", 1591232400000, date(2020, 6, 4)),
        ("e4", "P001", "US", "d3", None, 1591228799000, date(2020, 6, 3)),
        ("e5", "110474", "12", "d9", None, 1591264800000, date(2020, 6, 4)),
        ("e6", None, "12", None, None, 1591264800000, date(2020, 6, 4)),
        ("e7", "1", "12", None, None, None, None),
        ("e8", None, "12", None, None, 1591264800000, date(2020, 6, 4)),
    ]


def test_enrich_and_classify(classified: DataFrame) -> None:
    assert rows_of(
        classified,
        "event_id",
        "device_type",
        "browser",
        "os",
        "is_bot",
        "referrer_domain",
        "referrer_type",
        "site_domain",
        "country_name",
        "region",
        "product_name",
        "category",
        "skip_reason",
    ) == [
        ("e1", "desktop", "Chrome", "Windows 10", False, "google.com", "search", "glamira.fr", "France", "Europe", "Glamira Pendant Viktor", "pendant", None),
        ("e2", "mobile", "Mobile Safari", "iOS 13.3", False, None, "direct", "glamira.fr", "France", "Europe", "Glamira Pendant Viktor", "pendant", None),
        ("e3", "mobile", "Mobile Safari", "iOS 13.3", False, "facebook.com", "social", None, None, None, None, None, None),
        ("e4", "unknown", None, None, False, None, "direct", None, None, None, None, None, None),
        ("e5", "bot", "FacebookBot", None, True, None, "direct", None, None, None, None, None, "bot"),
        ("e6", "unknown", None, None, False, None, "direct", None, None, None, None, None, "missing_product_id"),
        ("e7", "unknown", None, None, False, None, "direct", None, None, None, None, None, "missing_event_time"),
        ("e8", "unknown", None, None, False, None, "direct", None, None, None, None, None, "not_product_view"),
    ]  # fmt: skip
    assert rows_of(transform.skip_counts(classified), "skip_reason", "n") == [
        ("bot", 1),
        ("missing_event_time", 1),
        ("missing_product_id", 1),
        ("not_product_view", 1),
        (None, 4),
    ]


def test_one_counting_job_gives_the_skip_counts_and_the_hour_ledger(classified: DataFrame) -> None:
    skips, ledger_rows = transform.split_run_counts(transform.run_counts(classified).collect())
    assert skips == {r["skip_reason"]: r["n"] for r in transform.skip_counts(classified).collect()}
    separately = [
        (r[transform.LEDGER_HOUR], r[transform.LEDGER_DATE], r["events"], r["valid"]) for r in transform.ledger_counts(classified).collect()
    ]
    assert sorted(ledger_rows, key=str) == sorted(separately, key=str) and ledger_rows


def test_dimensions_take_the_latest_event_with_the_attribute(classified: DataFrame) -> None:
    views = transform.valid_views(classified)
    assert rows_of(transform.build_dim_product(views), "*") == [
        ("110474", "Glamira Pendant Viktor", "glamira-pendant-viktor", "pendant", "001591273287123:e1", date(2020, 6, 4)),
        ("95923", None, None, None, None, date(2020, 6, 4)),
        ("P001", None, None, None, None, date(2020, 6, 3)),
    ]
    assert rows_of(transform.build_dim_country(views), "*") == [
        ("12", "glamira.fr", "FR", "France", "Europe", "001591273287123:e1", date(2020, 6, 4)),
        ("US", None, "US", "United States", "North America", None, date(2020, 6, 3)),
    ]
    assert rows_of(transform.build_dim_referrer(views), "*") == [
        ("https://l.facebook.com/l.php?u=x", "facebook.com", "social", date(2020, 6, 4)),
        ("https://www.google.com/", "google.com", "search", date(2020, 6, 4)),
    ]
    assert rows_of(transform.build_dim_device(views), "*") == [
        ("d1", "desktop", "Chrome 83.0 / Windows 10", "Chrome", "Windows 10", "001591273287123:e1", date(2020, 6, 4)),
        ("d2", "mobile", "Mobile Safari 13.0 / iOS 13.3", "Mobile Safari", "iOS 13.3", "001591232400000:e3", date(2020, 6, 4)),
        ("d3", "unknown", None, None, None, None, date(2020, 6, 3)),
    ]


def test_facts_measures(spark: SparkSession) -> None:
    base = {"collection": V, "product_id": "7", "store_id": "12", "device_id": "d1", "user_agent": CHROME_WIN, "event_date": "2020-06-04"}
    events = raw(
        spark,
        {**base, "event_id": "a", "event_time": "2020-06-04T10:00:00.000Z"},
        {**base, "event_id": "b", "event_time": "2020-06-04T10:00:01.500Z"},
        {**base, "event_id": "c", "event_time": "2020-06-04T10:05:00.250Z"},
        {**base, "event_id": "d", "event_time": "2020-06-04T11:00:00.000Z", "device_id": None},
        {**base, "event_id": "e", "event_time": "2020-06-04T12:00:00.000Z", "referrer_url": "https://www.bing.com/"},
    )
    views = transform.valid_views(transform.classify_events(transform.enrich_events(transform.clean_events(events)), (V,)))
    t0 = 1591264800000
    assert rows_of(transform.build_facts(views), "*") == sorted(
        [
        (20200604, date(2020, 6, 4), "7", "12", None, None, 1, 0, t0 + 3_600_000, t0 + 3_600_000, t0 + 3_600_000),
        (20200604, date(2020, 6, 4), "7", "12", None, "d1", 3, 1, t0, t0 + 300_250, 3 * t0 + 301_750),
        (20200604, date(2020, 6, 4), "7", "12", "https://www.bing.com/", "d1", 1, 1, t0 + 7_200_000, t0 + 7_200_000, t0 + 7_200_000),
        ],
        key=repr,
    )  # fmt: skip


def test_bots_counted_when_not_excluded(classified: DataFrame, spark: SparkSession) -> None:
    cleaned = transform.clean_events(raw(spark, MESSY[4]))
    kept = transform.classify_events(transform.enrich_events(cleaned), (V,), exclude_bots=False)
    assert rows_of(kept, "event_id", "skip_reason") == [("e5", None)]
