"""Transform: pure DataFrame → DataFrame functions (no sessions, clients, paths, env or clock).

Pipeline of a run::

    raw (extract.RAW_FIELDS, all strings)
      → clean_events        normalized types: trimmed ids, '' → NULL, ts_ms (UTC epoch ms), event_date
      → enrich_events       + device (user agent), referrer (domain, medium), site/country, product slug/name
      → classify_events     + skip_reason (NULL = a valid product view; implausible event times are skipped)
      → build_dim_product / build_dim_country / build_dim_referrer / build_dim_device / build_facts

Attributes of a dimension member come from the member's **latest** valid event (by ``ts_ms``,
then ``event_id``) that carries the attribute, so the choice is deterministic. Dimensions and facts
are built from valid views only, so a skipped event (a bot, an implausible event time) is never a
member's evidence.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from etl_api.extract import RAW_FIELDS
from shared.event import EVENT_TIME_FLOOR, EVENT_TIME_MAX_AHEAD_S

if TYPE_CHECKING:
    from pyspark.sql._typing import UserDefinedFunctionLike

RAW_SCHEMA = T.StructType([T.StructField(name, T.StringType(), True) for name in RAW_FIELDS])

LEDGER_HOUR, LEDGER_DATE = "ledger_hour", "ledger_date"

SKIP_NOT_PRODUCT_VIEW = "not_product_view"
SKIP_MISSING_PRODUCT_ID = "missing_product_id"
SKIP_MISSING_EVENT_TIME = "missing_event_time"
SKIP_IMPLAUSIBLE_EVENT_TIME = "implausible_event_time"
SKIP_BOT = "bot"

# shared.event's plausible-time defaults (the ETL's settings ETL_EVENT_TIME_FLOOR / _MAX_AHEAD_S)
DEFAULT_TIME_FLOOR_MS = int(datetime.fromisoformat(EVENT_TIME_FLOOR).timestamp() * 1000)
DEFAULT_MAX_AHEAD_MS = int(EVENT_TIME_MAX_AHEAD_S * 1000)

_NULL_TEXTS = ("", "null", "none", "nan", "undefined")

_DEVICE_SCHEMA = T.StructType(
    [
        T.StructField("device_type", T.StringType()),
        T.StructField("browser", T.StringType()),
        T.StructField("browser_info", T.StringType()),
        T.StructField("os", T.StringType()),
        T.StructField("is_bot", T.BooleanType()),
    ]
)
_REFERRER_SCHEMA = T.StructType([T.StructField("referrer_domain", T.StringType()), T.StructField("referrer_type", T.StringType())])
_PAGE_SCHEMA = T.StructType(
    [
        T.StructField("site_domain", T.StringType()),
        T.StructField("country_code", T.StringType()),
        T.StructField("country_name", T.StringType()),
        T.StructField("region", T.StringType()),
        T.StructField("product_slug", T.StringType()),
        T.StructField("product_name", T.StringType()),
        T.StructField("category", T.StringType()),
    ]
)
_COUNTRY_SCHEMA = T.StructType(
    [T.StructField("country_code", T.StringType()), T.StructField("country_name", T.StringType()), T.StructField("region", T.StringType())]
)


def _clean_text(col: Column) -> Column:
    trimmed = F.trim(col)
    return F.when(trimmed.isNull() | F.lower(trimmed).isin(*_NULL_TEXTS), F.lit(None).cast("string")).otherwise(trimmed)


def _clean_id(col: Column) -> Column:
    """Ids as text: trimmed, empty → NULL, "110474.0" → "110474" (ids that went through a float)."""
    text = _clean_text(col)
    return F.when(text.rlike(r"^-?\d+\.0+$"), F.regexp_extract(text, r"^(-?\d+)\.", 1)).otherwise(text)


def clean_events(raw: DataFrame) -> DataFrame:
    """Normalize raw rows: ids, empty strings, the event time in UTC epoch ms and the event date.

    ``ts_ms`` comes from the bridge's ``event_time`` (ISO-8601), else the Glamira ``time_stamp``
    (unix seconds), else the seed's ``timestamp`` (ISO-8601); unpadded hours ("2020-06-04 9:05:11")
    parse. ``event_date`` is the sink's partition date (what date reads select by), else the UTC
    date of ``ts_ms``.
    """
    event_time = _clean_text(F.col("event_time"))
    seed_time = _clean_text(F.col("timestamp"))
    unix_s = _clean_text(F.col("time_stamp"))
    ts_ms = F.coalesce(
        F.when(event_time.isNotNull(), F.unix_millis(event_time.cast("timestamp"))),
        F.when(unix_s.rlike(r"^\d+(\.\d+)?$"), (unix_s.cast("double") * 1000).cast("long")),
        F.when(seed_time.isNotNull(), F.unix_millis(seed_time.cast("timestamp"))),
    )
    date_text = _clean_text(F.col("event_date"))
    event_date = F.coalesce(
        F.when(date_text.rlike(r"^\d{4}-\d{2}-\d{2}$"), F.to_date(date_text, "yyyy-MM-dd")),
        F.to_date(F.timestamp_millis(ts_ms)),
    )
    return raw.select(
        _clean_text(F.col("event_id")).alias("event_id"),
        _clean_text(F.col("collection")).alias("collection"),
        _clean_id(F.col("product_id")).alias("product_id"),
        _clean_id(F.col("store_id")).alias("store_id"),
        _clean_id(F.col("device_id")).alias("device_id"),
        _clean_text(F.col("user_agent")).alias("user_agent"),
        _clean_text(F.col("referrer_url")).alias("referrer_url"),
        _clean_text(F.col("current_url")).alias("current_url"),
        ts_ms.alias("ts_ms"),
        event_date.alias("event_date"),
        _clean_text(F.col("ingested_at")).alias("ingested_at"),
        # the hour ledger's keys (etl_api.ledger): the document's own ingest_hour and event_date, as read
        F.coalesce(F.col("ingest_hour"), F.lit("")).alias(LEDGER_HOUR),
        F.coalesce(F.col("event_date"), F.lit("")).alias(LEDGER_DATE),
    )


# ---- enrichment (Python lookups from etl_api.enrich, applied to distinct values only)


def _device_udf() -> UserDefinedFunctionLike:
    def parse(user_agent: str) -> tuple[str, str | None, str | None, str | None, bool]:
        from etl_api.enrich import parse_user_agent

        info = parse_user_agent(user_agent or None)
        return (info.device_type, info.browser, info.browser_info, info.os, info.is_bot)

    return F.udf(parse, _DEVICE_SCHEMA)


def _referrer_udf(internal_domains: tuple[str, ...]) -> UserDefinedFunctionLike:
    def classify(url: str) -> tuple[str | None, str]:
        from etl_api.enrich import classify_referrer_cached

        info = classify_referrer_cached(url or None, internal_domains)
        return (info.domain, info.medium)

    return F.udf(classify, _REFERRER_SCHEMA)


def _page_udf() -> UserDefinedFunctionLike:
    def page(url: str) -> tuple[str | None, ...]:
        from etl_api.enrich import page_attributes

        return page_attributes(url)

    return F.udf(page, _PAGE_SCHEMA)


def _code_country_udf() -> UserDefinedFunctionLike:
    def by_code(store_id: str) -> tuple[str, str, str] | None:
        from etl_api.enrich import country_of_code

        country = country_of_code(store_id)
        return (country.code, country.name, country.region) if country else None

    return F.udf(by_code, _COUNTRY_SCHEMA)


def enrich_events(events: DataFrame, internal_domains: tuple[str, ...] = ("glamira",)) -> DataFrame:
    """Add device (type, browser, OS, bot flag), referrer (domain, medium), page (site, country, product) columns.

    One Python evaluation per row for the three lookups (Spark batches them into one Python
    stage, no shuffle); the lookups are memoized per worker, and real data repeats a few thousand
    user agents, referrers and product URLs millions of times.
    """
    device = _device_udf()(F.coalesce(F.col("user_agent"), F.lit("")))
    referrer = _referrer_udf(tuple(internal_domains))(F.coalesce(F.col("referrer_url"), F.lit("")))
    page = _page_udf()(F.coalesce(F.col("current_url"), F.lit("")))
    with_structs = events.select("*", device.alias("_device"), referrer.alias("_referrer"), page.alias("_page"))
    return with_structs.select(
        *events.columns,
        *[F.col(f"_device.{f}").alias(f) for f in _DEVICE_SCHEMA.fieldNames()],
        *[F.col(f"_referrer.{f}").alias(f) for f in _REFERRER_SCHEMA.fieldNames()],
        *[F.col(f"_page.{f}").alias(f) for f in _PAGE_SCHEMA.fieldNames()],
    )


def implausible_event_time(time_floor_ms: int = DEFAULT_TIME_FLOOR_MS, max_ahead_ms: int = DEFAULT_MAX_AHEAD_MS) -> Column:
    """True for an event time (``ts_ms``) before the floor or later than its document's
    ``ingested_at`` (the sink's stamp) + ``max_ahead_ms``; NULL/False otherwise. Without a
    parseable ``ingested_at`` only the floor applies."""
    ingested_ms = F.unix_millis(F.col("ingested_at").cast("timestamp"))
    return (F.col("ts_ms") < F.lit(time_floor_ms)) | (ingested_ms.isNotNull() & (F.col("ts_ms") > ingested_ms + F.lit(max_ahead_ms)))


def classify_events(
    events: DataFrame,
    product_view_types: Iterable[str],
    exclude_bots: bool = True,
    time_floor_ms: int = DEFAULT_TIME_FLOOR_MS,
    max_ahead_ms: int = DEFAULT_MAX_AHEAD_MS,
) -> DataFrame:
    """Add ``skip_reason``: NULL for a valid product view, else why it is not counted (first that
    applies): ``not_product_view``, ``missing_product_id``, ``missing_event_time``,
    ``implausible_event_time`` (:func:`implausible_event_time`), ``bot``."""
    reason = (
        F.when(F.col("collection").isNull() | ~F.col("collection").isin(*list(product_view_types)), F.lit(SKIP_NOT_PRODUCT_VIEW))
        .when(F.col("product_id").isNull(), F.lit(SKIP_MISSING_PRODUCT_ID))
        .when(F.col("ts_ms").isNull() | F.col("event_date").isNull(), F.lit(SKIP_MISSING_EVENT_TIME))
        .when(F.coalesce(implausible_event_time(time_floor_ms, max_ahead_ms), F.lit(False)), F.lit(SKIP_IMPLAUSIBLE_EVENT_TIME))
    )
    if exclude_bots:
        reason = reason.when(F.coalesce(F.col("is_bot"), F.lit(False)), F.lit(SKIP_BOT))
    return events.withColumn("skip_reason", reason.otherwise(F.lit(None).cast("string")))


def valid_views(events: DataFrame) -> DataFrame:
    return events.where(F.col("skip_reason").isNull())


def _source(latest: str) -> Column:
    """``attributes_source`` of a ``_latest`` struct: "<epoch ms, 15 digits>:<event_id>" (sorts by time)."""
    return F.concat(F.lpad(F.col(f"{latest}.ts_ms").cast("string"), 15, "0"), F.lit(":"), F.col(f"{latest}.event_id")).alias(
        "attributes_source"
    )


def _latest(condition: Column, *fields: str) -> Column:
    """max over struct(ts_ms, event_id, fields…) of the rows meeting ``condition``: the latest event's values."""
    return F.max(F.when(condition, F.struct(F.col("ts_ms"), F.col("event_id"), *[F.col(f) for f in fields])))


def build_dim_product(views: DataFrame) -> DataFrame:
    """product_id, product_name, product_slug, category, attributes_source, created_date (first view date)."""
    agg = views.groupBy("product_id").agg(
        F.min("event_date").alias("created_date"),
        _latest(F.col("product_name").isNotNull(), "product_name", "product_slug", "category").alias("_p"),
    )
    return agg.select(
        "product_id",
        F.col("_p.product_name").alias("product_name"),
        F.col("_p.product_slug").alias("product_slug"),
        F.col("_p.category").alias("category"),
        _source("_p"),
        "created_date",
    )


def build_dim_country(views: DataFrame) -> DataFrame:
    """store_id, site_domain, country_code, country_name, region, attributes_source, created_date.

    The store's country is its site's (latest event with a page URL); a store seen without any
    page URL whose id is an ISO country code (the seed's "US") gets that country.
    """
    stores = views.where(F.col("store_id").isNotNull())
    agg = stores.groupBy("store_id").agg(
        F.min("event_date").alias("created_date"),
        _latest(F.col("site_domain").isNotNull(), "site_domain", "country_code", "country_name", "region").alias("_s"),
    )
    by_code = _code_country_udf()(F.col("store_id"))
    no_site = F.col("_s").isNull()
    return agg.select(
        "store_id",
        F.col("_s.site_domain").alias("site_domain"),
        F.when(no_site, by_code.getField("country_code")).otherwise(F.col("_s.country_code")).alias("country_code"),
        F.when(no_site, by_code.getField("country_name")).otherwise(F.col("_s.country_name")).alias("country_name"),
        F.when(no_site, by_code.getField("region")).otherwise(F.col("_s.region")).alias("region"),
        _source("_s"),
        "created_date",
    )


def build_dim_referrer(views: DataFrame) -> DataFrame:
    """referrer_url, referrer_domain, referrer_type, created_date (views without a referrer use key 0)."""
    return (
        views.where(F.col("referrer_url").isNotNull())
        .groupBy("referrer_url")
        .agg(
            F.max("referrer_domain").alias("referrer_domain"),
            F.max("referrer_type").alias("referrer_type"),
            F.min("event_date").alias("created_date"),
        )
    )


def build_dim_device(views: DataFrame) -> DataFrame:
    """device_id, device_type, browser_info, browser, os, attributes_source, created_date (latest event with a user agent)."""
    agg = (
        views.where(F.col("device_id").isNotNull())
        .groupBy("device_id")
        .agg(
            F.min("event_date").alias("created_date"),
            _latest(F.col("user_agent").isNotNull(), "device_type", "browser_info", "browser", "os").alias("_d"),
        )
    )
    return agg.select(
        "device_id",
        F.coalesce(F.col("_d.device_type"), F.lit("unknown")).alias("device_type"),
        F.col("_d.browser_info").alias("browser_info"),
        F.col("_d.browser").alias("browser"),
        F.col("_d.os").alias("os"),
        _source("_d"),
        "created_date",
    )


FACT_GRAIN = ("event_date", "product_id", "store_id", "referrer_url", "device_id")


def build_facts(views: DataFrame) -> DataFrame:
    """One row per grain (date × product × store × referrer × device) with the **mergeable**
    aggregates of its events (two such rows of one grain combine exactly: sum, max, min, max, sum):

    - ``view_count``: valid product-view events in the group;
    - ``unique_visitors``: distinct ``device_id`` in the group (device is part of the grain, so
      1, or 0 for views without a device id; distinct visitors over coarser groups are
      ``COUNT(DISTINCT device_key)``, as the ``v_daily_*`` views do);
    - ``first_ms`` / ``last_ms``: earliest / latest event time (UTC epoch ms);
    - ``sum_ms``: exact integer sum of the event times (ms).

    The derived measures — ``avg_view_timestamp`` (``sum_ms / view_count / 1000``) and
    ``view_duration_seconds`` (whole seconds from first to last) — are computed in one place, by
    the load in PostgreSQL (:func:`etl_api.load.fact_insert_sql`), for a rebuilt row and for a
    row merged with the new events of an incremental run alike.
    """
    agg = views.groupBy(*FACT_GRAIN).agg(
        F.count(F.lit(1)).alias("view_count"),
        # device_id is part of the grain: its distinct count in a group is 1, or 0 when NULL. Said
        # as a max, so the aggregation is one pass (countDistinct adds an Expand and a second
        # aggregation, and ran a 3 M-event run out of heap).
        F.max(F.when(F.col("device_id").isNotNull(), 1).otherwise(0)).alias("unique_visitors"),
        F.min("ts_ms").alias("first_ms"),
        F.max("ts_ms").alias("last_ms"),
        F.sum("ts_ms").alias("sum_ms"),
    )
    return agg.select(
        (F.year("event_date") * 10000 + F.month("event_date") * 100 + F.dayofmonth("event_date")).cast("int").alias("date_key"),
        *FACT_GRAIN,
        F.col("view_count").cast("int").alias("view_count"),
        F.col("unique_visitors").cast("int").alias("unique_visitors"),
        "first_ms",
        "last_ms",
        F.col("sum_ms").cast("long").alias("sum_ms"),
    )


def ledger_counts(events: DataFrame) -> DataFrame:
    """The hour ledger's rows of classified events: (ledger_hour, ledger_date, events, valid)."""
    return events.groupBy(LEDGER_HOUR, LEDGER_DATE).agg(
        F.count(F.lit(1)).alias("events"), F.count(F.when(F.col("skip_reason").isNull(), 1)).alias("valid")
    )


def skip_counts(events: DataFrame) -> DataFrame:
    """skip_reason (NULL = valid), n."""
    return events.groupBy("skip_reason").agg(F.count(F.lit(1)).alias("n"))


def run_counts(events: DataFrame) -> DataFrame:
    """(ledger_hour, ledger_date, skip_reason, n) of classified events: both
    :func:`skip_counts` and :func:`ledger_counts` follow from it (:func:`split_run_counts`), so a
    run counts its events in one Spark job instead of two."""
    return events.groupBy(LEDGER_HOUR, LEDGER_DATE, "skip_reason").agg(F.count(F.lit(1)).alias("n"))


def split_run_counts(rows: Iterable[Any]) -> tuple[dict[str | None, int], list[tuple[Any, Any, int, int]]]:
    """:func:`run_counts`' rows as (skip counts by reason, None = valid; hour ledger rows
    (ledger_hour, ledger_date, events, valid))."""
    skips: dict[str | None, int] = {}
    ledger: dict[tuple[Any, Any], list[int]] = {}
    for r in rows:
        n = int(r["n"])
        skips[r["skip_reason"]] = skips.get(r["skip_reason"], 0) + n
        counts = ledger.setdefault((r[LEDGER_HOUR], r[LEDGER_DATE]), [0, 0])
        counts[0] += n
        if r["skip_reason"] is None:
            counts[1] += n
    return skips, [(hour, day, events, valid) for (hour, day), (events, valid) in ledger.items()]
