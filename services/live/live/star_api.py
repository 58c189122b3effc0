"""``/api/star/*``: the star schema's numbers for a date range and filters (what the page's star
section draws), and the request parameters' validation shared by the API and the page.

Parameters (all optional): ``from``/``to`` (``YYYY-MM-DD``, both included), ``country`` (a
country label, see :mod:`live.star`), ``device`` (a device type). Without ``from`` and ``to`` the
range is the last ``LIVE_STAR_DAYS`` days up to the last date that has facts (the data, not the
wall clock, anchors it: an analyst opening the page after a backfill of June 2020 sees June
2020). With one end only, the other is that many days away. An empty value is "not set" (what a
cleared form field sends). Invalid input (not a date, ``from`` after ``to``, a range longer than
:data:`MAX_RANGE_DAYS`, a label longer than 255 characters, an unknown dimension) is 422, never 500.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, HTTPException, Query

from live.models import DayViews, StarRange, StarRuns, StarTop, StarViews, TopItem
from live.star import DIMENSIONS, DataRange, Dimension, StarFilter, StarReader, StarUnavailable
from shared.errors import PipelineError

MAX_RANGE_DAYS: Final = 366
MAX_LABEL: Final = 255

FromParam = Annotated[str | None, Query(alias="from", description="first day, YYYY-MM-DD (included)", max_length=32)]
ToParam = Annotated[str | None, Query(alias="to", description="last day, YYYY-MM-DD (included)", max_length=32)]
LabelParam = Annotated[str | None, Query(max_length=MAX_LABEL)]


class RangeError(PipelineError, ValueError):
    """A date range or filter the API answers with 422 (not retriable: the request is wrong)."""


def parse_day(name: str, text: str | None) -> date | None:
    if text is None or not text.strip():
        return None
    try:
        return date.fromisoformat(text.strip())
    except ValueError as exc:
        raise RangeError(f"{name}: not a date (YYYY-MM-DD): {text!r}") from exc


def resolve_range(date_from: date | None, date_to: date | None, last_with_data: date | None, days: int) -> tuple[date, date] | None:
    """The range a request means; None when nothing is asked and there is no data yet."""
    if date_from is None and date_to is None:
        if last_with_data is None:
            return None
        date_to = last_with_data
    try:
        if date_from is None:
            assert date_to is not None
            date_from = date_to - timedelta(days=days - 1)
        elif date_to is None:
            date_to = date_from + timedelta(days=days - 1)
    except OverflowError as exc:
        raise RangeError("the range leaves the calendar (years 1-9999)") from exc
    if date_from > date_to:
        raise RangeError(f"from ({date_from}) is after to ({date_to})")
    if (date_to - date_from).days + 1 > MAX_RANGE_DAYS:
        raise RangeError(f"at most {MAX_RANGE_DAYS} days per request")
    return date_from, date_to


@dataclass(frozen=True)
class StarRequest:
    """The validated parameters: a filter (None: no data yet) and the data range it came from."""

    filter: StarFilter | None
    data: DataRange
    country: str | None
    device: str | None

    def echo(self) -> dict[str, Any]:
        f = self.filter
        return {
            "date_from": f.date_from if f else None,
            "date_to": f.date_to if f else None,
            "country": self.country,
            "device": self.device,
        }


async def star_request(
    star: StarReader, days: int, date_from: str | None, date_to: str | None, country: str | None, device: str | None
) -> StarRequest:
    """Validates the parameters (RangeError) and fills in the default range (StarUnavailable)."""
    lo, hi = parse_day("from", date_from), parse_day("to", date_to)
    if "\x00" in (country or "") + (device or ""):
        raise RangeError("country/device: NUL is not a character of any label")
    country = country.strip() if country and country.strip() else None
    device = device.strip() if device and device.strip() else None
    if lo is not None and hi is not None:
        resolve_range(lo, hi, None, days)  # invalid input is 422 before any query
    data = await star.data_range()
    span = resolve_range(lo, hi, data.last, days)
    flt = StarFilter(span[0], span[1], country, device) if span else None
    return StarRequest(flt, data, country, device)


def star_router(star: StarReader, *, days: int, runs_limit: int) -> APIRouter:
    router = APIRouter(prefix="/api/star", tags=["star schema"])

    async def request(date_from: str | None, date_to: str | None, country: str | None, device: str | None) -> StarRequest:
        try:
            return await star_request(star, days, date_from, date_to, country, device)
        except RangeError as exc:
            raise HTTPException(422, str(exc)) from exc
        except StarUnavailable as exc:
            raise HTTPException(503, str(exc)) from exc

    @router.get("/range", response_model=StarRange, summary="Dates with data, the default range, the filters' values")
    async def star_range() -> StarRange:
        try:
            data = await star.data_range()
        except StarUnavailable as exc:
            raise HTTPException(503, str(exc)) from exc
        default = data.default_range(days)
        return StarRange(
            first=data.first,
            last=data.last,
            loaded_at=data.loaded_at,
            default_days=days,
            default_from=default[0] if default else None,
            default_to=default[1] if default else None,
            countries=data.countries,
            devices=data.devices,
        )

    @router.get("/top", response_model=StarTop, summary="Top products, countries, referrer media or device types by views")
    async def star_top(
        dimension: Dimension = "product",
        date_from: FromParam = None,
        date_to: ToParam = None,
        country: LabelParam = None,
        device: LabelParam = None,
        n: Annotated[int, Query(ge=1, le=100)] = 10,
    ) -> StarTop:
        req = await request(date_from, date_to, country, device)
        items: list[TopItem] = []
        if req.filter is not None:
            try:
                items = [TopItem(key=k, name=name, views=v) for k, name, v in await star.top(dimension, req.filter, n)]
            except StarUnavailable as exc:
                raise HTTPException(503, str(exc)) from exc
        return StarTop(dimension=dimension, items=items, **req.echo())

    @router.get("/views", response_model=StarViews, summary="Views per day over the range (days without views: 0)")
    async def star_views(
        by: Annotated[Literal["day"], Query(description="day only: the fact table's grain; views per hour: /api/live")] = "day",
        date_from: FromParam = None,
        date_to: ToParam = None,
        country: LabelParam = None,
        device: LabelParam = None,
    ) -> StarViews:
        req = await request(date_from, date_to, country, device)
        points: list[DayViews] = []
        if req.filter is not None:
            try:
                points = [DayViews(day=d, views=v) for d, v in await star.views_per_day(req.filter)]
            except StarUnavailable as exc:
                raise HTTPException(503, str(exc)) from exc
        return StarViews(by=by, points=points, **req.echo())

    @router.get("/runs", response_model=StarRuns, summary="Recent ETL runs, newest first")
    async def star_runs() -> StarRuns:
        try:
            runs = await star.recent_runs(runs_limit)
            return StarRuns(runs=runs or [], readable=runs is not None)
        except StarUnavailable as exc:
            raise HTTPException(503, str(exc)) from exc

    assert set(DIMENSIONS) == {"product", "country", "medium", "device"}
    return router


@dataclass
class StarSection:
    """Everything the page's star section draws, in the API's own models (so page = API)."""

    request: StarRequest | None
    top: dict[Dimension, StarTop]
    views: StarViews | None
    runs: list[dict[str, Any]] | None  # None: etl_runs not readable by the page's role
    error: str | None = None


async def star_section(
    star: StarReader,
    *,
    days: int,
    runs_limit: int,
    n: int,
    date_from: str | None,
    date_to: str | None,
    country: str | None,
    device: str | None,
) -> StarSection:
    """The star section's data; raises RangeError for invalid parameters, reports an unreachable
    database as ``error`` (the page still shows its live half)."""
    try:
        req = await star_request(star, days, date_from, date_to, country, device)
        top: dict[Dimension, StarTop] = {}
        for dimension in DIMENSIONS:
            rows = await star.top(dimension, req.filter, n) if req.filter else []
            top[dimension] = StarTop(dimension=dimension, items=[TopItem(key=k, name=nm, views=v) for k, nm, v in rows], **req.echo())
        days_rows = await star.views_per_day(req.filter) if req.filter else []
        views = StarViews(points=[DayViews(day=d, views=v) for d, v in days_rows], **req.echo())
        return StarSection(req, top, views, await star.recent_runs(runs_limit))
    except StarUnavailable as exc:
        return StarSection(None, {}, None, [], error=str(exc))
