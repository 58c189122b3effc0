"""Read-only queries on the star schema for the page. A missing or empty schema is "no data yet".

Every query is independent: a schema where the ETL has created ``fact_product_views`` but not
``etl_runs`` yet still shows the plots it can. Errors of the database itself (down, wrong
password) are reported as ``error`` on the snapshot instead of failing the page.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import asyncpg

log = logging.getLogger(__name__)

# (label, count) rows of each plot; the SQL is formatted with the (validated) schema name.
BREAKDOWNS: dict[str, str] = {
    "views_per_day": """
        SELECT d.date AS label, SUM(f.view_count)::bigint AS views
        FROM {s}.fact_product_views f JOIN {s}.dim_date d ON d.date_key = f.date_key
        GROUP BY d.date ORDER BY d.date DESC LIMIT $1""",
    "views_per_country": """
        SELECT COALESCE(NULLIF(c.country_name, ''), c.store_id) AS label, SUM(f.view_count)::bigint AS views
        FROM {s}.fact_product_views f JOIN {s}.dim_country c ON c.country_key = f.country_key
        GROUP BY 1 ORDER BY views DESC, label LIMIT $1""",
    "views_per_referrer_medium": """
        SELECT COALESCE(NULLIF(r.referrer_type, ''), 'unknown') AS label, SUM(f.view_count)::bigint AS views
        FROM {s}.fact_product_views f JOIN {s}.dim_referrer r ON r.referrer_key = f.referrer_key
        GROUP BY 1 ORDER BY views DESC, label LIMIT $1""",
    "views_per_device_type": """
        SELECT COALESCE(NULLIF(v.device_type, ''), 'unknown') AS label, SUM(f.view_count)::bigint AS views
        FROM {s}.fact_product_views f JOIN {s}.dim_device v ON v.device_key = f.device_key
        GROUP BY 1 ORDER BY views DESC, label LIMIT $1""",
}
BREAKDOWN_LIMITS = {"views_per_day": 31, "views_per_country": 15, "views_per_referrer_medium": 10, "views_per_device_type": 10}
# Columns of etl_runs shown on the page, in this order, when the table has them.
RUN_COLUMNS = ("run_id", "mode", "status", "requested_at", "started_at", "finished_at", "error")
# Errors that mean "the ETL has not created this yet", not "the database is broken".
NOT_THERE_YET = (asyncpg.UndefinedTableError, asyncpg.UndefinedColumnError, asyncpg.InvalidSchemaNameError)


@dataclass
class StarSnapshot:
    """What the page shows from the star schema: breakdowns oldest/largest first, recent runs."""

    breakdowns: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    etl_runs: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "breakdowns": {name: [{"label": label, "views": views} for label, views in rows] for name, rows in self.breakdowns.items()},
            "etl_runs": self.etl_runs,
            "error": self.error,
        }


def _text(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if value is None or isinstance(value, (int, float, str, bool)):
        return value
    return str(value)


async def read_star(dsn: str | None, schema: str, *, runs_limit: int, timeout_s: float) -> StarSnapshot:
    """One snapshot of the star schema; never raises for a missing schema, table or database."""
    snapshot = StarSnapshot(breakdowns={name: [] for name in BREAKDOWNS})
    if not dsn:
        snapshot.error = "no POSTGRES_DSN configured"
        return snapshot
    try:
        read_only = {"default_transaction_read_only": "on"}
        conn = await asyncpg.connect(dsn, timeout=timeout_s, command_timeout=timeout_s, server_settings=read_only)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        snapshot.error = f"PostgreSQL unavailable: {type(exc).__name__}"
        log.warning("star schema unreadable: %s", exc)
        return snapshot
    try:
        for name, sql in BREAKDOWNS.items():
            try:
                rows = await conn.fetch(sql.format(s=schema), BREAKDOWN_LIMITS[name])
            except NOT_THERE_YET:
                continue
            pairs = [(str(_text(r["label"])), int(r["views"] or 0)) for r in rows]
            snapshot.breakdowns[name] = pairs[::-1] if name == "views_per_day" else pairs
        snapshot.etl_runs = await _recent_runs(conn, schema, runs_limit)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        snapshot.error = f"PostgreSQL query failed: {type(exc).__name__}"
        log.warning("star schema query failed: %s", exc)
    finally:
        await conn.close()
    return snapshot


async def _recent_runs(conn: asyncpg.Connection, schema: str, limit: int) -> list[dict[str, Any]]:
    columns: Sequence[str] = [
        r["column_name"]
        for r in await conn.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = $1 AND table_name = 'etl_runs'",
            schema,
        )
    ]
    shown = [c for c in RUN_COLUMNS if c in columns]
    if not shown:
        return []
    order = next((c for c in ("requested_at", "started_at", "finished_at") if c in columns), None)
    sql = f"SELECT {', '.join(shown)} FROM {schema}.etl_runs"
    sql += f" ORDER BY {order} DESC NULLS LAST" if order else ""
    try:
        rows = await conn.fetch(sql + " LIMIT $1", limit)
    except NOT_THERE_YET:
        return []
    return [{c: _text(r[c]) for c in shown} for r in rows]
