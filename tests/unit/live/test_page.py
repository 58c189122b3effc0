"""Charts and page markup: every data point carries its exact value; empty data says so."""

from __future__ import annotations

import re
from datetime import date, datetime

from live.charts import EMPTY, bar_chart, column_chart
from live.models import DayViews, LiveSnapshot, StarTop, StarViews, TopItem
from live.page import filter_form, render_page, star_section_html
from live.star import DataRange, Dimension, StarFilter
from live.star_api import StarRequest, StarSection

POINT = re.compile(r'<rect class="point" data-label="([^"]*)" data-value="(\d+)"')


def test_column_chart_has_one_point_per_window_with_exact_values() -> None:
    svg = column_chart("c", "Views", [("2026-11-27T10:00:00Z", 3), ("2026-11-27T10:01:00Z", 0), ("2026-11-27T10:02:00Z", 12)])
    assert POINT.findall(svg) == [("2026-11-27T10:00:00Z", "3"), ("2026-11-27T10:01:00Z", "0"), ("2026-11-27T10:02:00Z", "12")]


def test_bar_chart_escapes_labels() -> None:
    svg = bar_chart("b", "Top", [('<script>"x"', 5)])
    assert "<script>" not in svg
    assert POINT.findall(svg) == [("&lt;script&gt;&quot;x&quot;", "5")]


def test_empty_charts_say_no_data_yet() -> None:
    assert EMPTY in column_chart("c", "Views", [])
    assert EMPTY in column_chart("c", "Views", [("a", 0)])
    assert EMPTY in bar_chart("b", "Top", [])


LIVE = LiveSnapshot.model_validate(
    {
        "until": "2026-11-27T10:03:00Z",
        "window_s": 60,
        "retention_s": 7200,
        "events_seen": 0,
        "views_counted": 0,
        "views_redelivered": 0,
        "views_per_minute": [{"window_start": "2026-11-27T10:02:00Z", "views": 0}],
        "views_per_hour": [{"window_start": "2026-11-27T10:00:00Z", "views": 0}],
        "top": [{"span_minutes": 5, "window_start": "2026-11-27T09:58:00Z", "window_end": "2026-11-27T10:03:00Z", "products": []}],
    }
)
KEYED = re.compile(r'<rect class="point" data-label="([^"]*)" data-key="([^"]*)" data-value="(\d+)"')


def test_page_renders_with_an_empty_star_schema() -> None:
    star = StarSection(None, {}, None, [], error="no POSTGRES_DSN configured")
    html = render_page(LIVE, star, refresh_s=5, star_refresh_s=60)
    assert html[: html.index("<script>")].count(EMPTY) == 8  # live minutes and hours, top-5, star days and four breakdowns
    assert '<p class="empty" id="etl-runs">no data yet</p>' in html
    assert '<p class="muted error" id="star-range">star schema: no POSTGRES_DSN configured</p>' in html
    assert '<body data-live-every="5" data-star-every="60">' in html
    assert "every(Number(body.dataset.liveEvery), '/api/live', 'data-refreshes'" in html
    assert "every(Number(body.dataset.starEvery), '/partials/star', 'data-star-refreshes'" in html
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "")  # nothing loaded from elsewhere
    assert "https://" not in html and "src=" not in html
    unreadable = star_section_html(StarSection(None, {}, None, None))
    assert '<p class="muted" id="etl-runs">etl_runs is not readable by the page\'s database role</p>' in unreadable


def test_star_section_names_products_next_to_their_ids_and_keeps_the_filters() -> None:
    data = DataRange(date(2026, 11, 1), date(2026, 11, 22), ["France", 'Côte "d\'Ivoire"'], ["desktop"], datetime(2026, 11, 23, 2, 5, 9))
    flt = StarFilter(date(2026, 11, 20), date(2026, 11, 22), 'Côte "d\'Ivoire"', None)
    req = StarRequest(flt, data, 'Côte "d\'Ivoire"', None)
    echo = req.echo()
    top: dict[Dimension, StarTop] = {
        "product": StarTop(
            dimension="product",
            items=[TopItem(key="p1", name="Glamira Ring Viktor", views=7), TopItem(key="p2", name="p2", views=3)],
            **echo,
        ),
        "device": StarTop(dimension="device", items=[TopItem(key="desktop", name="desktop", views=10)], **echo),
    }
    views = StarViews(points=[DayViews(day=date(2026, 11, 20), views=4), DayViews(day=date(2026, 11, 21), views=6)], **echo)
    html = star_section_html(StarSection(req, top, views, []))
    products = html[html.index('id="star-products"') : html.index('id="star-countries"')]
    assert KEYED.findall(products) == [("Glamira Ring Viktor (p1)", "p1", "7"), ("p2", "p2", "3")]
    days = html[html.index('id="star-days"') : html.index('id="star-products"')]
    assert POINT.findall(days) == [("2026-11-20", "4"), ("2026-11-21", "6")]
    assert 'data-from="2026-11-20" data-to="2026-11-22">2026-11-20 to 2026-11-22, country Côte &quot;d&#x27;Ivoire&quot;; ' in html
    assert "facts from 2026-11-01 to 2026-11-22, last loaded 2026-11-23 02:05 UTC</p>" in html
    form = filter_form(StarSection(req, top, views, []))
    assert '<option value="Côte &quot;d&#x27;Ivoire&quot;" selected>' in form
    assert '<input type="date" name="from" value="2026-11-20" min="2026-11-01" max="2026-11-22">' in form


def test_a_page_whose_counters_are_starting_still_shows_the_star_half() -> None:
    starting = "live counters not available yet: starting: <topics>"
    html = render_page(starting, StarSection(None, {}, None, []), refresh_s=5, star_refresh_s=60)
    assert '<section id="live"><p class="empty">live counters not available yet: starting: &lt;topics&gt;</p></section>' in html
    assert '<section id="star-body">' in html
