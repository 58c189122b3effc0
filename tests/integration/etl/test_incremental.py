"""Incremental: events for an old and a new date → only those dates' facts change, every
surrogate key is kept, and the run reads ONLY the new events, merging their aggregates into the
touched dates' facts in PostgreSQL; the result is byte-identical (table checksums) to a rebuild
from all events. A range run past the watermark followed by an incremental run counts nothing
twice; a date whose rows predate ``view_time_sum_ms`` is recomputed instead of merged."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, date, datetime

from etl_api.schema import table_checksums

from tests.integration.etl.helpers import expected_star, make_events
from tests.integration.etl.test_star_schema import assert_star_equals, insert, run_ok, star_rows


def n_read(docs) -> int:
    """Product-view-type documents: what a run reads of them."""
    return sum(1 for d in docs if d.doc["collection"] == "view_product_detail")


async def rebuild_checksums(clean) -> None:
    """A full rebuild in the clean schema (keys of batch1 assigned by its own first full run)."""
    async with clean.client() as client:
        await run_ok(client, {"mode": "full"})


async def test_incremental_run_replaces_only_touched_dates_and_keeps_keys(make_service, mongo_collection, pg, unique_name) -> None:
    rng = random.Random(11)
    d1, d2, d3 = date(2020, 6, 1), date(2020, 6, 2), date(2020, 6, 3)
    batch1 = make_events(rng, 250, [d1, d2], datetime.now(UTC))
    insert(mongo_collection, batch1)
    schema, clean_schema = unique_name.lower(), f"{unique_name.lower()}_clean"
    svc = make_service(schema)
    await asyncio.sleep(1.2)
    # the reference schema: one full run over batch1 now (its members get the same keys as here),
    # one full rebuild over everything at the end
    clean = make_service(clean_schema)
    async with clean.client() as client:
        await run_ok(client, {"mode": "full"})
    async with svc.client() as client:
        run1 = await run_ok(client)
        before = await star_rows(pg, schema)
        assert_star_equals(before, expected_star(batch1), {run1["run_id"]})

        # new events: an old date (d1) and a new date (d3), stamped after run1's window
        batch2 = make_events(random.Random(12), 60, [d1, d3], datetime.now(UTC), devices=40)
        insert(mongo_collection, batch2)
        await asyncio.sleep(1.2)
        run2 = await run_ok(client)
        after = await star_rows(pg, schema)

    # every event is in the star schema exactly once
    assert_star_equals(after, expected_star(batch1 + batch2), {run1["run_id"], run2["run_id"]})
    rec = run2["reconciliation"]
    # only the new events are read: none of the touched dates' old events
    assert rec["events_new"] == rec["events_read"] == n_read(batch2)
    assert rec["events_read"] == rec["valid_views"] + rec["skipped_total"]
    assert run2["touched_dates"] == [d1.isoformat(), d3.isoformat()]
    assert rec["merged_dates"] == [d1.isoformat(), d3.isoformat()] and rec["recomputed_dates"] == []

    def grain(r):
        return (r["date"], r["product_id"] or None, r["store_id"] or None, r["referrer_url"] or None, r["device_id"] or None)

    touched = set(expected_star(batch2)["facts"])  # the grains batch2's views fall in, computed in plain Python
    assert rec["view_count_before"] == sum(r["view_count"] for r in before["facts"] if grain(r) in touched)
    assert rec["view_count_written"] - rec["view_count_before"] == rec["valid_views"] == expected_star(batch2)["valid"]
    assert run2["window_low"] == run1["window_high"]

    # d2's facts are untouched: same rows, same keys, still written by run1
    def facts_of(rows, day):
        return [tuple(r.values()) for r in rows["facts"] if r["date"] == day]

    assert facts_of(after, d2) == facts_of(before, d2) and facts_of(before, d2)
    # a merged date is written grain by grain: batch2's grains by run2, d1's other rows as run1 left them
    assert {grain(r) for r in after["facts"] if r["batch_id"] == run2["run_id"]} == touched
    untouched = [tuple(r.values()) for r in before["facts"] if grain(r) not in touched]
    assert [tuple(r.values()) for r in after["facts"] if grain(r) not in touched] == untouched and untouched
    # a stored grain keeps its fact_key; a new grain of a merged date is numbered after the date's highest key
    old_keys = {grain(r): r["fact_key"] for r in before["facts"]}
    assert all(r["fact_key"] == old_keys[grain(r)] for r in after["facts"] if grain(r) in old_keys)
    for day in (d1, d3):
        top = max([r["fact_key"] for r in before["facts"] if r["date"] == day], default=int(day.strftime("%Y%m%d")) * 10**9)
        new_rows = sorted((r for r in after["facts"] if r["date"] == day and grain(r) not in old_keys), key=lambda r: r["fact_key"])
        assert [r["fact_key"] for r in new_rows] == list(range(top + 1, top + 1 + len(new_rows))), day
    # surrogate keys of every existing member are unchanged; new members get keys after the max
    for table in ("products", "stores", "referrers", "devices"):
        old = {tuple(r.values())[1]: r[0] for r in before[table]}
        new = {tuple(r.values())[1]: r[0] for r in after[table]}
        assert {k: new[k] for k in old} == old, table
        added = sorted(k for k in new if k not in old)
        assert [new[k] for k in added] == list(range(max(old.values()) + 1, max(old.values()) + 1 + len(added))), table

    # byte-identical to a rebuild from all events (every column but the audit ones, dimension keys
    # included; fact rows by grain: their keys are surrogate, numbered by the history of merges)
    await rebuild_checksums(clean)
    assert await table_checksums(pg, schema, fact_keys=False) == await table_checksums(pg, clean_schema, fact_keys=False)


async def test_range_run_then_incremental_counts_nothing_twice(make_service, mongo_collection, pg, unique_name) -> None:
    d1, d2, d3 = date(2020, 7, 1), date(2020, 7, 2), date(2020, 7, 3)
    batch1 = make_events(random.Random(31), 200, [d1, d2], datetime.now(UTC))
    insert(mongo_collection, batch1)
    schema, clean_schema = unique_name.lower(), f"{unique_name.lower()}_clean"
    svc = make_service(schema)
    await asyncio.sleep(1.2)
    clean = make_service(clean_schema)
    async with clean.client() as client:
        await run_ok(client, {"mode": "full"})
    async with svc.client() as client:
        run1 = await run_ok(client)

        # new events for d1 arrive, then a range run rebuilds d1 (and counts them) without moving the watermark
        batch2 = make_events(random.Random(32), 50, [d1], datetime.now(UTC), devices=30)
        insert(mongo_collection, batch2)
        await asyncio.sleep(1.2)
        run2 = await run_ok(client, {"mode": "range", "date_from": d1.isoformat(), "date_to": d1.isoformat()})
        assert_star_equals(await star_rows(pg, schema), expected_star(batch1 + batch2), {run1["run_id"], run2["run_id"]})
        covered = await pg.fetch(f'SELECT event_date, ingested_high FROM "{schema}".etl_date_loads ORDER BY event_date')
        assert [(r["event_date"], r["ingested_high"]) for r in covered] == [
            (d1, datetime.fromisoformat(run2["window_high"])),
            (d2, datetime.fromisoformat(run1["window_high"])),
        ]

        # more events for d1 and a new date: the incremental window holds batch2 (already counted
        # by the range run) and batch3; only batch3 is read
        batch3 = make_events(random.Random(33), 50, [d1, d3], datetime.now(UTC), devices=35)
        insert(mongo_collection, batch3)
        await asyncio.sleep(1.2)
        run3 = await run_ok(client)
        assert run3["window_low"] == run1["window_high"]
        rec = run3["reconciliation"]
        assert rec["events_new"] == rec["events_read"] == n_read(batch3)
        assert run3["touched_dates"] == [d1.isoformat(), d3.isoformat()] == rec["merged_dates"]
        assert_star_equals(await star_rows(pg, schema), expected_star(batch1 + batch2 + batch3), {r["run_id"] for r in (run1, run2, run3)})

        # a date whose rows were written before view_time_sum_ms existed: recomputed from all its events, not merged
        await pg.execute(f'UPDATE "{schema}".fact_product_views SET view_time_sum_ms = NULL WHERE date_key = 20200702')
        batch4 = make_events(random.Random(34), 40, [d2, d3], datetime.now(UTC))
        insert(mongo_collection, batch4)
        await asyncio.sleep(1.2)
        run4 = await run_ok(client)
        rec = run4["reconciliation"]
        assert rec["events_new"] == n_read(batch4)
        everything = batch1 + batch2 + batch3 + batch4
        d3_new, d2_all = [d for d in batch4 if d.event_date == d3], [d for d in everything if d.event_date == d2]
        assert rec["events_read"] == n_read(d3_new) + n_read(d2_all)
        assert rec["recomputed_dates"] == [d2.isoformat()] and rec["merged_dates"] == [d3.isoformat()]
        assert_star_equals(await star_rows(pg, schema), expected_star(everything), {r["run_id"] for r in (run1, run2, run3, run4)})

    await rebuild_checksums(clean)
    assert await table_checksums(pg, schema, fact_keys=False) == await table_checksums(pg, clean_schema, fact_keys=False)
