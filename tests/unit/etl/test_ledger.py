"""The hour ledger's comparison (pure): statuses, per-date differences, which dates a run heals."""

from __future__ import annotations

from datetime import UTC, date, datetime

from etl_api import ledger
from hypothesis import given
from hypothesis import strategies as st

WM = datetime(2026, 12, 3, 10, 30, tzinfo=UTC)
HOURS = ["2026-12-03T08", "2026-12-03T09", "2026-12-03T10", "2026-12-03T11"]


def statuses(checks: list[ledger.HourCheck]) -> dict[str, str]:
    return {c.ingest_hour: c.status for c in checks}


def test_statuses_and_differences() -> None:
    raw = {"2026-12-03T08": {"2026-12-02": 5, "2026-12-03": 7}, "2026-12-03T09": {"2026-12-03": 4}, "2026-12-03T10": {"2026-12-03": 2}}
    booked = {
        "2026-12-03T08": {"2026-12-02": (5, 4), "2026-12-03": (7, 7)},
        "2026-12-03T09": {"2026-12-03": (3, 3)},
        "2026-12-03T10": {"2026-12-03": (3, 3)},
    }
    checks = ledger.compare(HOURS, raw, booked, WM, ledger.BEGINNING)
    assert statuses(checks) == {"2026-12-03T08": "ok", "2026-12-03T09": "late", "2026-12-03T10": "missing", "2026-12-03T11": "pending"}
    by = {c.ingest_hour: c.as_dict() for c in checks}
    assert by["2026-12-03T08"] == {
        "ingest_hour": "2026-12-03T08",
        "status": "ok",
        "mongodb": 12,
        "accounted": 12,
        "valid": 11,
        "skipped": 1,
        "difference": 0,
        "dates": [],
    }
    assert by["2026-12-03T09"]["dates"] == [{"event_date": "2026-12-03", "mongodb": 4, "accounted": 3, "difference": 1}]
    assert by["2026-12-03T10"]["difference"] == -1
    assert by["2026-12-03T11"]["mongodb"] is None and by["2026-12-03T11"]["difference"] is None
    assert ledger.late_dates(checks) == [date(2026, 12, 3)]


def test_hours_before_the_ledger_covers_are_unledgered_and_no_watermark_is_pending() -> None:
    checks = ledger.compare(HOURS, {"2026-12-03T08": {"x": 1}}, {}, WM, datetime(2026, 12, 3, 9, 15, tzinfo=UTC))
    # 09:00 starts before 09:15: that hour was partly read before the ledger existed
    assert statuses(checks) == {
        "2026-12-03T08": "unledgered",
        "2026-12-03T09": "unledgered",
        "2026-12-03T10": "ok",
        "2026-12-03T11": "pending",
    }
    assert {c.status for c in ledger.compare(HOURS, {}, {}, None, None)} == {"pending"}


def test_a_date_that_is_not_a_date_is_reported_but_not_healed() -> None:
    checks = ledger.compare(["2026-12-03T08"], {"2026-12-03T08": {"": 2, "2026-12-01": 1}}, {}, WM, ledger.BEGINNING)
    assert checks[0].status == "late" and [d["event_date"] for d in checks[0].dates] == ["", "2026-12-01"]
    assert ledger.late_dates(checks) == [date(2026, 12, 1)]


counts = st.dictionaries(st.sampled_from(["2026-12-01", "2026-12-02", "2026-12-03", ""]), st.integers(0, 50), max_size=4)


@given(raw=counts, booked=counts)
def test_status_follows_the_counts_per_date(raw: dict[str, int], booked: dict[str, int]) -> None:
    checks = ledger.compare(
        ["2026-12-03T08"], {"2026-12-03T08": raw}, {"2026-12-03T08": {k: (v, v) for k, v in booked.items()}}, WM, ledger.BEGINNING
    )
    keys = set(raw) | set(booked)
    more = {k for k in keys if raw.get(k, 0) > booked.get(k, 0)}
    fewer = {k for k in keys if raw.get(k, 0) < booked.get(k, 0)}
    expected = "missing" if fewer else "late" if more else "ok"
    (check,) = checks
    assert check.status == expected
    assert {d["event_date"]: d["difference"] for d in check.dates} == {k: raw.get(k, 0) - booked.get(k, 0) for k in more | fewer}
    assert ledger.late_dates(checks) == sorted(date.fromisoformat(k) for k in more if k)
