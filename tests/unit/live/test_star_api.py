"""The star API's parameters without a database: the default range, the statements' shape, and
any input (Hypothesis) answered with 200 or 422, never a 500."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import date, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from live.app import LiveReader, create_app
from live.settings import LiveSettings
from live.star import DIMENSIONS, DataRange, Dimension, StarFilter, StarReader, range_sql, top_sql, views_per_day_sql
from live.star_api import MAX_RANGE_DAYS, RangeError, resolve_range

from shared.kafka import KafkaConnection
from shared.service import ServiceState

LAST = date(2026, 11, 22)


class FakeStar(StarReader):
    """Answers from memory and records the filters it was asked for."""

    def __init__(self, last: date | None = LAST) -> None:
        super().__init__(None, "public", timeout_s=1)
        self.last = last
        self.filters: list[StarFilter] = []

    async def data_range(self) -> DataRange:
        first = self.last - timedelta(days=30) if self.last else None
        return DataRange(first, self.last, ["France", "Germany"], ["desktop", "mobile"])

    async def top(self, dimension: Dimension, flt: StarFilter, n: int) -> list[tuple[str, str, int]]:
        self.filters.append(flt)
        return [("p1", "Ring", 5)][:n] if dimension == "product" else [("France", "France", 5)]

    async def views_per_day(self, flt: StarFilter) -> list[tuple[date, int]]:
        self.filters.append(flt)
        return [(flt.date_from, 5)]

    async def recent_runs(self, limit: int) -> list[dict[str, Any]]:
        return []

    async def product_names(self, product_ids: Sequence[str]) -> dict[str, str]:
        return {}


def client(star: StarReader) -> TestClient:
    s = LiveSettings(local_kafka=KafkaConnection(bootstrap_servers="127.0.0.1:1"))  # no Kafka: the star routes only
    return TestClient(create_app(s, ServiceState("live"), LiveReader(s), star=star))


def test_the_default_range_is_the_last_days_up_to_the_last_date_with_data() -> None:
    star = FakeStar()
    body = client(star).get("/api/star/top", params={"dimension": "product"}).json()
    assert body == {
        "date_from": "2026-11-16",
        "date_to": "2026-11-22",
        "country": None,
        "device": None,
        "dimension": "product",
        "items": [{"key": "p1", "name": "Ring", "views": 5}],
    }
    assert star.filters == [StarFilter(date(2026, 11, 16), LAST)]


def test_filters_reach_the_query_and_empty_values_mean_not_set() -> None:
    star = FakeStar()
    c = client(star)
    got = c.get("/api/star/views", params={"from": "2026-11-01", "to": "2026-11-03", "country": "France", "device": ""}).json()
    assert got == {
        "date_from": "2026-11-01",
        "date_to": "2026-11-03",
        "country": "France",
        "device": None,
        "by": "day",
        "points": [{"day": "2026-11-01", "views": 5}],
    }
    assert c.get("/api/star/views", params={"from": "2026-11-20"}).json()["date_to"] == "2026-11-26"
    assert c.get("/api/star/views", params={"to": "2026-11-03"}).json()["date_from"] == "2026-10-28"
    assert star.filters == [
        StarFilter(date(2026, 11, 1), date(2026, 11, 3), "France", None),
        StarFilter(date(2026, 11, 20), date(2026, 11, 26)),
        StarFilter(date(2026, 10, 28), date(2026, 11, 3)),
    ]


def test_no_data_yet_is_an_empty_answer_without_a_range() -> None:
    body = client(FakeStar(last=None)).get("/api/star/top").json()
    assert body == {"date_from": None, "date_to": None, "country": None, "device": None, "dimension": "product", "items": []}


@pytest.mark.parametrize(
    ("params", "detail"),
    [
        ({"from": "2026-11-05", "to": "2026-11-04"}, "from (2026-11-05) is after to (2026-11-04)"),
        ({"from": "2025-01-01", "to": "2026-01-02"}, "at most 366 days per request"),
        ({"from": "yesterday"}, "from: not a date (YYYY-MM-DD): 'yesterday'"),
        ({"to": "0001-01-02"}, "the range leaves the calendar (years 1-9999)"),
        ({"from": "9999-12-30"}, "the range leaves the calendar (years 1-9999)"),
        ({"country": "a\x00b"}, "country/device: NUL is not a character of any label"),
    ],
)
def test_invalid_ranges_are_422_with_the_reason(params: dict[str, str], detail: str) -> None:
    response = client(FakeStar()).get("/api/star/top", params=params)
    assert (response.status_code, response.json()) == (422, {"detail": detail})


def test_views_by_hour_is_refused_the_fact_grain_is_a_day() -> None:
    response = client(FakeStar()).get("/api/star/views", params={"by": "hour"})
    assert response.status_code == 422
    assert [(e["loc"], e["input"]) for e in response.json()["detail"]] == [(["query", "by"], "hour")]


def test_the_routes_are_in_the_openapi_document_with_their_models() -> None:
    doc = client(FakeStar()).get("/openapi.json").json()
    paths = doc["paths"]
    for path in ("/api/star/top", "/api/star/views", "/api/star/range", "/api/star/runs", "/api/live"):
        assert "200" in paths[path]["get"]["responses"], path
    schema = paths["/api/star/top"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/StarTop"}
    params = {p["name"] for p in paths["/api/star/top"]["get"]["parameters"]}
    assert params == {"dimension", "from", "to", "country", "device", "n"}
    assert doc["components"]["schemas"]["TopItem"]["required"] == ["key", "name", "views"]


def test_each_statement_takes_user_input_only_as_parameters() -> None:
    for dimension in DIMENSIONS:
        sql = top_sql("s1", dimension)
        assert sorted(set(re.findall(r"\$\d", sql))) == ["$1", "$2", "$3", "$4", "$5"]
        assert "s1.fact_product_views" in sql and "{" not in sql
    assert sorted(set(re.findall(r"\$\d", views_per_day_sql("s1")))) == ["$1", "$2", "$3", "$4"]
    assert "$" not in range_sql("s1")
    assert StarFilter(LAST, LAST, "", "").args() == (LAST, LAST, None, None)


DATES = st.dates(min_value=date(1, 1, 1), max_value=date(9999, 12, 31))
TEXT = st.one_of(st.none(), st.text(max_size=40), DATES.map(date.isoformat))


def oracle(lo: date | None, hi: date | None, last: date | None, days: int) -> tuple[date, date] | None | str:
    """What a request means, on day numbers (``"refused"`` for a 422)."""
    if lo is None and hi is None:
        if last is None:
            return None
        hi = last
    first, final = (lo.toordinal() if lo else None), (hi.toordinal() if hi else None)
    if first is None:
        assert final is not None
        first = final - days + 1
    elif final is None:
        final = first + days - 1
    if first < 1 or final > date.max.toordinal() or first > final or final - first + 1 > 366:
        return "refused"
    return date.fromordinal(first), date.fromordinal(final)


@settings(max_examples=500, deadline=None)
@given(lo=st.one_of(st.none(), DATES), hi=st.one_of(st.none(), DATES), last=st.one_of(st.none(), DATES), days=st.integers(1, 366))
def test_resolve_range_equals_day_arithmetic(lo: date | None, hi: date | None, last: date | None, days: int) -> None:
    try:
        got: tuple[date, date] | None | str = resolve_range(lo, hi, last, days)
    except RangeError:
        got = "refused"
    assert got == oracle(lo, hi, last, days)


@settings(max_examples=200, deadline=None)
@given(
    lo=TEXT,
    hi=TEXT,
    country=st.one_of(st.none(), st.text(max_size=300)),
    device=st.one_of(st.none(), st.text(max_size=20)),
    n=st.one_of(st.none(), st.text(max_size=6), st.integers(-5, 200).map(str)),
    dimension=st.one_of(st.none(), st.sampled_from([*DIMENSIONS, "referrer", ""])),
)
def test_any_input_is_answered_200_or_422_never_500(
    lo: str | None, hi: str | None, country: str | None, device: str | None, n: str | None, dimension: str | None
) -> None:
    params = {k: v for k, v in {"from": lo, "to": hi, "country": country, "device": device, "n": n, "dimension": dimension}.items()}
    params = {k: v for k, v in params.items() if v is not None}
    c = TEST_CLIENT
    for path in ("/api/star/top", "/api/star/views", "/partials/star"):
        response = c.get(path, params=params)
        assert response.status_code in (200, 422), (path, params, response.text)
        if response.status_code == 200 and path != "/partials/star":
            body = response.json()
            a, b = date.fromisoformat(body["date_from"]), date.fromisoformat(body["date_to"])
            assert a <= b and (b - a).days < MAX_RANGE_DAYS


TEST_CLIENT = client(FakeStar())
