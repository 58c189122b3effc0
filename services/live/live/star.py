"""Read-only queries on the star schema behind the page's star section and ``/api/star/*``.

One :class:`StarReader` per process holds ONE asyncpg pool for the app's lifetime (created on
first use, so a database that is down at start only delays the star section; closed at shutdown).
Every connection is read only (``default_transaction_read_only``).

Every statement is a fixed text: the only thing formatted into it is the schema name, a plain
identifier validated by :class:`~live.settings.LiveSettings`. User input (dates, country, device
type, N) only ever travels as a bind parameter (``$1``…). A filter that is not set is passed as
NULL and switched off by ``$n::text IS NULL OR …``, so the statement never changes shape.

Labels, shared by filters and breakdowns (the dimension rows' own values, never invented):
country = ``country_name``, else the ``store_id``; referrer medium = ``referrer_type``, else
``unknown``; device type = ``device_type``, else ``unknown``; a product is its ``product_id``
with ``product_name`` (else the id) next to it.

A missing schema or table means "the ETL has not run yet": empty results, never an error. A
database that cannot be reached raises :class:`StarUnavailable` (the API answers 503, the page
says so).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Final, Literal

import asyncpg

from shared.errors import BackendUnavailableError
from shared.postgres import failures_of

log = logging.getLogger(__name__)

# what a failed call to the warehouse raises (shared.postgres)
POSTGRES_FAILURES = failures_of(asyncpg)

Dimension = Literal["product", "country", "medium", "device"]
DIMENSIONS: Final[tuple[Dimension, ...]] = ("product", "country", "medium", "device")
# Errors that mean "the ETL has not created this yet", not "the database is broken".
NOT_THERE_YET = (asyncpg.UndefinedTableError, asyncpg.UndefinedColumnError, asyncpg.InvalidSchemaNameError)
# Columns of etl_runs shown on the page, in this order, when the table has them.
RUN_COLUMNS = ("run_id", "mode", "status", "requested_at", "started_at", "finished_at", "error")

COUNTRY_LABEL = "COALESCE(NULLIF(c.country_name, ''), c.store_id)"
MEDIUM_LABEL = "COALESCE(NULLIF(r.referrer_type, ''), 'unknown')"
DEVICE_LABEL = "COALESCE(NULLIF(v.device_type, ''), 'unknown')"
# (key, name) of each breakdown.
DIMENSION_COLUMNS: Final[dict[Dimension, tuple[str, str]]] = {
    "product": ("p.product_id", "COALESCE(NULLIF(p.product_name, ''), p.product_id)"),
    "country": (COUNTRY_LABEL, COUNTRY_LABEL),
    "medium": (MEDIUM_LABEL, MEDIUM_LABEL),
    "device": (DEVICE_LABEL, DEVICE_LABEL),
}
# The fact with every dimension a breakdown or a filter reads; $1/$2 the dates, $3 country, $4 device.
FROM_WHERE = f"""
    FROM {{s}}.fact_product_views f
    JOIN {{s}}.dim_date d ON d.date_key = f.date_key
    JOIN {{s}}.dim_product p ON p.product_key = f.product_key
    JOIN {{s}}.dim_country c ON c.country_key = f.country_key
    JOIN {{s}}.dim_referrer r ON r.referrer_key = f.referrer_key
    JOIN {{s}}.dim_device v ON v.device_key = f.device_key
    WHERE d.date BETWEEN $1 AND $2
      AND ($3::text IS NULL OR {COUNTRY_LABEL} = $3)
      AND ($4::text IS NULL OR {DEVICE_LABEL} = $4)"""


class StarUnavailable(BackendUnavailableError):
    """PostgreSQL cannot be reached (or refused the query for another reason than a missing table)."""


@dataclass(frozen=True)
class StarFilter:
    """A date range (both ends included) and optional country / device-type labels."""

    date_from: date
    date_to: date
    country: str | None = None
    device: str | None = None

    def args(self) -> tuple[date, date, str | None, str | None]:
        return self.date_from, self.date_to, self.country or None, self.device or None


@dataclass(frozen=True)
class DataRange:
    """The dates that have facts (unknown date excluded) and the filter values that occur."""

    first: date | None
    last: date | None
    countries: list[str]
    devices: list[str]
    loaded_at: datetime | None = None  # the newest fact row's processed_at: how fresh the star is

    def default_range(self, days: int) -> tuple[date, date] | None:
        """The last ``days`` days up to the last date with data (not the wall clock)."""
        if self.last is None:
            return None
        return self.last - timedelta(days=days - 1), self.last


def top_sql(schema: str, dimension: Dimension) -> str:
    """Top-N of one dimension: rows (key, name, views), largest first, ties by key (bytewise); $5 = N."""
    key, name = DIMENSION_COLUMNS[dimension]
    return (
        f"SELECT {key} AS key, {name} AS name, SUM(f.view_count)::bigint AS views"
        + FROM_WHERE.format(s=schema)
        + "\n    GROUP BY 1, 2 HAVING SUM(f.view_count) > 0"
        + f'\n    ORDER BY SUM(f.view_count) DESC, {key} COLLATE "C", {name} COLLATE "C" LIMIT $5'
    )


def views_per_day_sql(schema: str) -> str:
    """Views per day over every day of the range, days without facts as 0: rows (day, views)."""
    return (
        "SELECT g.day::date AS day, COALESCE(x.views, 0)::bigint AS views\n"
        "FROM generate_series($1::date, $2::date, interval '1 day') AS g(day)\n"
        "LEFT JOIN (SELECT d.date, SUM(f.view_count) AS views"
        + FROM_WHERE.format(s=schema)
        + "\n    GROUP BY d.date) x ON x.date = g.day::date\nORDER BY 1"
    )


def range_sql(schema: str) -> str:
    """First and last date with facts (the unknown date excluded), and when the ETL last wrote a fact."""
    return (
        f"SELECT min(d.date) AS first, max(d.date) AS last, max(f.processed_at) AS loaded_at FROM {schema}.fact_product_views f "
        f"JOIN {schema}.dim_date d ON d.date_key = f.date_key WHERE f.date_key <> 0"
    )


def labels_sql(schema: str, label: str, table: str, alias: str, key: str) -> str:
    """The distinct labels of one dimension that facts point to, most viewed first."""
    return (
        f"SELECT {label} AS label FROM {schema}.fact_product_views f JOIN {schema}.{table} {alias} "
        f'ON {alias}.{key} = f.{key} GROUP BY 1 ORDER BY SUM(f.view_count) DESC, {label} COLLATE "C"'
    )


def names_sql(schema: str) -> str:
    return f"SELECT product_id, product_name FROM {schema}.dim_product WHERE product_id = ANY($1::text[])"


def _text(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if value is None or isinstance(value, (int, float, str, bool)):
        return value
    return str(value)


class StarReader:
    """The page's and the API's only way to PostgreSQL: one pool, created once, reused."""

    def __init__(self, dsn: str | None, schema: str, *, timeout_s: float, pool_max: int = 4, application_name: str = "live") -> None:
        self.dsn, self.schema, self.timeout_s = dsn, schema, timeout_s
        self.pool_max, self.application_name = pool_max, application_name
        self._pool: asyncpg.Pool | None = None
        self._lock = asyncio.Lock()
        self.pools_created = 0

    async def pool(self) -> asyncpg.Pool:
        if self._pool is not None:
            return self._pool
        if not self.dsn:
            raise StarUnavailable("no POSTGRES_DSN configured")
        async with self._lock:
            if self._pool is None:
                try:
                    self._pool = await asyncpg.create_pool(
                        self.dsn,
                        min_size=1,
                        max_size=self.pool_max,
                        timeout=self.timeout_s,
                        command_timeout=self.timeout_s,
                        server_settings={"default_transaction_read_only": "on", "application_name": self.application_name},
                    )
                except POSTGRES_FAILURES as exc:
                    log.warning("star schema unreadable: %s", exc)
                    raise StarUnavailable(f"PostgreSQL unavailable: {type(exc).__name__}") from exc
                self.pools_created += 1
        return self._pool

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        pool = await self.pool()
        try:
            return list(await pool.fetch(sql, *args))
        except NOT_THERE_YET:
            return []
        except POSTGRES_FAILURES as exc:
            log.warning("star schema query failed: %s", exc)
            raise StarUnavailable(f"PostgreSQL query failed: {type(exc).__name__}") from exc

    async def data_range(self) -> DataRange:
        s = self.schema
        bounds = await self._fetch(range_sql(s))
        countries = await self._fetch(labels_sql(s, COUNTRY_LABEL, "dim_country", "c", "country_key"))
        devices = await self._fetch(labels_sql(s, DEVICE_LABEL, "dim_device", "v", "device_key"))
        first, last, loaded = (bounds[0]["first"], bounds[0]["last"], bounds[0]["loaded_at"]) if bounds else (None, None, None)
        return DataRange(first, last, [r["label"] for r in countries], [r["label"] for r in devices], loaded)

    async def top(self, dimension: Dimension, flt: StarFilter, n: int) -> list[tuple[str, str, int]]:
        rows = await self._fetch(top_sql(self.schema, dimension), *flt.args(), n)
        return [(str(r["key"]), str(r["name"]), int(r["views"])) for r in rows]

    async def views_per_day(self, flt: StarFilter) -> list[tuple[date, int]]:
        rows = await self._fetch(views_per_day_sql(self.schema), *flt.args())
        if not any(r["views"] for r in rows):
            return []  # no fact in the range (or no table): "no data", not a row of zeros
        return [(r["day"], int(r["views"])) for r in rows]

    async def product_names(self, product_ids: Sequence[str]) -> dict[str, str]:
        """``dim_product`` names of these ids (ids the ETL has not seen yet are absent)."""
        if not product_ids:
            return {}
        rows = await self._fetch(names_sql(self.schema), list(product_ids))
        return {r["product_id"]: r["product_name"] for r in rows if r["product_name"]}

    async def recent_runs(self, limit: int) -> list[dict[str, Any]] | None:
        """The last ``limit`` ETL runs, newest first; None when ``etl_runs`` exists but this role
        may not read it (a read-only analyst role is granted the star schema, not the ETL's
        bookkeeping)."""
        access = await self._fetch(
            "SELECT to_regclass($1) IS NOT NULL AS present, COALESCE(has_table_privilege(to_regclass($1), 'SELECT'), false) AS readable",
            f"{self.schema}.etl_runs",
        )
        if not access or not access[0]["present"]:
            return []
        if not access[0]["readable"]:
            return None
        columns = [
            r["column_name"]
            for r in await self._fetch(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = $1 AND table_name = 'etl_runs'", self.schema
            )
        ]
        shown = [c for c in RUN_COLUMNS if c in columns]
        if not shown:
            return []
        order = next((c for c in ("requested_at", "started_at", "finished_at") if c in columns), None)
        sql = f"SELECT {', '.join(shown)} FROM {self.schema}.etl_runs"
        sql += f" ORDER BY {order} DESC NULLS LAST" if order else ""
        rows = await self._fetch(sql + " LIMIT $1", limit)
        return [{c: _text(r[c]) for c in shown} for r in rows]
