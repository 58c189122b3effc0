"""Incremental: events for an old and a new date → only those dates' facts change, every
surrogate key is kept, and the run reads only the new events (plus the touched dates' events
for the recompute)."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, date, datetime

from tests.integration.etl.helpers import expected_star, make_events
from tests.integration.etl.test_star_schema import assert_star_equals, insert, run_ok, star_rows


async def test_incremental_run_replaces_only_touched_dates_and_keeps_keys(make_service, mongo_collection, pg, unique_name) -> None:
    rng = random.Random(11)
    d1, d2, d3 = date(2020, 6, 1), date(2020, 6, 2), date(2020, 6, 3)
    batch1 = make_events(rng, 250, [d1, d2], datetime.now(UTC))
    insert(mongo_collection, batch1)
    schema = unique_name.lower()
    svc = make_service(schema)
    await asyncio.sleep(1.2)
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
    n_new_read = sum(1 for d in batch2 if d.doc["collection"] == "view_product_detail")
    assert rec["events_new"] == n_new_read  # only the new events are in the window
    all_docs = batch1 + batch2
    assert rec["events_read"] == sum(1 for d in all_docs if d.doc["collection"] == "view_product_detail" and d.event_date in (d1, d3))
    assert run2["touched_dates"] == [d1.isoformat(), d3.isoformat()]
    assert run2["window_low"] == run1["window_high"]

    # d2's facts are untouched: same rows, same keys, still written by run1
    def facts_of(rows, day):
        return [tuple(r.values()) for r in rows["facts"] if r["date"] == day]

    assert facts_of(after, d2) == facts_of(before, d2) and facts_of(before, d2)
    assert {r["batch_id"] for r in after["facts"] if r["date"] in (d1, d3)} == {run2["run_id"]}
    # surrogate keys of every existing member are unchanged; new members get keys after the max
    for table in ("products", "stores", "referrers", "devices"):
        old = {tuple(r.values())[1]: r[0] for r in before[table]}
        new = {tuple(r.values())[1]: r[0] for r in after[table]}
        assert {k: new[k] for k in old} == old, table
        added = sorted(k for k in new if k not in old)
        assert [new[k] for k in added] == list(range(max(old.values()) + 1, max(old.values()) + 1 + len(added))), table
