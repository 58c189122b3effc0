"""The star-schema reader: exact breakdowns for known rows; a missing schema, empty tables or an
unreachable database give an empty snapshot ("no data yet"), never an exception."""

from __future__ import annotations

import pytest
from live.star import read_star

from tests.integration.live.star_fixture import EXPECTED_BREAKDOWNS, EXPECTED_RUN_STATUSES, create_star, drop_schema

pytestmark = pytest.mark.timeout(60)

EMPTY = {name: [] for name in EXPECTED_BREAKDOWNS}


async def test_known_rows_give_exact_breakdowns_and_runs(postgres_dsn: str, unique_name: str) -> None:
    await create_star(postgres_dsn, unique_name)
    try:
        snapshot = await read_star(postgres_dsn, unique_name, runs_limit=10, timeout_s=5)
    finally:
        await drop_schema(postgres_dsn, unique_name)
    assert snapshot.error is None
    assert snapshot.breakdowns == EXPECTED_BREAKDOWNS
    assert [r["status"] for r in snapshot.etl_runs] == EXPECTED_RUN_STATUSES
    assert snapshot.etl_runs[1] == {
        "run_id": "00000000-0000-0000-0000-000000000002",
        "mode": "incremental",
        "status": "failed",
        "requested_at": "2026-11-22T11:00:00Z",
        "started_at": "2026-11-22T11:00:01Z",
        "finished_at": "2026-11-22T11:01:00Z",
        "error": "MongoDB unreachable",
    }


async def test_empty_tables_are_no_data(postgres_dsn: str, unique_name: str) -> None:
    await create_star(postgres_dsn, unique_name, rows=False)
    try:
        snapshot = await read_star(postgres_dsn, unique_name, runs_limit=10, timeout_s=5)
    finally:
        await drop_schema(postgres_dsn, unique_name)
    assert (snapshot.breakdowns, snapshot.etl_runs, snapshot.error) == (EMPTY, [], None)


async def test_a_missing_schema_is_no_data(postgres_dsn: str, unique_name: str) -> None:
    snapshot = await read_star(postgres_dsn, unique_name, runs_limit=10, timeout_s=5)
    assert (snapshot.breakdowns, snapshot.etl_runs, snapshot.error) == (EMPTY, [], None)


async def test_an_unreachable_database_is_reported_not_raised() -> None:
    snapshot = await read_star("postgresql://nobody:x@127.0.0.1:9/none", "public", runs_limit=10, timeout_s=2)
    assert snapshot.breakdowns == EMPTY and snapshot.etl_runs == []
    assert snapshot.error == "PostgreSQL unavailable: ConnectionRefusedError"
