"""The star's frames from classified events (:mod:`etl_api.transform`): the four dimensions and
the facts, each a :class:`Frame` — the keys it groups valid views by, the keys whose NULL is no
member, its aggregates and its columns. Two ways to compute them, with the same rows:

- :func:`build`: one Spark job per frame, for a run of any size (each frame cached or streamed
  back to the load on its own);
- :func:`build_together`: every frame **and** the run's counts (:func:`etl_api.transform.run_counts`)
  in one Spark job, collected in the driver: for a micro-batch of a few thousand events, whose
  six separate jobs are mostly scheduling, shuffle and adaptive re-planning latency. Each
  classified row is expanded once per grouping set (what Spark's own ``GROUPING SETS`` does), the
  set's id and its masked keys are the grouping, and every set's aggregates run in one pass.
  Invalid rows keep their ``skip_reason`` in the grouping, so a frame's groups hold valid views
  only, exactly as :func:`build` reads them.

Attributes of a dimension member come from the member's **latest** valid event (by ``ts_ms``,
then ``event_id``) that carries the attribute, so the choice is deterministic.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from etl_api.transform import LEDGER_DATE, LEDGER_HOUR, code_country_udf

FACT_GRAIN = ("event_date", "product_id", "store_id", "referrer_url", "device_id")
NAMES = ("dim_product", "dim_country", "dim_referrer", "dim_device", "facts")
COUNTS = "counts"  # build_together's rows of run_counts
_COUNT_KEYS = (LEDGER_HOUR, LEDGER_DATE, "skip_reason")
_SET, _KEY = "_set", "_k_"
_COUNTRY_FIELDS = ("country_code", "country_name", "region")


@dataclass(frozen=True)
class Frame:
    keys: tuple[str, ...]  # grouped by (over valid views)
    required: tuple[str, ...]  # keys whose NULL is not a member: such rows are not grouped
    aggregates: tuple[tuple[str, Column], ...]  # (name, aggregate); one name means one expression in every frame
    columns: tuple[Column, ...]  # the frame's columns, from its keys and aggregates


def _source(latest: str) -> Column:
    """``attributes_source`` of a ``_latest`` struct: "<epoch ms, 15 digits>:<event_id>" (sorts by time)."""
    return F.concat(F.lpad(F.col(f"{latest}.ts_ms").cast("string"), 15, "0"), F.lit(":"), F.col(f"{latest}.event_id")).alias(
        "attributes_source"
    )


def _latest(name: str, condition: Column, *fields: str) -> tuple[str, Column]:
    """max over struct(ts_ms, event_id, fields…) of the rows meeting ``condition``: the latest event's values."""
    return name, F.max(F.when(condition, F.struct(F.col("ts_ms"), F.col("event_id"), *[F.col(f) for f in fields])))


def _created() -> tuple[str, Column]:
    return "created_date", F.min("event_date")


def _dim_product() -> Frame:
    """product_id, product_name, product_slug, category, attributes_source, created_date (first view date)."""
    return Frame(
        ("product_id",),
        ("product_id",),
        (_created(), _latest("_p", F.col("product_name").isNotNull(), "product_name", "product_slug", "category")),
        (
            F.col("product_id"),
            *(F.col(f"_p.{f}").alias(f) for f in ("product_name", "product_slug", "category")),
            _source("_p"),
            F.col("created_date"),
        ),
    )


def _dim_country() -> Frame:
    """store_id, site_domain, country_code, country_name, region, attributes_source, created_date.

    The store's country is its site's (latest event with a page URL); a store seen without any
    page URL whose id is an ISO country code (the seed's "US") gets that country."""
    by_code = code_country_udf()(F.col("store_id"))
    no_site = F.col("_s").isNull()
    return Frame(
        ("store_id",),
        ("store_id",),
        (_created(), _latest("_s", F.col("site_domain").isNotNull(), "site_domain", "country_code", "country_name", "region")),
        (
            F.col("store_id"),
            F.col("_s.site_domain").alias("site_domain"),
            *(F.when(no_site, by_code.getField(f)).otherwise(F.col(f"_s.{f}")).alias(f) for f in _COUNTRY_FIELDS),
            _source("_s"),
            F.col("created_date"),
        ),
    )


def _dim_referrer() -> Frame:
    """referrer_url, referrer_domain, referrer_type, created_date (views without a referrer use key 0)."""
    return Frame(
        ("referrer_url",),
        ("referrer_url",),
        (("_referrer_domain", F.max("referrer_domain")), ("_referrer_type", F.max("referrer_type")), _created()),
        (
            F.col("referrer_url"),
            F.col("_referrer_domain").alias("referrer_domain"),
            F.col("_referrer_type").alias("referrer_type"),
            F.col("created_date"),
        ),
    )


def _dim_device() -> Frame:
    """device_id, device_type, browser_info, browser, os, attributes_source, created_date (latest event with a user agent)."""
    return Frame(
        ("device_id",),
        ("device_id",),
        (_created(), _latest("_d", F.col("user_agent").isNotNull(), "device_type", "browser_info", "browser", "os")),
        (
            F.col("device_id"),
            F.coalesce(F.col("_d.device_type"), F.lit("unknown")).alias("device_type"),
            *(F.col(f"_d.{f}").alias(f) for f in ("browser_info", "browser", "os")),
            _source("_d"),
            F.col("created_date"),
        ),
    )


def _facts() -> Frame:
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
    row merged with the new events of an incremental run alike."""
    date = F.col("event_date")
    return Frame(
        FACT_GRAIN,
        (),
        (
            ("_view_count", F.count(F.lit(1))),
            # device_id is part of the grain: its distinct count in a group is 1, or 0 when NULL. Said
            # as a max, so the aggregation is one pass (countDistinct adds an Expand and a second
            # aggregation, and ran a 3 M-event run out of heap).
            ("_unique_visitors", F.max(F.when(F.col("device_id").isNotNull(), 1).otherwise(0))),
            ("_first_ms", F.min("ts_ms")),
            ("_last_ms", F.max("ts_ms")),
            ("_sum_ms", F.sum("ts_ms")),
        ),
        (
            (F.year(date) * 10000 + F.month(date) * 100 + F.dayofmonth(date)).cast("int").alias("date_key"),
            *(F.col(k) for k in FACT_GRAIN),
            F.col("_view_count").cast("int").alias("view_count"),
            F.col("_unique_visitors").cast("int").alias("unique_visitors"),
            F.col("_first_ms").alias("first_ms"),
            F.col("_last_ms").alias("last_ms"),
            F.col("_sum_ms").cast("long").alias("sum_ms"),
        ),
    )


def frames() -> dict[str, Frame]:
    """The five frames by table name (:data:`NAMES`); built on call: a ``Column`` needs a live session."""
    return dict(zip(NAMES, (_dim_product(), _dim_country(), _dim_referrer(), _dim_device(), _facts()), strict=True))


def build(views: DataFrame, name: str) -> DataFrame:
    """The frame ``name`` of valid views (:func:`etl_api.transform.valid_views`), as its own Spark job."""
    frame = frames()[name]
    rows = views
    for key in frame.required:
        rows = rows.where(F.col(key).isNotNull())
    return rows.groupBy(*frame.keys).agg(*(agg.alias(name) for name, agg in frame.aggregates)).select(*frame.columns)


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def build_together(classified: DataFrame) -> dict[str, list[Any]]:
    """Every frame's rows (as :func:`build` gives them) and the run's counts (:data:`COUNTS`, as
    :func:`etl_api.transform.run_counts` gives them) from classified events, in one Spark job
    collected in the driver (see the module): for inputs small enough to hold there."""
    specs = frames()
    sets = [(*f.keys, "skip_reason") for f in specs.values()] + [_COUNT_KEYS]
    keys = _unique(k for s in sets for k in s)
    aggregates: dict[str, Column] = {"n": F.count(F.lit(1))}
    for frame in specs.values():
        aggregates.update(frame.aggregates)
    set_id = F.explode(F.array(*(F.lit(i) for i in range(len(sets))))).alias(_SET)
    expanded = classified.select("*", set_id)
    masked = [F.when(F.col(_SET).isin(*[i for i, s in enumerate(sets) if k in s]), F.col(k)).alias(_KEY + k) for k in keys]
    grouped = expanded.groupBy(F.col(_SET), *masked).agg(*(agg.alias(name) for name, agg in aggregates.items()))
    named = grouped.select(F.col(_SET), *(F.col(_KEY + k).alias(k) for k in keys), *aggregates)
    wanted = F.col(_SET) == len(specs)
    for i, frame in enumerate(specs.values()):
        member = F.col("skip_reason").isNull()
        for key in frame.required:
            member = member & F.col(key).isNotNull()
        wanted = wanted | ((F.col(_SET) == i) & member)
    out = named.where(wanted).select(
        F.col(_SET),
        *(F.when(F.col(_SET) == i, F.struct(*frame.columns)).alias(name) for i, (name, frame) in enumerate(specs.items())),
        F.when(F.col(_SET) == len(specs), F.struct(*_COUNT_KEYS, "n")).alias(COUNTS),
    )
    names = [*specs, COUNTS]
    rows: dict[str, list[Any]] = {name: [] for name in names}
    for row in out.collect():
        name = names[row[_SET]]
        rows[name].append(row[name])
    return rows
