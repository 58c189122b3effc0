"""Response models of the JSON API (they are what ``/openapi.json`` documents, and what the page renders)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from pydantic import BaseModel, Field

from live.star import Dimension


class WindowViews(BaseModel):
    window_start: str = Field(description="ISO-8601 UTC start of the event-time window")
    views: int


class ProductViews(BaseModel):
    product_id: str
    name: str | None = Field(None, description="dim_product.product_name; null until an ETL run has seen the product")
    views: int


class LiveTop(BaseModel):
    span_minutes: int
    window_start: str
    window_end: str
    products: list[ProductViews]


class LiveSnapshot(BaseModel):
    """The live counters: event-time windows of ``window_s`` seconds up to ``until``."""

    until: str = Field(description="end (exclusive) of the last window shown")
    window_s: int
    retention_s: int = Field(description="windows older than this (by wall clock) are dropped: their events are not counted live")
    events_seen: int = Field(description="events this replica consumed since it started")
    views_counted: int = Field(description="product views this replica counted since it started")
    views_redelivered: int
    views_per_minute: list[WindowViews]
    views_per_hour: list[WindowViews] = Field(description="whole UTC hours within the retention, windows summed")
    top: list[LiveTop]


class TopItem(BaseModel):
    key: str = Field(description="product_id for products, else the label itself")
    name: str = Field(description="product_name for products (the id when unnamed), else the label")
    views: int


class StarQueryEcho(BaseModel):
    """The range and filters a star answer is for (the default range filled in)."""

    date_from: date | None = Field(description="first day, included; null: no data yet")
    date_to: date | None = Field(description="last day, included")
    country: str | None
    device: str | None


class StarTop(StarQueryEcho):
    dimension: Dimension
    items: list[TopItem]


class DayViews(BaseModel):
    day: date
    views: int


class StarViews(StarQueryEcho):
    by: str = Field("day", description="the fact table's grain is a day; views per hour come from the live counters")
    points: list[DayViews]


class StarRange(BaseModel):
    first: date | None = Field(description="first date with facts (the unknown date excluded)")
    last: date | None = Field(description="last date with facts: the default range ends here, not at today")
    loaded_at: datetime | None = Field(description="processed_at of the newest fact row (UTC): when the ETL last wrote the star")
    default_days: int
    default_from: date | None
    default_to: date | None
    countries: list[str] = Field(description="country labels with facts, most viewed first (the country filter's values)")
    devices: list[str] = Field(description="device types with facts, most viewed first (the device filter's values)")


class StarRuns(BaseModel):
    runs: list[dict[str, Any]] = Field(description="recent ETL runs, newest first")
    readable: bool = Field(True, description="false: etl_runs exists but the page's database role may not read it")
