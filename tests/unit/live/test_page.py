"""Charts and page markup: every data point carries its exact value; empty data says so."""

from __future__ import annotations

import re

from live.charts import EMPTY, bar_chart, column_chart
from live.page import render_page

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


def test_page_renders_with_an_empty_star_schema() -> None:
    live = {
        "until": "2026-11-27T10:03:00Z",
        "window_s": 60,
        "events_seen": 0,
        "views_counted": 0,
        "views_per_minute": [{"window_start": "2026-11-27T10:02:00Z", "views": 0}],
        "top": [{"span_minutes": 5, "products": []}],
    }
    star = {"breakdowns": {k: [] for k in ("views_per_day", "views_per_country", "views_per_referrer_medium", "views_per_device_type")}}
    html = render_page(live, star | {"etl_runs": [], "error": "no POSTGRES_DSN configured"}, refresh_s=5)
    assert html.count(EMPTY) == 6  # live minutes, top-5, four star plots
    assert '<p class="empty" id="etl-runs">no data yet</p>' in html
    assert "every=5*1000" in html
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "")  # nothing loaded from elsewhere
