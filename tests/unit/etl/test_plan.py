"""plan_run: what each mode reads and how it loads, for any watermark and window; the second
buckets cover exactly the window; a micro-batch and a one-off incremental run plan alike."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from etl_api.extract import SECONDS_PER_TASK, keep_document, parse_utc, plan_second_tasks, seconds_between, task_queries
from etl_api.plan import hour_closed, plan_run
from hypothesis import given
from hypothesis import strategies as st

TYPES = ("view_product_detail",)
T0 = datetime(2026, 12, 6, 10, 0, tzinfo=UTC)


def plan(mode: str, **kw):  # type: ignore[no-untyped-def]
    return plan_run(mode, types=TYPES, read_parts=16, **kw)


def test_first_incremental_run_is_a_full_read_that_replaces_every_fact() -> None:
    p = plan("incremental", high=T0, watermark=None)
    assert (p.low, p.high, p.replace_all, p.merge, p.moves_watermark, p.fine) == (None, T0, True, False, True, False)
    assert [t.filter for t in p.tasks] == [{"part": part, "collection": "view_product_detail"} for part in range(16)]
    assert p.ledger_covers_from is None


def test_incremental_reads_the_window_by_hour_and_merges() -> None:
    low = T0 - timedelta(minutes=90)
    p = plan("incremental", high=T0, watermark=low, heal=True)
    assert (p.low, p.high, p.replace_all, p.merge, p.heal_check, p.fine) == (low, T0, False, True, True, False)
    assert sorted({t.filter["ingest_hour"] for t in p.tasks}) == ["2026-12-06T08", "2026-12-06T09", "2026-12-06T10"]
    assert p.ledger_covers_from == low


def test_a_short_window_is_read_second_by_second_when_asked() -> None:
    low = T0 - timedelta(seconds=4.5)
    p = plan("continuous", high=T0, watermark=low, fine_max_seconds=600)
    assert p.fine and p.merge and not p.replace_all
    assert [t.filter for t in p.tasks] == [{"collection": "view_product_detail"}]
    assert [q["ingest_second"] for q in task_queries(p.tasks[0])] == [f"2026-12-06T09:59:{s}" for s in (55, 56, 57, 58, 59)] + [
        "2026-12-06T10:00:00"
    ]
    assert all(t.ingested_after == low.isoformat() and t.ingested_until == T0.isoformat() for t in p.tasks)
    # a window longer than the bound: by hour, like a one-off run
    assert not plan("continuous", high=T0, watermark=T0 - timedelta(seconds=601), fine_max_seconds=600).fine
    assert not plan("incremental", high=T0, watermark=low).fine  # one-off runs: hours unless asked


def test_nothing_visible_past_the_watermark_is_an_empty_plan_that_keeps_it() -> None:
    p = plan("continuous", high=T0 - timedelta(seconds=1), watermark=T0, fine_max_seconds=600)
    assert p.tasks == [] and p.low == p.high == T0


def test_range_never_reads_below_the_watermark_and_leaves_it() -> None:
    p = plan("range", high=T0 - timedelta(minutes=1), watermark=T0, date_from=date(2026, 12, 1), date_to=date(2026, 12, 3))
    assert p.high == T0 and not p.moves_watermark and not p.merge and not p.replace_all
    assert p.range_dates == [date(2026, 12, 1), date(2026, 12, 2), date(2026, 12, 3)]
    assert p.ledger_covers_from == T0
    with pytest.raises(ValueError, match="date_from <= date_to"):
        plan("range", high=T0, watermark=None, date_from=date(2026, 12, 3), date_to=date(2026, 12, 1))
    with pytest.raises(ValueError, match="unknown run mode"):
        plan("sometimes", high=T0, watermark=None)


def test_covered_dates_past_the_low_travel_with_the_second_tasks() -> None:
    low = T0 - timedelta(seconds=3)
    covered = {date(2026, 12, 5): T0 - timedelta(seconds=1), date(2026, 12, 4): T0 - timedelta(hours=1)}
    p = plan("continuous", high=T0, watermark=low, covered=covered, fine_max_seconds=60)
    assert all(t.covered_until == {"2026-12-05": (T0 - timedelta(seconds=1)).isoformat()} for t in p.tasks)


def test_hour_closed() -> None:
    assert hour_closed(None, T0)
    assert hour_closed(T0 - timedelta(seconds=1), T0)
    assert not hour_closed(T0, T0 + timedelta(minutes=59))


@given(
    low_ms=st.integers(min_value=0, max_value=10 * 60 * 1000),
    length_ms=st.integers(min_value=1, max_value=30 * 1000),
    doc_ms=st.integers(min_value=-5000, max_value=11 * 60 * 1000),
)
def test_second_tasks_select_exactly_the_documents_of_the_window(low_ms: int, length_ms: int, doc_ms: int) -> None:
    """A document is read by exactly one task iff low < ingested_at <= high: its ingest_second
    is one of the tasks' and the task's client-side window keeps it (computed independently)."""
    low = T0 + timedelta(milliseconds=low_ms)
    high = low + timedelta(milliseconds=length_ms)
    at = T0 + timedelta(milliseconds=doc_ms)
    text = f"{at:%Y-%m-%dT%H:%M:%S}.{at.microsecond // 1000:03d}Z"
    doc = {"ingested_at": text, "ingest_second": text[:19], "collection": TYPES[0]}
    tasks = plan_second_tasks(low, high, TYPES)
    readers = [
        (t, q)
        for t in tasks
        for q in task_queries(t)
        if all(doc.get(k) == v for k, v in q.items())
        and keep_document(doc, t, parse_utc(t.ingested_after or ""), parse_utc(t.ingested_until or ""))
    ]
    assert len(readers) == (1 if low < at <= high else 0)
    queried = [q["ingest_second"] for t in tasks for q in task_queries(t)]
    assert queried == seconds_between(low, high)
    assert all(len(t.seconds) <= SECONDS_PER_TASK for t in tasks)
